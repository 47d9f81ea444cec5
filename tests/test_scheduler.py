"""MGNTScheduler: width schedule, cache policy and the MaskGIT step."""

import pytest
import torch

from mgnt_hf.masking import MASK_SCHEDULES, num_masked_after_step
from mgnt_hf.scheduling_mgnt import (
    WIDTH_SCHEDULE_PRESETS,
    MGNTScheduler,
    rescale_width_schedule,
    resolve_width_schedule,
)

MASK_ID = 16  # codebook of 16 codes


def decode_with_random_logits(scheduler, num_tokens, batch_size=2, seed=0, num_masked_at_start=None, sample=None):
    """Run every step with random logits; return the masked count after each step and the final sample."""
    generator = torch.Generator().manual_seed(seed)
    if sample is None:
        sample = torch.full((batch_size, num_tokens), MASK_ID)
    masked_after = []
    for step in scheduler.timesteps:
        logits = torch.randn(batch_size, num_tokens, MASK_ID, generator=generator)
        output = scheduler.step(logits, step, sample, MASK_ID, num_masked_at_start=num_masked_at_start,
                                generator=generator)
        assert torch.equal(output.revealed, (sample == MASK_ID) & (output.prev_sample != MASK_ID))
        sample = output.prev_sample
        masked_after.append((sample == MASK_ID).sum(dim=1).tolist())
    return masked_after, sample


@pytest.mark.parametrize("mask_schedule", MASK_SCHEDULES)
@pytest.mark.parametrize("num_tokens, num_steps", [(64, 12), (16, 12), (12, 12), (256, 8), (9, 3)])
def test_tokens_revealed_per_step_follow_the_mask_schedule(mask_schedule, num_tokens, num_steps):
    scheduler = MGNTScheduler(mask_schedule=mask_schedule)
    scheduler.set_timesteps(num_steps)
    masked_after, final = decode_with_random_logits(scheduler, num_tokens)
    expected = [num_masked_after_step(mask_schedule, step, num_steps, num_tokens) for step in range(num_steps)]
    assert [counts[0] for counts in masked_after] == expected
    assert [counts[1] for counts in masked_after] == expected
    before = [num_tokens] + expected[:-1]
    assert all(after < prior or prior == 0 for prior, after in zip(before, expected))  # >= 1 revealed per step
    assert masked_after[-1] == [0, 0]
    assert bool(((final >= 0) & (final < MASK_ID)).all())


def test_the_schedule_counts_from_each_images_own_unknown_tokens():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(6)
    sample = torch.full((2, 40), MASK_ID)
    sample[1, :15] = 3  # image 1 starts with 25 unknown tokens
    start = (sample == MASK_ID).sum(dim=1)
    masked_after, final = decode_with_random_logits(scheduler, 40, sample=sample, num_masked_at_start=start)
    assert [counts[0] for counts in masked_after] == [num_masked_after_step("cosine", t, 6, 40) for t in range(6)]
    assert [counts[1] for counts in masked_after] == [num_masked_after_step("cosine", t, 6, 25) for t in range(6)]
    assert torch.equal(final[1, :15], torch.full((15,), 3))  # given tokens are never changed


def test_known_tokens_are_kept_and_only_masked_positions_are_sampled():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(4)
    sample = torch.full((1, 10), MASK_ID)
    sample[0, ::2] = 5
    logits = torch.full((1, 10, MASK_ID), -30.0)
    logits[..., 7] = 30.0  # the model is sure every position is code 7
    output = scheduler.step(logits, 0, sample, MASK_ID, generator=torch.Generator().manual_seed(0))
    assert torch.equal(output.prev_sample[0, ::2], torch.full((5,), 5))
    assert set(output.prev_sample[0, 1::2].tolist()) <= {7, MASK_ID}
    assert torch.equal(output.pred_original_sample[0, 1::2], torch.full((5,), 7))


def test_zero_temperatures_take_the_argmax_and_keep_the_least_likely_masked():
    scheduler = MGNTScheduler(temperature=0.0, choice_temperature=0.0)
    scheduler.set_timesteps(2)
    logits = torch.randn(1, 8, MASK_ID, generator=torch.Generator().manual_seed(1))
    sample = torch.full((1, 8), MASK_ID)
    output = scheduler.step(logits, 0, sample, MASK_ID)
    best = logits.argmax(-1)
    keep = num_masked_after_step("cosine", 0, 2, 8)
    least_confident = torch.argsort(logits.log_softmax(-1).max(-1).values[0])[:keep]
    assert torch.equal(output.pred_original_sample, best)
    assert sorted(torch.nonzero(output.prev_sample[0] == MASK_ID)[:, 0].tolist()) == sorted(least_confident.tolist())


