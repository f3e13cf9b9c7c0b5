#!/usr/bin/env bash
# One lent-GPU session for the model zoo (issue 16): fine-tune the default `small` model
# and train the `large` size side by side for a fixed wall-clock budget on the packed
# training split, with the LR codecs storage holds (--lr-mix avif: AVIF q70 first, as
# ingest writes it), then time both on the GPU (bf16, viewport-sized batches of windows).
# Everything the session produces goes to $OUT: fp16 weights, the small model's full
# checkpoint (to resume on CPU), logs and the bench tables (8 files: what one call can
# bring back).
#
# The GPU image has torch, numpy, scipy, pillow, scikit-image and tifffile but not
# imagecodecs, pydantic or OpenSlide, which the AVIF round trip needs (it encodes with
# slide_io's own tile settings, and importing slide_io loads them). Prepared here, once
# per checkout (git-ignored; carried with the call: 58 MB, 63 MiB with the tree):
#   bash model_zoo/prepare_gpu.sh    # .pack: the training split; .gpu: a slim imagecodecs
#                                    # (avif + jpegxl) and cp312 wheels of the rest
#   OUT=out/gpu bash model_zoo/gpu_session.sh 330   # there: budget in seconds
#   (run with carry [".pack", ".gpu"])
#
# BUDGET is per model; both train at once. Without AVIF there the mix falls back to JPEG
# XL, then to JPEG. A CPU dry run of the same steps:
#   OUT=/tmp/g DEVICE=cpu PY=.venv/bin/python LARGE=tiny SMALL=tiny INIT= BENCH_LR=64 bash model_zoo/gpu_session.sh 20
set -euo pipefail
budget=${1:-330}
: "${OUT:?set OUT to the folder that comes back}"
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
PACK=${PACK:-.pack}
LARGE=${LARGE:-large}
SMALL=${SMALL:-small}
INIT=${INIT-sr-cascade-small-psnr}  # the small model starts from the shipped weights
BENCH_LR=${BENCH_LR:-1024}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
# Only what this Python lacks (a dry run here has it all; the cp312 wheels would not load).
mkdir -p /tmp/site
WHEELS=${WHEELS:-.gpu/wheels}
if ! $PY -c "import pydantic, openslide" 2>/dev/null && compgen -G "$WHEELS/*.whl" >/dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$WHEELS"/*.whl
fi
if ! $PY -c "import imagecodecs" 2>/dev/null && [ -f .gpu/imagecodecs-slim.tar.xz ]; then
    tar -C /tmp/site -xJf .gpu/imagecodecs-slim.tar.xz
fi
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# The LR mix: the best codec whose round trip works here, exactly as training will call it.
codec_ok() {
    $PY -c "import numpy as np; from model_zoo.degradation import $1; $1(np.zeros((16, 16, 3), np.uint8), $2)" \
        && echo "$1 ok"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} >"$OUT/machine.txt" 2>&1
if codec_ok avif_roundtrip 70 >>"$OUT/machine.txt" 2>&1; then mix=avif
elif codec_ok jpegxl_roundtrip 1.0 >>"$OUT/machine.txt" 2>&1; then mix=jxl
else mix=stored
fi
echo "LR mix: $mix" >>"$OUT/machine.txt"
cat "$OUT/machine.txt"

# Hard stop a little after the budget: probing is an estimate. Pixel phase only: the
# fidelity floors are PSNR/SSIM, and the adversarial variant costs ~0.1 dB.
common=(--data-pack "$PACK" --device "$DEVICE" --sampler device --lr-mix "$mix" --time-budget "$budget"
        --gan-share 0 --deadline "$((budget + 40))" --no-progress --ckpt-every 1000)
$PY -m model_zoo.train --arch "$LARGE" --batch-size 48 --lr-size 48 --lr 5e-4 "${common[@]}" \
    --out-dir /tmp/train/large --export "$OUT/sr-cascade-large.pt" >"$OUT/train-large.log" 2>&1 &
large=$!
$PY -m model_zoo.train --arch "$SMALL" --batch-size 64 --lr-size 48 --lr 4e-4 ${INIT:+--init-from "$INIT"} \
    "${common[@]}" --out-dir /tmp/train/small --export "$OUT/sr-cascade-small.pt" >"$OUT/train-small.log" 2>&1 &
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
    timeout 90 $PY -m model_zoo.bench --gpu only --compile --archs small large --scales 4 8 \
        --lr-size "$BENCH_LR" --repeats 5 | tee "$OUT/bench-compiled.md" || true
fi
exit $status
