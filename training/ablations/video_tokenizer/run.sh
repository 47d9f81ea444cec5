#!/usr/bin/env bash
# Video tokenizer configurations on Moving Fashion-MNIST, the same budget per row: STEPS steps of batch 8
# (lr 1e-3 after 50 warm-up steps, constant), seed 0, one process per configuration, all started together with
# one thread each. Then `mgnt evaluate-tokenizer` scores each on the first EVAL_VIDEOS test videos (PSNR, SSIM,
# the frame classifier's accuracy on reconstructed against real frames). Configurations: the *.json files here.
# Environment: DATA (prepared dataset), RUN (outputs), STEPS, EVAL_VIDEOS, CONFIGS (names, default all),
# MIXED_PRECISION (default: chosen from the hardware, as the recipes do).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
cd "$HERE/../../.."
DATA=${DATA:-data/moving-fashion-mnist}
RUN=${RUN:-runs/video-tokenizer-ablation}
STEPS=${STEPS:-600}
EVAL_VIDEOS=${EVAL_VIDEOS:-200}
CONFIGS=${CONFIGS:-base deepwide time2 space4}
if [ -z "${MIXED_PRECISION:-}" ]; then
  MIXED_PRECISION=$(python -c "from mgnt_hf.utils.hardware import default_mixed_precision as d; print(d()[0])")
fi
echo "mixed precision: $MIXED_PRECISION; $STEPS steps per configuration: $CONFIGS"
mkdir -p "$RUN"
for name in $CONFIGS; do
  ( SECONDS=0
    OMP_NUM_THREADS=1 accelerate launch --num_processes 1 --num_machines 1 --dynamo_backend no --cpu \
      --mixed_precision "$MIXED_PRECISION" training/train_tokenizer.py --dataset_name "$DATA" \
      --vq_config "$HERE/$name.json" --output_dir "$RUN/$name" --train_batch_size 8 --learning_rate 1e-3 \
      --lr_scheduler constant_with_warmup --lr_warmup_steps 50 --max_train_steps "$STEPS" \
      --checkpointing_steps 200 --checkpoints_total_limit 1 --validation_steps "$STEPS" --num_validation_images 3 \
      --max_eval_samples 200 --skip_image_check --seed 0 --resume_from_checkpoint latest > "$RUN/$name.log" 2>&1
    echo "$name: trained in ${SECONDS}s" | tee "$RUN/$name.seconds" ) &
done
wait
for name in $CONFIGS; do
  mgnt evaluate-tokenizer "$RUN/$name" --limit-real "$EVAL_VIDEOS" --threads 2 --output "$RUN/$name-eval.json" \
    2>/dev/null | grep -v "^wrote"
done
