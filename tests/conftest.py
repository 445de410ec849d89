import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Each test gets its own robustart home (cache + store) and never touches the network."""
    home = tmp_path_factory.mktemp("robustart-home")
    monkeypatch.setenv("ROBUSTART_HOME", str(home))
    monkeypatch.delenv("ROBUSTART_CACHE", raising=False)
    monkeypatch.delenv("ROBUSTART_STORE", raising=False)
    monkeypatch.setenv("ROBUSTART_OFFLINE", "1")
    yield home


@pytest.fixture(scope="session")
def imagenet_sample() -> Path:
    """The flat ImageNet sample (ROBUSTART_IMAGENET_SAMPLE); tests that need it skip without it."""
    value = os.environ.get("ROBUSTART_IMAGENET_SAMPLE")
    if not value:
        pytest.skip("ROBUSTART_IMAGENET_SAMPLE is not set (point it at a flat <wnid>_<name>.JPEG folder)")
    path = Path(value)
    if not path.is_dir() or not any(path.glob("n*_*.JPEG")):
        pytest.skip(f"ROBUSTART_IMAGENET_SAMPLE={value} holds no <wnid>_<name>.JPEG images")
    return path


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def fashion_mnist() -> Path:
    """Debian's dataset-fashion-mnist files; tests that need them skip without them."""
    if not (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST is not installed in {FASHION_MNIST} (apt-get install dataset-fashion-mnist)")
    return FASHION_MNIST
