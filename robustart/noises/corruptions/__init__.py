"""ImageNet-C corruptions: constants, the batched torch implementation, the reference wrapper
and the metrics (error per corruption x severity, CE, mCE, relative mCE)."""
