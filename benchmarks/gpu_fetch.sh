#!/usr/bin/env bash
# Prepares what the GPU suite carries to a machine with no package registry (run here, once):
#   .gpu-wheels/   the packages the suite needs that such a machine lacks, as wheels for its
#                  Python (CPython 3.12, manylinux x86_64), pinned in benchmarks/gpu_suite.py
#   .gpu-images/   every 10th JPEG of the ImageNet sample (100 of 1000)
# Both folders are git-ignored; carry them with the working tree (64 MiB in all; the wheels stay
# under 40 MiB). --dry-run prints the download commands and copies nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SAMPLE=${ROBUSTART_IMAGENET_SAMPLE:-../shared/data/imagenet-sample}
run() { if [ "${DRY:-0}" = 1 ]; then echo "$*"; else "$@"; fi; }
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
run mkdir -p .gpu-wheels .gpu-images
for spec in $("$PY" benchmarks/gpu_suite.py --print-wheels); do
    # a binary wheel for the GPU machine's Python; a pure-Python package may exist only as a
    # universal wheel or an sdist, which is then built into a wheel here
    run "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${PLATFORMS[@]}" -d .gpu-wheels "$spec" \
    || run "$PY" -m pip wheel -q --no-deps -w .gpu-wheels "$spec"
done
if [ "${DRY:-0}" != 1 ]; then
    ls "$SAMPLE"/n*_*.JPEG | sort | awk 'NR % 10 == 1' | head -n 100 | xargs -I{} cp {} .gpu-images/
    echo "wheels: $(du -sh .gpu-wheels | cut -f1) ($(ls .gpu-wheels | wc -l) files); images: $(du -sh .gpu-images | cut -f1) ($(ls .gpu-images | wc -l) JPEGs)"
    "$PY" benchmarks/gpu_suite.py --check-carry
fi
