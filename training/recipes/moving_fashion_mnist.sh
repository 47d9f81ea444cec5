#!/usr/bin/env bash
# Train a video pipeline on Moving Fashion-MNIST, the offline stand-in for UCF101 / Kinetics600: 16 grayscale
# 64x64 frames -> 4x8x8 tokens (the f=8 preset). A causal video tokenizer, then the nested transformer trained
# for class-conditional generation and, on half of the examples, frame prediction from the first 4 frames. The
# defaults are the values the first shipped video model (up to commit 0ce6862) was trained with on a 2-core
# CPU, except the transformer's position embeddings: the config asks for factorised t/h/w tables
# (docs/video_positions.md). The shipped pipeline since 2026-12-07 has the f=4 tokenizer (4x16x16 tokens,
# TOKENIZER_FROM below continues it) and a transformer trained on its codes in five runs, whose commands are in
# docs/video_f4_training.md. Environment overrides: DATA, RUN, SOURCE_DIR, NUM_TRAIN, NUM_TEST,
# TOKENIZER_STEPS, TOKENIZER_LR, TOKENIZER_WARMUP, TOKENIZER_SEED, TOKENIZER_SECONDS (wall-clock cap; the lr
#   schedule still spans TOKENIZER_STEPS, and RESUME=1 continues it),
#   VQ_CONFIG (the new tokenizer's shape: a preset or a JSON file; default moving-fashion-mnist, x8 in space;
#     training/ablations/video_tokenizer/space4.json is the shipped tokenizer's x4 shape),
#   TOKENIZER_FROM (a saved tokenizer, e.g. pipelines/mgnt-moving-fashion-mnist/vqvae: continue training it
#     instead of starting from VQ_CONFIG; its config is kept, so the two are exclusive),
#   TOKENIZER_ONLY=1 (stop after the tokenizer: a new tokenizer's codes need a transformer trained on them),
#   TRANSFORMER_STEPS, TRANSFORMER_BATCH, TRANSFORMER_SECONDS (wall-clock cap),
#   MIXED_PRECISION (tokenizer: bf16|no; default: chosen from the hardware as in fashion_mnist.sh),
#   RESUME=1 (continue interrupted runs from their latest checkpoints), ACCELERATE_ARGS (e.g. "--cpu").
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/moving-fashion-mnist}
RUN=${RUN:-runs/moving-fashion-mnist}
SOURCE_DIR=${SOURCE_DIR:-/usr/share/datasets/fashion-mnist}
TOKENIZER_STEPS=${TOKENIZER_STEPS:-1400}
TRANSFORMER_STEPS=${TRANSFORMER_STEPS:-1300}
TOKENIZER_LR=${TOKENIZER_LR:-1e-3}
TOKENIZER_WARMUP=${TOKENIZER_WARMUP:-100}
TOKENIZER_SEED=${TOKENIZER_SEED:-0}
TRANSFORMER_BATCH=${TRANSFORMER_BATCH:-64}
RESUME_ARGS=()
[ "${RESUME:-0}" = 1 ] && RESUME_ARGS=(--resume_from_checkpoint latest)
if [ -n "${TOKENIZER_FROM:-}" ]; then
  if [ -n "${VQ_CONFIG:-}" ]; then
    echo "VQ_CONFIG=$VQ_CONFIG and TOKENIZER_FROM=$TOKENIZER_FROM: a continued tokenizer keeps its own config; set one" >&2
    exit 2
  fi
  TOKENIZER_MODEL_ARGS=(--pretrained_vqvae_name_or_path "$TOKENIZER_FROM")
  echo "tokenizer: continuing from $TOKENIZER_FROM"
else
  TOKENIZER_MODEL_ARGS=(--vq_config "${VQ_CONFIG:-moving-fashion-mnist}")
fi
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no ${ACCELERATE_ARGS:-})

source training/recipes/choose_precision.sh  # the recipe runs from the repository root
choose_precision "tokenizer mixed precision"

[ -f "$DATA/dataset_dict.json" ] || python training/prepare_moving_fashion_mnist.py --source_dir "$SOURCE_DIR" \
  --output_dir "$DATA" --num_train "${NUM_TRAIN:-12000}" --num_test "${NUM_TEST:-1000}" --seed 0

SECONDS=0
"${LAUNCH[@]}" --mixed_precision "$MIXED_PRECISION" training/train_tokenizer.py --dataset_name "$DATA" \
  "${TOKENIZER_MODEL_ARGS[@]}" --output_dir "$RUN/tokenizer" --train_batch_size 8 --learning_rate "$TOKENIZER_LR" \
  --lr_scheduler cosine --lr_warmup_steps "$TOKENIZER_WARMUP" --max_train_steps "$TOKENIZER_STEPS" \
  --checkpointing_steps 200 --checkpoints_total_limit 2 --validation_steps 200 --num_validation_images 3 \
  --max_eval_samples 200 --skip_image_check --seed "$TOKENIZER_SEED" "${RESUME_ARGS[@]}" \
  ${TOKENIZER_SECONDS:+--max_train_seconds "$TOKENIZER_SECONDS"}
echo "tokenizer: ${SECONDS}s"
[ "${TOKENIZER_ONLY:-0}" = 1 ] && exit 0

SECONDS=0
# float32: on the CPU bf16 autocast gave this small transformer no speed-up (measured), and fp32 avoids its rounding.
"${LAUNCH[@]}" --mixed_precision no training/train_mgnt.py --vqvae_name_or_path "$RUN/tokenizer" \
  --dataset_name "$DATA" --transformer_config training/configs/mgnt-moving-fashion-mnist.json \
  --context_frames 4 --context_probability 0.5 --output_dir "$RUN/mgnt" --train_batch_size "$TRANSFORMER_BATCH" \
  --learning_rate 1e-3 --lr_warmup_steps 100 --max_train_steps "$TRANSFORMER_STEPS" --use_ema --ema_decay 0.999 \
  --checkpointing_steps 250 --checkpoints_total_limit 1 --validation_steps 500 --report_to none --seed 0 \
  "${RESUME_ARGS[@]}" ${TRANSFORMER_SECONDS:+--max_train_seconds "$TRANSFORMER_SECONDS"}
echo "transformer: ${SECONDS}s"
