#!/usr/bin/env bash
# Train the shipped default pipeline (pipelines/mgnt-fashion-mnist): a VQ tokenizer, then the nested
# transformer, on Fashion-MNIST (28x28 padded to 32x32, f=4 -> 8x8 tokens). Every setting is here;
# the model card quotes the values this was run with. Environment overrides:
#   DATA (prepared dataset folder), RUN (outputs), SOURCE_DIR (Fashion-MNIST IDX files),
#   TOKENIZER_STEPS, TRANSFORMER_STEPS, TRANSFORMER_BATCH, TRANSFORMER_SECONDS (wall-clock cap),
#   MIXED_PRECISION (bf16|no), NUM_WORKERS.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-data/fashion-mnist}
RUN=${RUN:-runs/fashion-mnist}
SOURCE_DIR=${SOURCE_DIR:-/usr/share/datasets/fashion-mnist}
TOKENIZER_STEPS=${TOKENIZER_STEPS:-4000}
TRANSFORMER_STEPS=${TRANSFORMER_STEPS:-8000}
TRANSFORMER_BATCH=${TRANSFORMER_BATCH:-512}
NUM_WORKERS=${NUM_WORKERS:-4}
LAUNCH=(accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no
        --mixed_precision "${MIXED_PRECISION:-bf16}" ${ACCELERATE_ARGS:-})

[ -f "$DATA/dataset_dict.json" ] || python training/prepare_fashion_mnist.py --source_dir "$SOURCE_DIR" --output_dir "$DATA"

SECONDS=0
"${LAUNCH[@]}" training/train_tokenizer.py --dataset_name "$DATA" --vq_config fashion-mnist --resize_mode pad \
  --output_dir "$RUN/tokenizer" --train_batch_size 256 --learning_rate 1e-3 --lr_scheduler cosine \
  --lr_warmup_steps 200 --max_train_steps "$TOKENIZER_STEPS" --checkpointing_steps 2000 --checkpoints_total_limit 1 \
  --validation_steps 2000 --dataloader_num_workers "$NUM_WORKERS" --seed 0
echo "tokenizer: ${SECONDS}s"

SECONDS=0
"${LAUNCH[@]}" training/train_mgnt.py --vqvae_name_or_path "$RUN/tokenizer" --dataset_name "$DATA" \
  --resize_mode pad --random_flip --transformer_config training/configs/mgnt-fashion-mnist.json \
  --output_dir "$RUN/mgnt" --train_batch_size "$TRANSFORMER_BATCH" --learning_rate 1e-3 --lr_warmup_steps 500 \
  --max_train_steps "$TRANSFORMER_STEPS" --use_ema --ema_decay 0.999 --distillation_weight 1.0 \
  --checkpointing_steps 2000 --checkpoints_total_limit 1 --validation_steps 4000 --report_to none \
  --dataloader_num_workers "$NUM_WORKERS" --seed 0 ${TRANSFORMER_SECONDS:+--max_train_seconds "$TRANSFORMER_SECONDS"}
echo "transformer: ${SECONDS}s"
