"""BWTA (robustart.quant.bwta, robustart.kernels.bwta): the binary x ternary kernel bit for bit
against the integer reference under Triton's interpreter, the form's layers against the original
model with quantizers off, the multi-stage schedule and its magnitude alignment, and training."""

from __future__ import annotations

import copy

import pytest
import torch

from robustart.kernels import bwta as KB
from robustart.kernels.reference import pack_bits
from robustart.quant import bwta as BW
from test_apq import images, small_model


def _ternary(shape, g, zero_frac=0.5):
    t = torch.randint(-1, 2, shape, generator=g)
    return torch.where(torch.rand(shape, generator=g) < zero_frac, torch.zeros_like(t), t)


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (5, 7, 31), (17, 9, 33), (3, 40, 100), (33, 18, 64), (16, 16, 97)])
def test_kernel_bit_exact_against_integer_reference(m, n, k):
    g = torch.Generator().manual_seed(m * 1000 + n * 10 + k)
    a = _ternary((m, k), g)
    a[:, : min(k, 64)] = 0  # zero runs: whole words of zeros
    if m > 2:
        a[1] = 0  # an all-zero row
    w = torch.where(torch.rand(n, k, generator=g) < 0.5, 1, -1)
    am, asg = KB.pack_ternary(a)
    wb = pack_bits(w)
    ref = (a.long() @ w.long().T).to(torch.int32)  # exact integer reference
    assert torch.equal(KB.bwta_gemm_i32(am, asg, wb, k, backend="torch"), ref)
    assert torch.equal(KB.bwta_gemm_i32(am, asg, wb, k, backend="triton"), ref)
    # ternary right operand (attention products)
    bt = _ternary((n, k), g)
    bm, bs = KB.pack_ternary(bt)
    ref_t = (a.long() @ bt.long().T).to(torch.int32)
    assert torch.equal(KB.bwta_gemm_i32(am, asg, bs, k, b_mask=bm, backend="triton"), ref_t)
    # fused epilogue, per-tensor and per-row activation scales: identical to the reference's
    s, bias = torch.rand(n, generator=g) + 0.1, torch.randn(n, generator=g)
    for a_scale in (0.37, torch.rand(m, generator=g) + 0.1):
        y = KB.bwta_gemm(am, asg, wb, k, a_scale, s, bias, backend="triton")
        yr = KB.bwta_gemm(am, asg, wb, k, a_scale, s, bias, backend="torch")
        assert torch.equal(y, yr)


def test_kernel_grouped_and_packing():
    g = torch.Generator().manual_seed(3)
    G, m, n, k = 3, 5, 6, 40
    a = _ternary((G * m, k), g)
    b = _ternary((G * n, k), g)
    am, asg = KB.pack_ternary(a)
    bm, bs = KB.pack_ternary(b)
    assert torch.equal(KB.unpack_ternary(am, asg, k), a.to(torch.int8))
    kw = am.shape[1]
    out = KB.bwta_gemm_i32(am.view(G, m, kw), asg.view(G, m, kw), bs.view(G, n, kw), k, b_mask=bm.view(G, n, kw),
                           backend="triton")
    ref = torch.stack([a[i * m:(i + 1) * m].long() @ b[i * n:(i + 1) * n].long().T for i in range(G)]).to(torch.int32)
    assert torch.equal(out, ref)
    with pytest.raises(ValueError, match="ternary"):
        KB.pack_ternary(torch.tensor([[2, 0]]))
    with pytest.raises(ValueError, match="k=70 needs 3"):
        KB.bwta_gemm_i32(am, asg, KB.pack_bits(torch.ones(n, 40)), 70)


@pytest.mark.parametrize("kind", ["vit", "swin", "mixer"])
def test_quantizers_off_is_the_original_model(kind):
    m = small_model(kind)
    x = images(4)
    with torch.no_grad():
        ref = m(x)
    q = copy.deepcopy(m)
    BW.bwta_model(q.net)
    assert BW.bwta_layers(q) and q.net.get_classifier().__class__ is torch.nn.Linear  # the head stays float
    if kind != "mixer":
        assert any(isinstance(mod, BW.BWTAAttention) for mod in q.modules())
    BW.set_mode(q, "fp")
    with torch.no_grad():
        assert torch.equal(q(x), ref)
    BW.calibrate(q, images(8))
    BW.set_mode(q, "fp")
    with torch.no_grad():
        assert torch.equal(q(x), ref)
        BW.set_mode(q, "quant")
        assert not torch.equal(q(x), ref)