def test_same_generator_seed_gives_the_same_step():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    logits = torch.randn(3, 20, MASK_ID, generator=torch.Generator().manual_seed(0))
    sample = torch.full((3, 20), MASK_ID)
    first = scheduler.step(logits, 2, sample, MASK_ID, generator=torch.Generator().manual_seed(7))
    second = scheduler.step(logits, 2, sample, MASK_ID, generator=torch.Generator().manual_seed(7))
    other = scheduler.step(logits, 2, sample, MASK_ID, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first.prev_sample, second.prev_sample)
    assert not torch.equal(first.pred_original_sample, other.pred_original_sample)


def test_a_list_of_generators_equals_separate_calls():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    logits = torch.randn(3, 20, MASK_ID, generator=torch.Generator().manual_seed(0))
    sample = torch.full((3, 20), MASK_ID)
    batched = scheduler.step(logits, 1, sample, MASK_ID,
                             generator=[torch.Generator().manual_seed(seed) for seed in (10, 11, 12)])
    for image, seed in enumerate((10, 11, 12)):
        single = scheduler.step(logits[image:image + 1], 1, sample[image:image + 1], MASK_ID,
                                generator=torch.Generator().manual_seed(seed))
        assert torch.equal(batched.prev_sample[image], single.prev_sample[0])
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        scheduler.step(logits, 1, sample, MASK_ID, generator=[torch.Generator(), torch.Generator()])


def test_logits_for_active_positions_only_give_the_same_step_as_for_the_whole_grid():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    sample = torch.full((2, 12), MASK_ID)
    sample[:, :5] = 1  # known at positions 0..4
    logits = torch.randn(2, 12, MASK_ID, generator=torch.Generator().manual_seed(0))
    active = torch.arange(3, 12).expand(2, -1)  # every masked position plus two known ones
    full = scheduler.step(logits, 4, sample, MASK_ID, generator=torch.Generator().manual_seed(3))
    partial = scheduler.step(logits[:, 3:], 4, sample, MASK_ID, active_positions=active,
                             generator=torch.Generator().manual_seed(3))
    assert torch.equal(full.prev_sample, partial.prev_sample)
    with pytest.raises(ValueError, match="every masked position"):
        scheduler.step(logits[:, 6:], 4, sample, MASK_ID, active_positions=torch.arange(6, 12).expand(2, -1))


def test_grid_shaped_samples_keep_their_shape():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    sample = torch.full((2, 3, 4), MASK_ID)
    output = scheduler.step(torch.randn(2, 12, MASK_ID), 0, sample, MASK_ID, generator=torch.Generator())
    assert output.prev_sample.shape == (2, 3, 4) and output.revealed.shape == (2, 3, 4)


def test_default_schedule_runs_small_to_large_over_12_steps():
    scheduler = MGNTScheduler()
    assert scheduler.num_inference_steps == 12
    widths = scheduler.step_widths(768, (96, 192, 384, 768))
    assert widths == sorted(widths) and set(widths) == {96, 192, 384, 768}
    assert scheduler.config.width_schedule == WIDTH_SCHEDULE_PRESETS["magnets"]


@pytest.mark.parametrize("preset", sorted(WIDTH_SCHEDULE_PRESETS))
@pytest.mark.parametrize("num_steps", [4, 5, 7, 8, 11, 12, 13, 16, 24, 50])
def test_rescaling_keeps_every_segment_and_sums_to_the_steps(preset, num_steps):
    segments = WIDTH_SCHEDULE_PRESETS[preset]
    rescaled = rescale_width_schedule(resolve_width_schedule(segments), num_steps)
    assert sum(steps for _, steps in rescaled) == num_steps
    assert [fraction for fraction, _ in rescaled] == [fraction for fraction, _ in segments]
    assert all(steps >= 1 for _, steps in rescaled)
    assert rescale_width_schedule(resolve_width_schedule(segments), num_steps) == rescaled  # deterministic


def test_rescaling_to_the_schedules_own_total_changes_nothing_and_doubling_doubles():
    segments = [[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]]
    assert rescale_width_schedule(segments, 12) == segments
    assert rescale_width_schedule(segments, 24) == [[0.125, 2], [0.25, 8], [0.5, 8], [1.0, 6]]


def test_fewer_steps_than_segments_drop_segments():
    rescaled = rescale_width_schedule([[0.125, 1], [0.25, 4], [0.5, 4], [1.0, 3]], 2)
    assert sum(steps for _, steps in rescaled) == 2 and len(rescaled) == 2


