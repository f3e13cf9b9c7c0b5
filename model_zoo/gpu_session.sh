#!/usr/bin/env bash
# One lent-GPU session for the model zoo (issue 16): train the `large` and `small`
# sizes side by side for a fixed wall-clock budget on the packed training split, then
# time both on the GPU (bf16, viewport-sized batches of windows). Everything the
# session produces goes to $OUT: fp16 weights (final and pixel-phase), the small
# model's full checkpoint (to resume on CPU), logs and the bench table.
#
#   .venv/bin/python -m model_zoo.datapack .pack     # here, once: the training split
#   OUT=out/gpu bash model_zoo/gpu_session.sh 300    # there: budget in seconds
#
# BUDGET is per model; both train at once. A CPU dry run of the same steps:
#   OUT=/tmp/g DEVICE=cpu PY=.venv/bin/python LARGE=tiny SMALL=tiny BENCH_LR=64 bash model_zoo/gpu_session.sh 20
set -euo pipefail
budget=${1:-300}
: "${OUT:?set OUT to the folder that comes back}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PACK=${PACK:-.pack}
LARGE=${LARGE:-large}
SMALL=${SMALL:-small}
BENCH_LR=${BENCH_LR:-1024}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } | tee "$OUT/machine.txt"

# Hard stop a little after the budget: probing and the GAN phase are estimates.
common=(--data-pack "$PACK" --device "$DEVICE" --sampler device --time-budget "$budget"
        --deadline "$((budget + 40))" --no-progress --ckpt-every 1000)
$PY -m model_zoo.train --arch "$LARGE" --batch-size 48 --lr-size 48 --lr 5e-4 "${common[@]}" \
    --out-dir /tmp/train/large --export "$OUT/sr-cascade-large.pt" >"$OUT/train-large.log" 2>&1 &
large=$!
$PY -m model_zoo.train --arch "$SMALL" --batch-size 32 --lr-size 48 --lr 2e-3 "${common[@]}" \
    --out-dir /tmp/train/small --export "$OUT/sr-cascade-small.pt" >"$OUT/train-small.log" 2>&1 &
small=$!
status=0
wait $large || status=$?
wait $small || status=$?
cp /tmp/train/small/last.pt "$OUT/small-last.pt" 2>/dev/null || true
tail -n 12 "$OUT/train-large.log" "$OUT/train-small.log"

gpu=only; [ "$DEVICE" = cpu ] && gpu=no
$PY -m model_zoo.bench --gpu $gpu --archs small large --lr-size "$BENCH_LR" --repeats 5 --threads 8 \
    | tee "$OUT/bench.md" || status=$?
# torch.compile last, bounded: compilation can take minutes and must not cost the rest.
if [ "$DEVICE" = cuda ]; then
    timeout 100 $PY -m model_zoo.bench --gpu only --compile --archs small large --scales 4 8 \
        --lr-size "$BENCH_LR" --repeats 5 | tee "$OUT/bench-compiled.md" || true
fi
exit $status
