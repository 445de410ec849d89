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
