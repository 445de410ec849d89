"""Quantization: post-training quantization (fake quant, calibration, block reconstruction),
integer backends, and model forms (`NAME@w8a8`, `NAME@binary-irnet`).

  qconfig.py      QuantConfig and the form grammar (no torch)
  observers.py    min-max / percentile / MSE range observers
  fake.py         QuantLayer, QuantAttention (fake quant, straight-through gradients)
  ptq.py          calibration
  reconstruct.py  BRECQ/AdaRound block reconstruction
  backends.py     fake / cpu-int8 / triton execution of a calibrated model
  forms.py        building, calibrating and caching a zoo model's quantized form
  binary.py       binarized layers and binarize_model (BNN, XNOR-Net, IR-Net, DIR-Net, ReActNet)
  train.py        training recipes for binarized networks and BWTA transformers
  dsg.py          data-free calibration images (DSG, ZeroQ-style, noise): calib_data=dsg|zeroq|noise
  apq.py          APQ-ViT: blockwise calibration, Matthew-effect preserving softmax quantizer
  bwta.py         binary weights, ternary activations for transformers and mixers (NAME@bwta)
  cli.py          `robustart quant` (calib-gen)
"""

from robustart.quant.qconfig import NAMED_FORMS, FormError, QuantConfig, parse_form

__all__ = ["NAMED_FORMS", "FormError", "QuantConfig", "parse_form"]
