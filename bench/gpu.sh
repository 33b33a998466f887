#!/usr/bin/env bash
# Every GPU measurement in one call, on a machine with a GPU:
#
#     bash bench/gpu.sh              # the full bench/run.py (256 px crops, batch 8, 7 rounds) per backend
#     bash bench/gpu.sh --quick      # any bench/run.py setting is passed on
#
# It runs bench/run.py once for each Keras backend installed here (TensorFlow, JAX, PyTorch: a machine
# with JAX or PyTorch and no TensorFlow is fine), each in a process of its own, and prints its table:
# training speed, colouring speed (one 1024x768 photo end to end, and a folder through the colorize
# command's threads) and, last, beta's 1024x768 end-to-end latency against the goal of under 12 ms.
# Install the backend's GPU build first (pip install "jax[cuda12]", "tensorflow[and-cuda]" or PyTorch's
# CUDA wheel). Every number is kept in outputs/bench/gpu-<backend>.json.
set -u
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "note: no nvidia-smi here; each table says which device its backend used (CPU figures on a CPU)"
fi

backends=()
for backend in tensorflow jax torch; do
    if "$PYTHON" -c "import $backend" 2> /dev/null; then
        backends+=("$backend")
    fi
done
if [ ${#backends[@]} -eq 0 ]; then
    echo "error: none of tensorflow, jax or torch can be imported by $PYTHON; install one (with its GPU build)" >&2
    exit 2
fi

status=0
for backend in "${backends[@]}"; do
    echo
    echo "=== KERAS_BACKEND=$backend: python bench/run.py --backend $backend $* ==="
    KERAS_BACKEND=$backend "$PYTHON" bench/run.py --backend "$backend" --out "outputs/bench/gpu-$backend" \
        --json "outputs/bench/gpu-$backend.json" "$@" || status=1
done
echo
echo "beta colorize, one 1024x768 photo end to end (goal: under 12 ms on a GPU):"
for backend in "${backends[@]}"; do
    "$PYTHON" - "outputs/bench/gpu-$backend.json" "$backend" << 'EOF' || status=1
import json, sys
try:
    report = json.load(open(sys.argv[1]))
    colour, device = report["colorize"], report["machine"]["device"]
except (OSError, KeyError, ValueError) as error:
    print(f"  {sys.argv[2]}: no figure ({error})")
    raise SystemExit(1)
verdict = ("met" if colour["latency_ms"] < 12 else "NOT met") if device != "cpu" else "on a CPU: not judged"
print(f"  {sys.argv[2]} on {device}: {colour['latency_ms']:g} ms ({verdict}); parts in ms: {colour['parts_ms']}")
EOF
done
exit $status