def test_set_timesteps_with_a_width_schedule_override():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(6, width_schedule="half-then-full")
    assert scheduler.step_width_fractions == [0.5] * 3 + [1.0] * 3
    assert scheduler.timesteps.tolist() == list(range(6))
    scheduler.set_timesteps()
    assert scheduler.num_inference_steps == 12


def test_cache_policy():
    scheduler = MGNTScheduler()
    assert scheduler.needs_full_pass(0, 64, None, None)  # nothing cached yet
    assert not scheduler.needs_full_pass(3, 64, 64, 1)
    assert scheduler.needs_full_pass(3, 128, 64, 1)  # width changed
    assert scheduler.needs_full_pass(3, 64, 64, 1, use_cache=False)
    assert scheduler.needs_full_pass(3, 64, 64, 1, cache_refresh_interval=2)
    assert not scheduler.needs_full_pass(2, 64, 64, 1, cache_refresh_interval=2)
    refreshing = MGNTScheduler(cache_refresh_interval=1)
    assert refreshing.needs_full_pass(2, 64, 64, 1)
    assert not refreshing.needs_full_pass(2, 64, 64, 1, cache_refresh_interval=None)


def test_guidance_schedules():
    constant = MGNTScheduler()
    constant.set_timesteps(4)
    assert [constant.guidance_scale_at(t, 3.0) for t in range(4)] == [3.0] * 4
    linear = MGNTScheduler(guidance_schedule="linear")
    linear.set_timesteps(4)
    assert [linear.guidance_scale_at(t, 3.0) for t in range(4)] == [1.5, 2.0, 2.5, 3.0]


def test_config_round_trip(tmp_path):
    scheduler = MGNTScheduler(width_schedule="half-then-full", cache_refresh_interval=3, mask_schedule="arccos",
                              temperature=0.5, guidance_schedule="linear")
    scheduler.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = MGNTScheduler.from_pretrained(tmp_path)
    for name in ("width_schedule", "cache_refresh_interval", "mask_schedule", "temperature", "guidance_schedule",
                 "use_cache", "choice_temperature", "guidance_scale"):
        assert loaded.config[name] == scheduler.config[name], name
    assert loaded.config.width_schedule == [[0.5, 6], [1.0, 6]]  # the segments, not the preset name


def test_widths_that_are_not_nested_raise():
    scheduler = MGNTScheduler(width_schedule=[[0.3, 4], [1.0, 4]])
    with pytest.raises(ValueError, match=r"not one of nested_widths \[96, 192, 384, 768\]"):
        scheduler.step_widths(768, (96, 192, 384, 768))


@pytest.mark.parametrize("width_schedule, message", [
    ([], "non-empty"),
    ("fastest", "unknown width_schedule preset 'fastest'"),
    ([[0.5, 6, 1]], r"not a \[width_fraction, num_steps\] pair"),
    ([0.5, 6], r"not a \[width_fraction, num_steps\] pair"),
    ([[0.0, 6]], r"fraction 0.0 must be a number in \(0, 1\]"),
    ([[1.5, 6]], r"fraction 1.5"),
    ([[0.5, 0]], "width_schedule step count must be a positive integer, got 0"),
    ([[0.5, 2.5]], "step count must be a positive integer, got 2.5"),
    ([[True, 2]], "fraction True"),
])
def test_malformed_width_schedules_raise(width_schedule, message):
    with pytest.raises(ValueError, match=message):
        MGNTScheduler(width_schedule=width_schedule)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mask_schedule="square"), "mask_schedule must be one of .*; got 'square'"),
    (dict(guidance_schedule="cosine"), "guidance_schedule must be one of 'constant', 'linear'; got 'cosine'"),
    (dict(temperature=-1.0), "temperature must be a finite number >= 0"),
    (dict(choice_temperature=float("nan")), "choice_temperature"),
    (dict(cache_refresh_interval=0), "cache_refresh_interval must be a positive integer or None, got 0"),
    (dict(use_cache="yes"), "use_cache must be True or False"),
])
def test_bad_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MGNTScheduler(**kwargs)


@pytest.mark.parametrize("num_steps", [0, -3, 2.0])
def test_non_positive_step_counts_raise(num_steps):
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        MGNTScheduler().set_timesteps(num_steps)


def test_a_step_outside_the_decode_raises():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(3)
    with pytest.raises(ValueError, match="timestep 3 is not a step of this decode"):
        scheduler.step(torch.randn(1, 4, MASK_ID), 3, torch.full((1, 4), MASK_ID), MASK_ID)
