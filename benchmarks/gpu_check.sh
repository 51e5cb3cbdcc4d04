#!/usr/bin/env bash
# GPU check: SS-Net, its reference execution, UA-MT and labelled-only training steps at the paper sizes
# with amp and channels_last off/on (it/s, peak GPU memory, NaN/inf of every logged loss term), then the
# demo DAG with device: cuda through train and evaluate. Sized for under 8 minutes on one H200-class GPU
# or smaller (not yet measured: no GPU was available when it was written).
#
#   benchmarks/gpu_check.sh [gpu_check.py options, e.g. --no-dag --iterations 20]
#
# Output: the console, and in $OUT (if set) else results/gpu_check/: gpu_check.log (the console),
# gpu_check.json, gpu_check_summary.md, gpu_check_dag.log. Python: $PYTHON, else .venv/bin/python, else python3.
# Exit status: 0 all passed, 1 a NaN/inf or a failure, 2 no GPU (nothing run).
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT" && out=$(cd "$OUT" && pwd)
else
    out="$here/results/gpu_check"
fi
mkdir -p "$out" || exit 1
log="$out/gpu_check.log"
cd "$here" || exit 1
py=${PYTHON:-}
if [ -z "$py" ]; then
    if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi

no_gpu() {  # one line, on stderr and in the log; exit code 2
    echo "gpu_check: $1 - this check needs one NVIDIA GPU; nothing was run" | tee "$log" >&2
    exit 2
}

if command -v nvidia-smi >/dev/null 2>&1; then
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
    [ "$gpus" -gt 0 ] || no_gpu "nvidia-smi -L lists no GPU"
    smi="nvidia-smi: $(nvidia-smi -L | head -n 1)"
else
    smi="nvidia-smi: not found"
fi
cuda=$("$py" -c 'import torch; print(torch.cuda.is_available(), torch.__version__)' 2>/dev/null) \
    || no_gpu "cannot import torch with $py (set PYTHON=...)"
case "$cuda" in
    True*) ;;
    *) no_gpu "no CUDA device visible to torch ${cuda#* } ($smi; CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset})" ;;
esac

{
    echo "gpu_check: $(date -u '+%Y-%m-%dT%H:%M:%SZ') $(git rev-parse --short HEAD 2>/dev/null || echo no-git) | $smi"
    nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv 2>/dev/null || true
} | tee "$log"
set -o pipefail
"$py" -u benchmarks/gpu_check.py --device cuda --out "$out" "$@" 2>&1 | tee -a "$log"
status=$?
echo "gpu_check: exit status $status; log: $log" | tee -a "$log"
exit "$status"
