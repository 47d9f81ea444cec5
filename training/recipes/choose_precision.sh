# Sourced by the recipes: `choose_precision LABEL` sets MIXED_PRECISION and says why. bf16 autocast only where the
# hardware has bf16 matmuls (a CUDA device that supports it, a CPU with AMX or avx512_bf16; on a 2-core AMX Xeon
# the video tokenizer trained 2.2x faster than in fp32); elsewhere it is about 4x slower than fp32. An explicit
# MIXED_PRECISION wins.
choose_precision() {
  local label=$1 chosen reason
  read -r chosen reason < <(python -c \
    "from mgnt_hf.utils.hardware import default_mixed_precision as d; p, r = d(); print(p, r)")
  if [ -n "${MIXED_PRECISION:-}" ]; then
    echo "$label: $MIXED_PRECISION (set by MIXED_PRECISION; the hardware default would be $chosen: $reason)"
  else
    MIXED_PRECISION=$chosen
    echo "$label: $MIXED_PRECISION (chosen from the hardware: $reason)"
  fi
}
