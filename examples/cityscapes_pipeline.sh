#!/usr/bin/env bash
# The production path as the authors ran it: search -> retrain the found genotype from
# scratch -> eval -> export ONNX -> TensorRT engine (where TensorRT is) -> check -> bench ->
# video -> Triton repository.
#
#   CITYSCAPES=/data/cityscapes bash examples/cityscapes_pipeline.sh [--init-from-search]
#
# --init-from-search: a variant (ours, not the paper's): retraining starts from the weights
# the supernet left for the found network instead of from scratch.
# Every setting can be overridden from the environment (the tests run it on a tiny
# synthetic Cityscapes with small sizes). GENOTYPE=ssr-cityscapes skips the search and
# retrains the paper's published network.
set -euo pipefail

INIT=scratch
for arg in "$@"; do
  case "$arg" in
    --init-from-search) INIT=search ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
               exit 0 ;;
    *) echo "error: unknown argument $arg (the one option is --init-from-search)" >&2; exit 2 ;;
  esac
done

CITYSCAPES=${CITYSCAPES:?set CITYSCAPES to the folder holding leftImg8bit/ and gtFine/}
RUN=${RUN:-runs/cityscapes}
DEVICE=${DEVICE:-cuda}
GENOTYPE=${GENOTYPE:-}
SEARCH_SIZE=${SEARCH_SIZE:-512x1024}
SEARCH_EPOCHS=${SEARCH_EPOCHS:-200}
SEARCH_BATCH=${SEARCH_BATCH:-6}
TRAIN_SIZE=${TRAIN_SIZE:-512x1024}
TRAIN_EPOCHS=${TRAIN_EPOCHS:-300}
TRAIN_BATCH=${TRAIN_BATCH:-6}
WORKERS=${WORKERS:-4}
VIDEO=${VIDEO:-}
DATA="cityscapes:${CITYSCAPES}"
mkdir -p "$RUN"

if [ -z "$GENOTYPE" ]; then
  ssr-deploy search --data "$DATA" --out "$RUN/search" --size "$SEARCH_SIZE" \
    --epochs "$SEARCH_EPOCHS" --batch "$SEARCH_BATCH" --device "$DEVICE"
  ssr-deploy info "$RUN/search/genotype.json" --size "$TRAIN_SIZE"
  if [ "$INIT" = search ]; then
    FROM=(--init-from-search "$RUN/search")
  else
    FROM=(--genotype "$RUN/search/genotype.json")
  fi
else
  FROM=(--genotype "$GENOTYPE")
fi

ssr-deploy train "${FROM[@]}" --data "$DATA" --out "$RUN/train" --size "$TRAIN_SIZE" \
  --epochs "$TRAIN_EPOCHS" --batch "$TRAIN_BATCH" --workers "$WORKERS" --device "$DEVICE"
ssr-deploy eval --weights "$RUN/train/best.pt" --data "$DATA" --size "$TRAIN_SIZE" \
  --device "$DEVICE" --save-preds "$RUN/preds" --json > "$RUN/eval.json"

ssr-deploy export onnx "$RUN/train/best.pt" -o "$RUN/model.onnx" --size "$TRAIN_SIZE" \
  --input uint8-nhwc-bgr --output labels --dynamic-batch --max-batch 8
MODEL="$RUN/model.onnx"
if python -c "import tensorrt" 2>/dev/null; then
  ssr-deploy export engine "$RUN/model.onnx" -o "$RUN/model.engine" --timing-cache "$RUN/trt.cache"
  ssr-deploy export check "$RUN/model.engine" --against "$RUN/model.onnx" \
    --data "$CITYSCAPES/leftImg8bit/val"
  MODEL="$RUN/model.engine"
fi

ssr-deploy bench "$MODEL" --batch 1 --json "$RUN/bench.json" --plot "$RUN/bench.png"
if [ -n "$VIDEO" ]; then
  ssr-deploy video "$VIDEO" --model "$MODEL" -o "$RUN/video.mp4" --draw-fps
fi
ssr-deploy export triton "$MODEL" --repo "$RUN/triton" --max-batch 8
echo "done: $RUN (eval.json, model.onnx, bench.json, triton/)"
