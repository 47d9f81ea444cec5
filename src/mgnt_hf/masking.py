"""Mask schedules shared by training (how much to mask) and decoding (how much stays masked).

A schedule maps progress `r` in [0, 1] to the fraction of tokens masked: 1 at r = 0, 0 at r = 1.
"""

from __future__ import annotations

import math

import torch

from .utils.checks import check_choice

MASK_SCHEDULES = ("cosine", "arccos", "linear")


def check_mask_schedule(name: str) -> str:
    """`name` if it is one of `MASK_SCHEDULES`, else `ValueError` listing them."""
    return check_choice("mask_schedule", name, MASK_SCHEDULES)


def mask_ratio(schedule: str, progress: float | torch.Tensor) -> float | torch.Tensor:
    """Fraction of tokens masked at `progress` in [0, 1] (a float, or a tensor elementwise)."""
    check_mask_schedule(schedule)
    is_tensor = isinstance(progress, torch.Tensor)
    lib = torch if is_tensor else math
    if schedule == "cosine":
        return lib.cos(progress * (math.pi / 2))
    if schedule == "arccos":
        return (lib.acos(progress) if is_tensor else math.acos(progress)) / (math.pi / 2)
    return 1 - progress


def num_masked_after_step(schedule: str, step: int, num_steps: int, num_tokens: int) -> int:
    """Tokens still masked after decoding step `step` (0-based) of `num_steps`
    (docs/design.md, "Width schedule and decoding").

    `floor(N * ratio((step + 1) / T))`, lowered so that every step reveals at least one token
    (while any remain) and none stay masked after the last step.
    """
    still_masked = num_tokens
    for current in range(step + 1):
        if current >= num_steps - 1:
            return 0
        # The epsilon absorbs float error at exact products (floor(12 * (1 - 5/12)) must be 7, not 6).
        target = math.floor(num_tokens * mask_ratio(schedule, (current + 1) / num_steps) + 1e-9)
        still_masked = max(0, min(target, still_masked - 1))
    return still_masked


def training_mask_counts(schedule: str, progress: torch.Tensor, num_tokens: int | torch.Tensor) -> torch.Tensor:
    """Tokens to mask per example for training: `ceil(ratio(r) * N)`, at least 1, for `r ~ U(0, 1)` `[B]`.

    `num_tokens` may be a `[B]` tensor (maskable tokens per example, e.g. all but the context frames')."""
    counts = torch.ceil(mask_ratio(schedule, progress) * num_tokens).long()
    if isinstance(num_tokens, torch.Tensor):
        return torch.minimum(counts.clamp(min=1), num_tokens)
    return counts.clamp(1, num_tokens)
