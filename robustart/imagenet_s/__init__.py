"""ImageNet-S system noise: the same JPEG decoded and resized by different libraries.

  decoders/   JPEG bytes -> uint8 RGB (H, W, 3), one small module per backend
  resize.py   resize backends and the two geometries (the model's eval geometry, ImageNet-S's)
  pipeline.py decoder x resizer x geometry: a picklable path -> uint8 CHW tensor
  grid.py     the variant grid: one-factor sweeps and the full product
  build.py    `robustart imagenet-s build`: variants as uint8 shards with a manifest
  setup.py    `robustart imagenet-s setup`: Pillow-SIMD in its own folder
  cli.py      the typer app

Nothing heavy is imported here: the CLI imports this package for `--help`.
"""
