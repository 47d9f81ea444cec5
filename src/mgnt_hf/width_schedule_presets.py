"""The named width schedules of `MGNTScheduler` (`width_schedule="magnets"`, ...) and the default.

Plain data without imports, so `mgnt --help` can list them without loading torch; `scheduling_mgnt.py` resolves and
checks them.
"""

# Candidate width schedules, `[[fraction of hidden_size, num_steps], ...]` over 12 steps. FLOP ratios are
# MaskGIT baseline / schedule, both with classifier-free guidance, from the analytic
# `count_forward_flops` summed over the steps (cosine mask schedule, cache rebuilt only on width changes),
# for `preset_config("B")` (16x16 tokens, D=768, 12 layers, 1024 codes) and a Fashion-MNIST-shaped model
# (8x8 tokens, D=256, 8 layers, 8 heads, MLP 4D, 512 codes, 10 classes). Computed, not measured on a
# trained model: quality is tuned later.
#
#   name             schedule                                     B cached    B no cache  FM cached  FM no cache
#   maskgit          [[1.0, 12]]                                  1.34x       1.00x       1.36x      1.00x
#   half-then-full   [[0.5, 6], [1.0, 6]]                         2.42x       1.58x       2.46x      1.58x
#   magnets          [[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]]  4.34x       2.74x       4.40x      2.74x
#   magnets-uniform  [[0.125, 3], [0.25, 3], [0.5, 3], [1.0, 3]]  4.77x       2.94x       4.83x      2.94x
#   quarter-up       [[0.25, 5], [0.5, 4], [1.0, 3]]              4.26x       2.71x       4.32x      2.71x
#
# Baseline (MaskGIT, no cache, guidance on): 1115.9 GFLOPs/image on B, 20.86 on FM; `magnets` cached: 257.0
# and 4.74. Reproduce with `count_forward_flops` (tests/test_pipeline.py checks the pipeline's count
# against torch's FlopCounterMode).
#
# Why `magnets` is the default: an earlier experiment found that schedules starting with several D/8 steps
# cost quality (while the two-width `half-then-full` matched the baseline at about 2.5x), so the default
# runs D/8 for one step only (it reveals 3 of 256 tokens), and keeps the full width for the last three
# steps, where the cosine schedule reveals the most tokens (97 of 256). Among 4-width splits of that form,
# [1, 3, 5, 3] steps gives 4.10x on B and [1, 4, 4, 3] 4.34x: the latter leaves a margin over the 4x target.
# Four full-width steps reach 4x only at [1, 5, 2, 4] (4.06x), too thin a margin. Change
# `DEFAULT_WIDTH_SCHEDULE` (or pass a preset name or a list) once a trained model says so.
WIDTH_SCHEDULE_PRESETS: dict[str, list[list]] = {
    "maskgit": [[1.0, 12]],
    "half-then-full": [[0.5, 6], [1.0, 6]],
    "magnets": [[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]],
    "magnets-uniform": [[0.125, 3], [0.25, 3], [0.5, 3], [1.0, 3]],
    "quarter-up": [[0.25, 5], [0.5, 4], [1.0, 3]],
}
DEFAULT_WIDTH_SCHEDULE = "magnets"
