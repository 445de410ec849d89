"""Dataset sources, robust decoding and eval transforms."""

from robustart.data.sources import DataSource, Sample, imagenet_wnids, open_source

__all__ = ["DataSource", "Sample", "imagenet_wnids", "open_source"]
