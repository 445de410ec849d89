"""The anti-bandit search: LCB sampling, UCB abandoning on schedule, a real tiny search."""

import json
import math
import random

import pytest

from robustart.nas.search import AntiBandit, SearchConfig, derive_genotype, search, total_trials


def _rewards(op: str, t: int) -> float:
    # arms of different quality, with a little deterministic wobble
    base = {"a": 0.2, "b": 0.5, "c": 0.35, "d": 0.8, "e": 0.6}[op]
    return base + 0.05 * math.sin(t)


def test_sampling_favours_the_lowest_lower_confidence_bound():
    b = AntiBandit(1, ["a", "b", "c"])
    # untried arms come first, uniformly
    assert b.probabilities(0) == {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}
    b.update(["a"], 0.9)
    assert b.probabilities(0)["a"] == 0 and b.probabilities(0)["b"] == 0.5
    b.update(["b"], 0.2)
    b.update(["c"], 0.5)
    b.update(["c"], 0.5)
    p = b.probabilities(0)
    lcb = {o: b.m[0][o] - math.sqrt(2 * math.log(b.N) / b.n[0][o]) for o in "abc"}
    z = sum(math.exp(-v) for v in lcb.values())
    for o in "abc":  # p = softmax(-LCB)
        assert p[o] == pytest.approx(math.exp(-lcb[o]) / z)
    assert max(p, key=p.get) == min(lcb, key=lcb.get) == "b"


def test_performance_is_a_momentum_average_of_rewards():
    b = AntiBandit(1, ["a", "b"], lam=0.7)
    b.update(["a"], 0.5)
    assert b.m[0]["a"] == 0.5  # the first reward sets m
    b.update(["a"], 1.0)
    assert b.m[0]["a"] == pytest.approx(0.3 * 0.5 + 0.7 * 1.0)


@pytest.mark.parametrize("T", [1, 2])
def test_arms_are_abandoned_on_schedule_by_lowest_ucb(T):
    ops = ["a", "b", "c", "d", "e"]
    b = AntiBandit(3, ops, lam=0.7, T=T)
    rng = random.Random(0)
    arms_at_trial = []
    while not b.done():
        k = b.arms
        choice = b.sample(rng)
        assert all(op in b.remaining[e] for e, op in enumerate(choice))
        # one reward per trial (the network's accuracy), shared by the sampled arms
        b.update(choice, sum(_rewards(op, b.N) for op in choice) / len(choice))
        arms_at_trial.append(k)
        if b.abandon_due():
            # what the bandit will drop: recomputed from its own statistics, before it drops it
            want = [min(b.remaining[e], key=lambda o: b.m[e][o] + math.sqrt(2 * math.log(b.N) / b.n[e][o]))
                    for e in range(3)]
            events = b.abandon()
            assert [ev["removed"] for ev in events] == want
            for ev in events:
                assert ev["ucb"][ev["removed"]] == min(ev["ucb"].values())
                assert all(n >= 1 for n in ev["n"].values())  # every arm was tried before judging
            assert b.arms == k - 1
    # K*T trials with K arms, then K-1 arms for (K-1)*T trials, ... down to one arm per edge
    want = [k for k in range(5, 1, -1) for _ in range(k * T)]
    assert arms_at_trial == want
    assert b.N == total_trials(5, T) == T * (5 + 4 + 3 + 2)
    assert all(len(r) == 1 for r in b.remaining)
    assert len(b.abandoned) == 3 * 4
    # round trip for resuming
    assert AntiBandit.from_dict(json.loads(json.dumps(b.to_dict()))) == b


def test_derive_genotype_keeps_the_best_incoming_edge_per_node():
    b = AntiBandit(10, ["skip_connect", "max_pool_3x3"])
    for e in range(10):
        b.remaining[e] = ["skip_connect" if e % 2 else "max_pool_3x3"]
        b.m[e] = {"skip_connect": e / 10, "max_pool_3x3": e / 10}
    g = derive_genotype(b, 1)
    # node j's edges are e = j(j-1)/2 + i; the highest e (= last input) wins here
    assert g.cells[0] == (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("skip_connect", 3))


@pytest.mark.slow
def test_search_on_fashion_mnist_abandons_until_one_operation_per_edge(fashion_mnist, tmp_path):
    ops = ["max_pool_3x3", "skip_connect", "gab_filt_3x3"]
    cfg = SearchConfig(data=f"fashion-mnist:{fashion_mnist}", out=str(tmp_path / "s"), budget=10, C=4, cells=1,
                       T=1, batch_size=16, train_size=128, val_size=64, space=ops, seed=0)
    res = search(cfg, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "s" / "search_log.jsonl")]
    assert [r["arms"] for r in rows] == [3, 3, 3, 2, 2]  # K*T = 3 trials, then 2
    assert [len(r["abandoned"]) for r in rows] == [0, 0, 10, 0, 10]  # one arm per edge, 10 edges
    assert all(0 <= r["reward"] <= 1 for r in rows)
    rec = json.load(open(tmp_path / "s" / "genotype.json"))
    assert rec["genotype"] == res["genotype"] and rec["search"]["trials"] == 5
    for ev in rec["search"]["abandoned"]:
        assert ev["ucb"][ev["removed"]] == min(ev["ucb"].values())
    ops_used = {op for cell in rec["genotype"]["cells"] for op, _ in cell}
    assert ops_used <= set(ops)
    # a finished search resumes to the same answer without training again
    again = search(cfg, progress=False)
    assert again["genotype"] == res["genotype"]
    assert len(open(tmp_path / "s" / "search_log.jsonl").readlines()) == 5
