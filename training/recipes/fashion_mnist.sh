#!/usr/bin/env bash
# Train the shipped default pipeline (pipelines/mgnt-fashion-mnist): a VQ tokenizer, then the nested
# transformer, on Fashion-MNIST (28x28 padded to 32x32, f=4 -> 8x8 tokens). Every setting is here;
# the model card records the commands each shipped run actually used. Environment overrides:
#   DATA (prepared dataset folder), RUN (outputs), SOURCE_DIR (Fashion-MNIST IDX files),
#   TOKENIZER_STEPS, TRANSFORMER_STEPS, TRANSFORMER_BATCH, TRANSFORMER_LR, TRANSFORMER_WARMUP,
#   TRANSFORMER_SECONDS (wall-clock cap), EMA_DECAY, CHECKPOINT_STEPS, VALIDATION_STEPS, NUM_WORKERS, SEED,
#   MIXED_PRECISION (bf16|no; default: chosen from the hardware, see below),
#   CONTINUE_FROM (a saved pipeline, e.g. pipelines/mgnt-fashion-mnist: keep its tokenizer and continue
#     training its transformer instead of starting from scratch; its EMA then averages with EMA_DECAY from the
#     second step instead of diffusers' (1 + t) / (10 + t) warm-up, which exists to forget a random start),
#   RESUME=1 (continue an interrupted run from the latest checkpoint in $RUN/mgnt).
# Runs in the background as well as in the foreground: checkpoints are atomic, and re-running with RESUME=1
# after an interruption loses at most the steps since the last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/fashion-mnist}
RUN=${RUN:-runs/fashion-mnist}
SOURCE_DIR=${SOURCE_DIR:-/usr/share/datasets/fashion-mnist}
TOKENIZER_STEPS=${TOKENIZER_STEPS:-4000}
TRANSFORMER_STEPS=${TRANSFORMER_STEPS:-8000}
TRANSFORMER_BATCH=${TRANSFORMER_BATCH:-512}
TRANSFORMER_LR=${TRANSFORMER_LR:-1e-3}
TRANSFORMER_WARMUP=${TRANSFORMER_WARMUP:-500}
EMA_DECAY=${EMA_DECAY:-0.999}
NUM_WORKERS=${NUM_WORKERS:-4}
SEED=${SEED:-0}
CHECKPOINT_STEPS=${CHECKPOINT_STEPS:-500}
VALIDATION_STEPS=${VALIDATION_STEPS:-4000}
RESUME_ARGS=()
[ "${RESUME:-0}" = 1 ] && RESUME_ARGS=(--resume_from_checkpoint latest)
CONTINUE_FROM=${CONTINUE_FROM:-}

source training/recipes/choose_precision.sh  # the recipe runs from the repository root
choose_precision "mixed precision"
DEVICE_ARGS=()
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || DEVICE_ARGS=(--cpu)
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no "${DEVICE_ARGS[@]}"
        --mixed_precision "$MIXED_PRECISION" ${ACCELERATE_ARGS:-})

[ -f "$DATA/dataset_dict.json" ] || python training/prepare_fashion_mnist.py --source_dir "$SOURCE_DIR" --output_dir "$DATA"

if [ -n "$CONTINUE_FROM" ]; then
  TOKENIZER="$CONTINUE_FROM/vqvae"
  MODEL_ARGS=(--pretrained_transformer_name_or_path "$CONTINUE_FROM/transformer")
  EMA_ARGS=(--ema_min_decay "$EMA_DECAY")
  echo "continuing from $CONTINUE_FROM (its tokenizer is kept)"
else
  TOKENIZER="$RUN/tokenizer"
  MODEL_ARGS=(--transformer_config training/configs/mgnt-fashion-mnist.json)
  EMA_ARGS=()
  SECONDS=0
  "${LAUNCH[@]}" training/train_tokenizer.py --dataset_name "$DATA" --vq_config fashion-mnist --resize_mode pad \
    --output_dir "$TOKENIZER" --train_batch_size 256 --learning_rate 1e-3 --lr_scheduler cosine \
    --lr_warmup_steps 200 --max_train_steps "$TOKENIZER_STEPS" --checkpointing_steps 2000 --checkpoints_total_limit 1 \
    --validation_steps 2000 --dataloader_num_workers "$NUM_WORKERS" --seed "$SEED"
  echo "tokenizer: ${SECONDS}s"
fi

SECONDS=0
"${LAUNCH[@]}" training/train_mgnt.py --vqvae_name_or_path "$TOKENIZER" --dataset_name "$DATA" \
  --resize_mode pad --random_flip "${MODEL_ARGS[@]}" \
  --output_dir "$RUN/mgnt" --train_batch_size "$TRANSFORMER_BATCH" --learning_rate "$TRANSFORMER_LR" \
  --lr_warmup_steps "$TRANSFORMER_WARMUP" --max_train_steps "$TRANSFORMER_STEPS" \
  --use_ema --ema_decay "$EMA_DECAY" "${EMA_ARGS[@]}" --distillation_weight 1.0 \
  --checkpointing_steps "$CHECKPOINT_STEPS" --checkpoints_total_limit 2 \
  --validation_steps "$VALIDATION_STEPS" --report_to none \
  --dataloader_num_workers "$NUM_WORKERS" --seed "$SEED" ${TRANSFORMER_SECONDS:+--max_train_seconds "$TRANSFORMER_SECONDS"} \
  "${RESUME_ARGS[@]}"
echo "transformer: ${SECONDS}s"
