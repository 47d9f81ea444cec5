"""Mask schedules shared by training and decoding."""

import math

import pytest
import torch

from mgnt_hf import MGNTConfig
from mgnt_hf.masking import MASK_SCHEDULES, mask_ratio, num_masked_after_step, training_mask_counts


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_schedules_start_fully_masked_and_end_empty(schedule):
    assert mask_ratio(schedule, 0.0) == pytest.approx(1.0)
    assert mask_ratio(schedule, 1.0) == pytest.approx(0.0, abs=1e-12)
    ratios = mask_ratio(schedule, torch.linspace(0, 1, 50))
    assert bool((ratios[1:] <= ratios[:-1]).all())


def test_cosine_decoding_counts_follow_the_design_formula():
    expected = [math.floor(256 * math.cos(math.pi / 2 * (t + 1) / 12)) for t in range(11)] + [0]
    assert [num_masked_after_step("cosine", t, 12, 256) for t in range(12)] == expected


def test_exact_products_are_not_lost_to_float_rounding():
    # floor(12 * (1 - 5/12)) is 7; in floats 12 * 0.58333 evaluates just below 7.
    assert [num_masked_after_step("linear", t, 12, 12) for t in range(12)] == list(range(11, -1, -1))


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_every_step_reveals_at_least_one_token_when_steps_equal_tokens(schedule):
    counts = [16] + [num_masked_after_step(schedule, t, 16, 16) for t in range(16)]
    assert all(before - after == 1 for before, after in zip(counts, counts[1:]))


def test_training_counts_are_at_least_one_and_at_most_all():
    counts = training_mask_counts("cosine", torch.tensor([0.0, 0.5, 1.0]), 64)
    assert counts.tolist() == [64, math.ceil(64 * math.cos(math.pi / 4)), 1]


def test_unknown_schedule_raises():
    with pytest.raises(ValueError, match=r"mask_schedule must be one of 'cosine', 'arccos', 'linear'; got 'square'"):
        mask_ratio("square", 0.5)


def test_config_without_names_names_every_class():
    config = MGNTConfig(num_classes=5, codebook_size=16, token_grid=(2, 2), hidden_size=32, num_attention_heads=4,
                        intermediate_size=64, nested_widths=(16, 32))
    assert len(config.id2label) == 5