def test_ternary_values_and_kernel_path_match_simulation():
    m = small_model("vit")
    BW.bwta_model(m.net)
    BW.calibrate(m, images(8))
    lin = BW.bwta_layers(m)[0]
    x = torch.randn(2, 5, lin.in_features)
    t = lin.act(x) / lin.act.scale
    assert set(t.round().unique().tolist()) <= {-1.0, 0.0, 1.0} and torch.allclose(t, t.round(), atol=1e-5)
    assert (lin.act(x) == 0).any()  # tiny values are projected to zero
    p = m.net.blocks[0].attn.p_act
    assert p.unsigned and p.lo == 0
    xb = images(2)
    with torch.no_grad():
        sim = m(xb)
        BW.use_kernels(m, "triton")  # Triton interpreter on the CPU
        ker = m(xb)
    torch.testing.assert_close(ker, sim, rtol=1e-4, atol=1e-4)


def test_stage_schedule_and_magnitude_alignment():
    sch = BW.stage_schedule(100, 8, 0.4)
    assert [k for _, k in sch] == [8, 7, 6, 5, 4, 3, 2, 1] and sch[0][0] == 0 and sch[-1][0] == 60
    m = small_model("vit")
    BW.bwta_model(m.net)
    BW.calibrate(m, images(8), k=4)
    xb = images(8, seed=5)
    seen = {}
    hs = [q.register_forward_pre_hook(lambda mod, a: seen.setdefault(id(mod), a[0].detach())) for q in BW.quantizers(m)]
    with torch.no_grad():
        m(xb)
    for h in hs:
        h.remove()
    qs = BW.quantizers(m)
    before = [q.quantize(seen[id(q)]).abs().sum() for q in qs]
    plain = [q.quantize(seen[id(q)], q.scale.detach() * 4 / 3, 3).abs().sum() for q in qs]
    factors = BW.set_levels(m, 3, xb)
    assert all(int(q.k) == 3 for q in qs) and any(f != 1.0 for f in factors)
    assert all(float(q.gain) == pytest.approx(f) for q, f in zip(qs, factors))
    after = [q.quantize(seen[id(q)]).abs().sum() for q in qs]
    gap_aligned = sum(abs(float((a - b).detach())) for a, b in zip(after, before))
    gap_plain = sum(abs(float((a - b).detach())) for a, b in zip(plain, before))
    assert gap_aligned < gap_plain


def test_train_bwta_reaches_ternary_and_resumes(tmp_path):
    from robustart.quant.train import train_bwta

    teacher = small_model("vit")
    student = copy.deepcopy(teacher)
    BW.bwta_model(student.net)
    BW.calibrate(student, images(8), k=3)
    data = [(images(8, seed=s), None) for s in range(3)]
    ck = tmp_path / "bwta.pt"
    r = train_bwta(student, teacher, data, steps=6, k_start=3, lr=1e-3, checkpoint=ck, checkpoint_every=2,
                   progress=False)
    assert r.step == 6 and all(int(q.k) == 1 for q in BW.quantizers(student))
    assert all(torch.isfinite(torch.tensor(r.losses)))
    again = small_model("vit")  # a fresh copy (the teacher's parameters are frozen by training)
    BW.bwta_model(again.net)
    BW.calibrate(again, images(8), k=3)
    r2 = train_bwta(again, teacher, data, steps=6, k_start=3, lr=1e-3, checkpoint=ck, progress=False)
    assert r2.step == 6 and r2.losses == r.losses  # finished run: loaded, not retrained


def test_trained_bwta_network_registers_as_a_local_entry(tmp_path, _isolated_home):
    """A trained BWTA network written as a local entry comes back as `NAME@bwta` with its
    levels and scales: the same logits as the trained network, and no calibration asked for."""
    from robustart.quant.train import register, train_bwta
    from robustart.zoo.build import build, calibration_for
    from robustart.zoo.registry import get_entry

    teacher = small_model("vit")
    student = copy.deepcopy(teacher)
    BW.bwta_model(student.net)
    BW.calibrate(student, images(8), k=3)
    train_bwta(student, teacher, [(images(8, seed=s), None) for s in range(2)], steps=4, k_start=3, lr=1e-3,
               progress=False)
    path = register("tiny-vit-bwta", teacher.entry, student, "bwta")
    assert path == _isolated_home / "zoo" / "tiny-vit-bwta.json"
    entry = get_entry("tiny-vit-bwta")
    assert entry.form == "bwta" and entry.spec == "tiny-vit-bwta@bwta" and calibration_for(entry) is None
    model = build(entry, progress=False)
    assert model.quant_info["trained"] and all(int(q.k) == 1 for q in BW.quantizers(model))
    x = images(4, seed=9)
    with torch.no_grad():
        want = student(x)
        assert torch.equal(model(x), want)
        BW.set_mode(model, "fp")
        assert not torch.equal(model(x), want)  # the loaded network is the BWTA one, not its float weights
