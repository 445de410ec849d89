"""Analysis reports over the results store: leaderboards, figures, an HTML page, a Markdown
summary and every table as CSV and Parquet (`robustart report`), and model comparisons
(`robustart report --compare A B`). Reports only read the store, and every number is computed
from per-sample records (load.py reads them in one columnar scan; tables.py holds the pure
functions; figures.py draws with seaborn; render.py writes HTML and Markdown).

Sections key off the noise name in each job's config (`meta["config"]["noise"]["name"]`):

  clean                           clean leaderboard
  fgsm pgd mim cw square          adversarial: per-attack robust top-1, AR, ASR; WCAR per budget
  autoattack transfer               (config fields: norm, eps, budget = small|mid|large or absent)
  corruption                      ImageNet-C: mCE, relative mCE, mean error; corruption x severity
                                    heatmap (fields: corruption, severity, impl, jpeg)
  imagenet-s                      system noise: one job per decoding/resizing pipeline, with fields
                                    `decoder` (e.g. pil, opencv, ffmpeg) and `resize` (e.g.
                                    pil-bilinear, opencv-bicubic); mean/std/worst top-1 over the
                                    cells, flip rate vs the model's reference pipeline, decoder x
                                    resize heatmap
  precision                       numeric precision noise: one job per `variant` (e.g. fp16, bf16,
                                    int8); records' clean_pred are the fp32 predictions, so the
                                    flip rate is pred != clean_pred
  anything else                   "Other noises": top-1 and flip rate per job

Model forms come from `meta["config"]["model"]["form"]` ("fp", or a quantized/binarized form such
as "w8a8", "w4a4", "binary") and the job's `precision`: a model is labelled `name@form` when not
fp/fp32, its weight bit width is read from the form (w8a8 -> 8, binary -> 1, fp -> 32), and a
form's clean job is compared with its fp form's (same `arch`, same samples) for the flip rate and
the bit-width curves.
"""

from robustart.reports.compare import compare
from robustart.reports.report import build_report

__all__ = ["build_report", "compare"]
