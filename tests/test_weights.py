"""Checkpoint download, verification and safe loading, against a real HTTP server on loopback.

Every download here goes over real HTTP to a `ThreadingHTTPServer` on 127.0.0.1 that the test
starts; the checkpoints are real files written by the test. Nothing in robustart is mocked. The
Hugging Face hub path is exercised against the same server: huggingface_hub is pointed at it
through its own endpoint setting, and the server answers the hub's HEAD/GET protocol
(X-Repo-Commit, ETag, Content-Length).
"""

from __future__ import annotations

import collections
import hashlib
import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from robustart.errors import (
    ChecksumError,
    DownloadError,
    UnsafeCheckpointError,
    WeightsNotAvailableError,
)
from robustart.zoo import build as B
from robustart.zoo import registry as R
from robustart.zoo import weights as W

ARCH = "test_resnet"  # a tiny timm ResNet (~0.4 M parameters)
NUM_CLASSES = 10
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HF_COMMIT = "0123456789abcdef0123456789abcdef01234567"


# --------------------------------------------------------------------------- HTTP server


@dataclass
class Route:
    body: bytes = b""
    mode: str = "ok"  # ok | truncate | chunked_truncate | status
    status: int = 200
    headers: dict = field(default_factory=dict)


class LoopbackServer:
    """A real HTTP server on 127.0.0.1 whose answers the test sets per path; counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: collections.Counter = collections.Counter()  # (method, path) -> count
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def _answer(self, head: bool) -> None:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.hits[(self.command, path)] += 1
                route = server.routes.get(path)
                if route is None:
                    self.send_error(404, "no such file")
                    return
                if route.mode == "status":
                    self.send_response(route.status)
                    for k, v in route.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = route.body
                self.send_response(200)
                for k, v in route.headers.items():
                    self.send_header(k, v)
                if route.mode == "chunked_truncate":
                    self.send_header("Transfer-Encoding", "chunked")
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                half = body[: len(body) // 2]
                if route.mode == "ok":
                    self.wfile.write(body)
                elif route.mode == "truncate":
                    # Content-Length promised the whole body; send half of it, then hang up.
                    self.wfile.write(half)
                elif route.mode == "chunked_truncate":
                    # One chunk announced at full size; half of it arrives, then the line drops.
                    self.wfile.write(f"{len(body):x}\r\n".encode() + half)
                self.wfile.flush()
                self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def count(self, path: str, method: str | None = None) -> int:
        with self._lock:
            return sum(n for (m, p), n in self.hits.items() if p == path and method in (None, m))

    def total(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def online(monkeypatch):
    """Downloads on (the shared conftest turns them off for every test by default)."""
    monkeypatch.delenv("ROBUSTART_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


# --------------------------------------------------------------------------- checkpoints


@dataclass
class Checkpoint:
    model: torch.nn.Module
    safetensors: bytes
    pth: bytes

    @staticmethod
    def sha(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Checkpoint:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(ARCH, pretrained=False, num_classes=NUM_CLASSES).eval()
    # Non-trivial BatchNorm statistics, so a checkpoint that lost them would show in the logits.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    d = tmp_path_factory.mktemp("ckpt")
    save_file(state, str(d / "model.safetensors"))
    torch.save(state, d / "model.pth")
    return Checkpoint(model, (d / "model.safetensors").read_bytes(), (d / "model.pth").read_bytes())


@pytest.fixture
def make_entry():
    """Register temporary zoo entries; unregistered at teardown."""
    names: list[str] = []

    def make(name: str, weights: R.WeightSource) -> R.ModelEntry:
        entry = R.ModelEntry(
            name=name,
            arch=ARCH,
            family="cnn",
            weights=weights,
            input_size=(3, 64, 64),
            mean=MEAN,
            std=STD,
            num_classes=NUM_CLASSES,
        )
        R.register(entry)
        names.append(name)
        return entry

    yield make
    for n in names:
        R.unregister(n)


def assert_same_function(loaded: torch.nn.Module, original: torch.nn.Module) -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = original((x - mean) / std)
        got = loaded(x)
    assert got.shape == (2, NUM_CLASSES)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() or p.is_symlink())


# --------------------------------------------------------------------------- URL downloads


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_url_download_loads_the_exact_model_and_is_cached(
    fmt, ckpt, server, online, make_entry, tmp_path
):
    data = ckpt.safetensors if fmt == "safetensors" else ckpt.pth
    path = f"/weights/test_resnet-{Checkpoint.sha(data)[:8]}.{fmt}"
    server.routes[path] = Route(body=data)
    url = server.url(path)
    entry = make_entry(f"tmp-url-{fmt}", R.WeightSource(url=url, sha256=Checkpoint.sha(data)))
    cache = tmp_path / "cache"

    assert not W.is_available_offline(entry, cache)
    model = B.load_model(entry, cache_dir=cache)
    assert server.count(path) == 1

    cached = W.url_cache_path(url, cache)
    assert cached.is_file() and cached.read_bytes() == data
    assert files_under(cache) == [cached]  # no temporary files left next to it
    assert model.weights_sha256 == Checkpoint.sha(data)
    assert W.is_available_offline(entry, cache)
    assert not model.training
    assert_same_function(model, ckpt.model)

    # A second fetch (and a second build) reads the cache and never asks the server.
    assert W.fetch(entry, cache_dir=cache, progress=False) == cached
    assert_same_function(B.load_model(entry, cache_dir=cache, progress=False), ckpt.model)
    assert server.count(path) == 1

    # force=True downloads again.
    assert W.fetch(entry, cache_dir=cache, force=True, progress=False) == cached
    assert server.count(path) == 2


def test_url_download_goes_to_the_default_cache(ckpt, server, online, make_entry, _isolated_home):
    path = "/w/default-cache.safetensors"
    server.routes[path] = Route(body=ckpt.safetensors)
    entry = make_entry("tmp-url-default", R.WeightSource(url=server.url(path)))  # no sha256 pinned
    got = W.fetch(entry, progress=False)
    assert got == W.url_cache_path(server.url(path))
    assert got.is_relative_to(_isolated_home)  # ROBUSTART_HOME/weights
    assert got.read_bytes() == ckpt.safetensors


def test_sha256_prefix_is_accepted(ckpt, server, online, make_entry, tmp_path):
    path = "/weights/resnet-prefix.pth"
    server.routes[path] = Route(body=ckpt.pth)
    prefix = Checkpoint.sha(ckpt.pth)[:8]
    entry = make_entry("tmp-url-prefix", R.WeightSource(url=server.url(path), sha256=prefix.upper()))
    model = B.load_model(entry, cache_dir=tmp_path, progress=False)
    assert model.weights_sha256.startswith(prefix)
    assert_same_function(model, ckpt.model)


@pytest.mark.parametrize("kind", ["full", "prefix"])
def test_wrong_sha256_raises_and_keeps_nothing(kind, ckpt, server, online, make_entry, tmp_path):
    path = "/weights/resnet-bad-sha.safetensors"
    server.routes[path] = Route(body=ckpt.safetensors)
    real = Checkpoint.sha(ckpt.safetensors)
    wrong = ("0" if real[0] != "0" else "1") + real[1:]  # differs in the first digit only
    entry = make_entry(
        f"tmp-url-badsha-{kind}",
        R.WeightSource(url=server.url(path), sha256=wrong if kind == "full" else wrong[:8]),
    )
    with pytest.raises(ChecksumError, match=real):
        B.load_model(entry, cache_dir=tmp_path, progress=False)
    assert server.count(path) == 1
    assert files_under(tmp_path) == []
    assert not W.is_available_offline(entry, tmp_path)


@pytest.mark.parametrize("mode", ["truncate", "chunked_truncate"])
def test_truncated_transfer_does_not_poison_the_cache(mode, ckpt, server, online, make_entry, tmp_path):
    path = f"/weights/resnet-{mode}.safetensors"
    server.routes[path] = Route(body=ckpt.safetensors, mode=mode)
    # No sha256 pinned: only the size check can catch the short file.
    entry = make_entry(f"tmp-url-{mode}", R.WeightSource(url=server.url(path)))
    with pytest.raises(DownloadError, match="truncated|broke off"):
        W.fetch(entry, cache_dir=tmp_path, progress=False)
    assert server.count(path) == 1
    assert files_under(tmp_path) == []
    assert not W.is_available_offline(entry, tmp_path)

    # The source recovers: the same URL now downloads in full and loads.
    server.routes[path] = Route(body=ckpt.safetensors)
    model = B.load_model(entry, cache_dir=tmp_path, progress=False)
    assert server.count(path) == 2
    assert W.url_cache_path(server.url(path), tmp_path).read_bytes() == ckpt.safetensors
    assert_same_function(model, ckpt.model)


def test_http_404_is_a_download_error(server, online, make_entry, tmp_path):
    path = "/weights/missing.pth"  # no route: the server answers 404
    entry = make_entry("tmp-url-404", R.WeightSource(url=server.url(path), sha256="deadbeef"))
    with pytest.raises(DownloadError, match="404"):
        B.load_model(entry, cache_dir=tmp_path, progress=False)
    assert server.count(path) == 1
    assert files_under(tmp_path) == []


def test_unreachable_host_is_a_download_error(server, online, make_entry, tmp_path):
    url = server.url("/weights/x.pth")
    server.close()  # nothing listens on that port any more
    entry = make_entry("tmp-url-down", R.WeightSource(url=url))
    with pytest.raises(DownloadError, match="cannot reach"):
        W.fetch(entry, cache_dir=tmp_path, progress=False)
    assert files_under(tmp_path) == []


def test_offline_mode(ckpt, server, online, make_entry, tmp_path, monkeypatch):
    path = "/weights/resnet-offline.safetensors"
    server.routes[path] = Route(body=ckpt.safetensors)
    sha = Checkpoint.sha(ckpt.safetensors)
    entry = make_entry("tmp-url-offline", R.WeightSource(url=server.url(path), sha256=sha))

    monkeypatch.setenv("ROBUSTART_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError) as err:
        B.load_model(entry, cache_dir=tmp_path, progress=False)
    message = str(err.value)
    assert "'tmp-url-offline'" in message
    assert "robustart zoo download tmp-url-offline" in message
    assert server.total() == 0  # offline means no request at all
    assert files_under(tmp_path) == []

    monkeypatch.delenv("ROBUSTART_OFFLINE")
    W.fetch(entry, cache_dir=tmp_path, progress=False)
    assert server.count(path) == 1

    # Once cached, offline works (HF_HUB_OFFLINE counts as offline too) and asks no one.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert_same_function(B.load_model(entry, cache_dir=tmp_path, progress=False), ckpt.model)
    assert server.count(path) == 1


# --------------------------------------------------------------------------- HF hub


@pytest.fixture
def hub(server, online, monkeypatch):
    """Point huggingface_hub at the loopback server (it reads HF_ENDPOINT at import time, so
    its endpoint constants are set too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", server.base)
    monkeypatch.setattr(constants, "ENDPOINT", server.base)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.base + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    return server


def hub_route(
    server: LoopbackServer, repo: str, body: bytes, etag: str, filename: str = "model.safetensors"
) -> str:
    path = f"/{repo}/resolve/main/{filename}"
    # Like the hub for an LFS file: the ETag (and X-Linked-Etag) is the file's sha256.
    server.routes[path] = Route(
        body=body,
        headers={"X-Repo-Commit": HF_COMMIT, "ETag": f'"{etag}"', "X-Linked-Etag": f'"{etag}"'},
    )
    return path


def test_hf_hub_download_is_verified_and_cached(ckpt, hub, make_entry, tmp_path, monkeypatch):
    sha = Checkpoint.sha(ckpt.safetensors)
    path = hub_route(hub, "org/tiny", ckpt.safetensors, etag=sha)
    entry = make_entry("tmp-hf-good", R.WeightSource(hf_hub_id="org/tiny"))
    cache = tmp_path / "cache"

    assert not W.is_available_offline(entry, cache)
    model = B.load_model(entry, cache_dir=cache, progress=False)
    assert hub.count(path, "GET") == 1
    assert model.weights_sha256 == sha
    assert_same_function(model, ckpt.model)

    blob = W.hf_cache_dir(cache) / "models--org--tiny" / "blobs" / sha
    assert blob.is_file() and blob.read_bytes() == ckpt.safetensors
    cached = W.cached_path(entry, cache)
    assert cached is not None and cached.resolve() == blob.resolve()

    # Cached: a second fetch asks nothing, and works offline.
    before = hub.total()
    assert W.fetch(entry, cache_dir=cache, progress=False) == cached
    monkeypatch.setenv("ROBUSTART_OFFLINE", "1")
    assert_same_function(B.load_model(entry, cache_dir=cache, progress=False), ckpt.model)
    assert hub.total() == before


def test_hf_hub_pinned_sha256_is_checked(ckpt, hub, make_entry, tmp_path):
    sha = Checkpoint.sha(ckpt.safetensors)
    hub_route(hub, "org/pinned", ckpt.safetensors, etag=sha)
    ok = make_entry("tmp-hf-pinned", R.WeightSource(hf_hub_id="org/pinned", sha256=sha[:8]))
    assert W.fetch(ok, cache_dir=tmp_path, progress=False).read_bytes() == ckpt.safetensors

    hub_route(hub, "org/pinned2", ckpt.safetensors, etag=sha)
    bad = make_entry("tmp-hf-pinned-bad", R.WeightSource(hf_hub_id="org/pinned2", sha256="0" * 64))
    with pytest.raises(ChecksumError):
        W.fetch(bad, cache_dir=tmp_path, progress=False)
    assert not (W.hf_cache_dir(tmp_path) / "models--org--pinned2" / "blobs" / sha).exists()
    assert W.cached_path(bad, tmp_path) is None


def test_hf_hub_corrupted_bytes_raise_and_the_blob_is_removed(ckpt, hub, make_entry, tmp_path):
    good = ckpt.safetensors
    sha = Checkpoint.sha(good)
    corrupt = bytearray(good)
    corrupt[len(corrupt) // 2] ^= 0xFF  # same size, one byte flipped
    path = hub_route(hub, "org/corrupt", bytes(corrupt), etag=sha)
    entry = make_entry("tmp-hf-corrupt", R.WeightSource(hf_hub_id="org/corrupt"))

    with pytest.raises(ChecksumError, match=sha):
        B.load_model(entry, cache_dir=tmp_path, progress=False)
    assert hub.count(path, "GET") == 1
    repo_dir = W.hf_cache_dir(tmp_path) / "models--org--corrupt"
    assert files_under(repo_dir / "blobs") == []
    assert files_under(repo_dir / "snapshots") == []
    assert W.cached_path(entry, tmp_path) is None

    # The hub serves the right bytes again: the next fetch downloads and verifies them.
    hub_route(hub, "org/corrupt", good, etag=sha)
    assert_same_function(B.load_model(entry, cache_dir=tmp_path, progress=False), ckpt.model)
    assert hub.count(path, "GET") == 2


def test_hf_hub_missing_file_is_a_download_error(hub, make_entry, tmp_path):
    path = "/org/empty/resolve/main/model.safetensors"
    hub.routes[path] = Route(
        mode="status", status=404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": HF_COMMIT}
    )
    entry = make_entry("tmp-hf-404", R.WeightSource(hf_hub_id="org/empty"))
    with pytest.raises(DownloadError, match="not in hub repo org/empty"):
        W.fetch(entry, cache_dir=tmp_path, progress=False)
    assert hub.count(path) >= 1


def test_hf_hub_unreachable_says_how_to_get_the_weights(hub, make_entry, tmp_path):
    # Something that is not the hub answers (a proxy refusing, say): 403 without hub headers.
    path = "/org/blocked/resolve/main/model.safetensors"
    hub.routes[path] = Route(mode="status", status=403)
    entry = make_entry("tmp-hf-blocked", R.WeightSource(hf_hub_id="org/blocked"))
    with pytest.raises(WeightsNotAvailableError, match="robustart zoo download tmp-hf-blocked"):
        W.fetch(entry, cache_dir=tmp_path, progress=False)
    assert hub.count(path, "HEAD") == 1


# --------------------------------------------------------------------------- safe loading


def _make_marker(path: str) -> str:
    Path(path).write_text("the checkpoint ran code")
    return "pwned"


class Payload:
    """Unpickling this object runs `_make_marker` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_make_marker, (self.marker,))


def test_checkpoint_with_python_objects_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"w": torch.zeros(1), "obj": Payload(marker)}, path)
    assert not marker.exists()

    with pytest.raises(UnsafeCheckpointError, match="never unpickles"):
        W.load_checkpoint(path)
    assert not marker.exists()

    # Control: the payload is live. An unsafe load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoint_with_non_tensor_values_is_refused(tmp_path):
    path = tmp_path / "counter.pth"
    torch.save({"w": torch.zeros(1), "counts": collections.Counter(a=1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="not a state dict of tensors"):
        W.load_checkpoint(path)


def test_evil_url_checkpoint_is_refused_after_download(server, online, make_entry, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Payload(marker)}, evil)
    path = "/weights/evil.pth"
    server.routes[path] = Route(body=evil.read_bytes())
    entry = make_entry("tmp-url-evil", R.WeightSource(url=server.url(path)))
    with pytest.raises(UnsafeCheckpointError):
        B.load_model(entry, cache_dir=tmp_path / "cache", progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "model_state_dict", "state_dict_ema"])
def test_load_checkpoint_unwraps_and_strips_module_prefix(wrapper, tmp_path):
    inner = {"module.conv.weight": torch.randn(4, 3, 3, 3), "module.fc.bias": torch.randn(4)}
    path = tmp_path / "wrapped.pth"
    torch.save({wrapper: inner, "epoch": 7, "arch": "x"}, path)
    state = W.load_checkpoint(path)
    assert set(state) == {"conv.weight", "fc.bias"}
    torch.testing.assert_close(state["conv.weight"], inner["module.conv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(state["fc.bias"], inner["module.fc.bias"], rtol=0, atol=0)


def test_load_checkpoint_keeps_partial_module_prefixes_and_reads_suffixless_safetensors(tmp_path):
    from safetensors.torch import save_file

    state = {"module.a": torch.ones(2), "b": torch.zeros(3)}  # not every key is prefixed
    path = tmp_path / "blob"  # hub blobs have no suffix: the header must identify safetensors
    save_file(state, str(path))
    got = W.load_checkpoint(path)
    assert set(got) == {"module.a", "b"}


def test_remap_by_order():
    model_state = {
        "conv.weight": torch.zeros(4, 3, 3, 3),
        "bn.weight": torch.zeros(4),
        "bn.num_batches_tracked": torch.tensor(5),
        "fc.weight": torch.zeros(2, 4),
    }
    ckpt = {
        "_conv.w": torch.ones(4, 3, 3, 3),
        "_bn.g": torch.full((4,), 2.0),
        "_bn.num_batches_tracked": torch.tensor(99),
        "_fc.w": torch.full((2, 4), 3.0),
    }
    out = W.remap_by_order(ckpt, model_state, "m")
    assert list(out) == ["conv.weight", "bn.weight", "fc.weight", "bn.num_batches_tracked"]
    assert out["bn.weight"] is ckpt["_bn.g"] and out["fc.weight"] is ckpt["_fc.w"]
    assert out["bn.num_batches_tracked"] is model_state["bn.num_batches_tracked"]

    swapped = {k: ckpt[k] for k in ["_conv.w", "_fc.w", "_bn.g"]}  # same tensors, wrong order
    with pytest.raises(ValueError, match="does not fit"):
        W.remap_by_order(swapped, model_state, "m")

    with pytest.raises(ValueError, match="checkpoint has 2 tensors, model has 3"):
        W.remap_by_order({"a": torch.ones(4, 3, 3, 3), "b": torch.ones(4)}, model_state, "m")


# --------------------------------------------------------------------------- package weights


def test_offline_package_weights_load_with_their_pinned_sha256():
    entry = R.get_entry("efficientnet_lite0")
    assert entry.weights.kind == "package"
    assert W.is_available_offline(entry)
    model = B.load_model("efficientnet_lite0")  # conftest keeps ROBUSTART_OFFLINE=1
    assert model.weights_sha256 == entry.weights.sha256
    assert model.weights_sha256 == W.file_sha256(entry.weights.package_path())
    # The by-order mapping put the checkpoint's first tensor (the stem conv) into the stem.
    first = next(iter(W.load_checkpoint(entry.weights.package_path()).values()))
    torch.testing.assert_close(model.net.conv_stem.weight, first, rtol=0, atol=0)
