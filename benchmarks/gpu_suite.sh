#!/usr/bin/env bash
# Every GPU figure in one command, on a CUDA machine with its own PyTorch and Triton and no
# package registry (an H100 or H200 lent for a few minutes); see benchmarks/gpu_suite.py.
#
#   bash benchmarks/gpu_fetch.sh             # here, once: wheels into .gpu-wheels/, JPEGs into .gpu-images/
#   bash benchmarks/gpu_suite.sh             # there, with .gpu-wheels and .gpu-images carried: <= 9 min
#   bash benchmarks/gpu_suite.sh --dry-run   # anywhere: the same on the CPU at tiny sizes (CI runs it)
#
# Set PYTHON to choose the interpreter (default python3). Without --dry-run this installs the
# project from this tree over the machine's own torch (pip --no-deps, no build isolation, no
# index) and the carried wheels into a scratch folder put first on PYTHONPATH.
set -uo pipefail
cd "$(dirname "$0")/.."
export GPU_SUITE_T0=${GPU_SUITE_T0:-$(date +%s)}
PY=${PYTHON:-python3}
dry=0
for a in "$@"; do [ "$a" = "--dry-run" ] && dry=1; done
if [ "$dry" = 0 ]; then
    echo "installing robustart from $(pwd) (no dependencies: the machine's torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
    timeout 90 "$PY" -m pip install -q --no-deps --no-build-isolation --no-index -e . \
        || echo "warning: pip install -e . failed; the parts import robustart from this tree (PYTHONPATH)"
    if compgen -G ".gpu-wheels/*.whl" >/dev/null; then
        site=${TMPDIR:-/tmp}/gpu-suite-site
        timeout 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" .gpu-wheels/*.whl \
            && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" \
            || echo "warning: the carried wheels did not install; parts that need them will fail"
    else
        echo "warning: no .gpu-wheels/*.whl (run bash benchmarks/gpu_fetch.sh here and carry .gpu-wheels):" \
             "the parts needing torchattacks, imagecorruptions, simplejpeg or lite0's weights will fail"
    fi
fi
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_suite.py "$@"
