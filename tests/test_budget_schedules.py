"""The scheduler's decode plan (what each step runs, known before the decode) and its budget_schedules table."""

import pytest
import torch

from mgnt_hf import MGNTScheduler, count_forward_flops
from mgnt_hf.scheduling_mgnt import check_budget_schedules

ENTRY = dict(max_gflops_per_image=4.0, width_schedule=[[0.25, 2], [1.0, 2]], num_inference_steps=4, use_cache=True,
             gflops_per_image=3.5, classifier_fid=2.0, class_accuracy=0.95)


@pytest.mark.parametrize("schedule,steps,use_cache,refresh", [
    ("magnets", None, True, None), ("magnets", 8, True, None), ("magnets", 12, False, None),
    ("maskgit", 12, True, None), ("maskgit", 3, True, None), ([[0.125, 2], [0.5, 3], [1.0, 3]], None, True, 2),
    ([[0.25, 16]], None, True, None),
])
def test_the_decode_plan_is_what_the_pipeline_runs_and_counts(tiny_pipeline, schedule, steps, use_cache, refresh):
    output = tiny_pipeline([0, 1], num_inference_steps=steps, width_schedule=schedule, use_cache=use_cache,
                           cache_refresh_interval=refresh, generator=torch.Generator().manual_seed(0),
                           output_type="latent")
    config = tiny_pipeline.transformer.config
    scheduler = tiny_pipeline.scheduler
    scheduler.set_timesteps(steps, schedule)
    plan = scheduler.decode_plan(config.num_grid_tokens, use_cache=use_cache, cache_refresh_interval=refresh)
    assert [full for _, full, _ in plan] == output.full_passes
    assert [config.width_at(fraction) for fraction, _, _ in plan] == output.widths
    # Guidance on (the scheduler's default 2.0): both branches, batch 2 per image.
    flops = sum(count_forward_flops(config, config.width_at(fraction), batch_size=2,
                                    num_active_tokens=None if full else num_run) for fraction, full, num_run in plan)
    assert flops / 1e9 == pytest.approx(output.gflops_per_image, rel=1e-12)


def test_without_the_cache_every_step_is_a_full_pass_over_every_token():
    scheduler = MGNTScheduler()
    scheduler.set_timesteps(12)
    assert all(full and run == 64 for _, full, run in scheduler.decode_plan(64, use_cache=False))


def test_budget_schedules_are_stored_in_the_config_and_survive_save_and_load(tmp_path):
    scheduler = MGNTScheduler(budget_schedules=[ENTRY])
    scheduler.save_pretrained(tmp_path)
    loaded = MGNTScheduler.from_pretrained(tmp_path)
    assert loaded.config.budget_schedules == [ENTRY]
    assert MGNTScheduler().config.budget_schedules is None


@pytest.mark.parametrize("change,message", [
    ({"use_cache": 1}, r"budget_schedules\[0\].use_cache must be True or False"),
    ({"max_gflops_per_image": 0}, r"budget_schedules\[0\].max_gflops_per_image must be a finite number > 0"),
    ({"num_inference_steps": 0}, r"budget_schedules\[0\].num_inference_steps must be a positive integer"),
    ({"class_accuracy": 95.0}, r"budget_schedules\[0\].class_accuracy must be a finite number >= 0 and <= 1"),
    ({"width_schedule": [[0.0, 2]]}, r"width_schedule fraction 0.0 must be a number in \(0, 1\]"),
    ({"extra": 1}, r"budget_schedules\[0\] must be a dict with exactly the keys"),
])
def test_bad_budget_entries_are_refused_naming_the_entry(change, message):
    with pytest.raises(ValueError, match=message):
        check_budget_schedules([{**ENTRY, **change}])


def test_an_empty_table_is_refused():
    with pytest.raises(ValueError, match="budget_schedules must be None or a non-empty list"):
        MGNTScheduler(budget_schedules=[])


# ---------------------------------------------------------------- the pipeline's compute budgets

def with_table(pipe, entries):
    pipe.scheduler = MGNTScheduler.from_config(pipe.scheduler.config, budget_schedules=entries)
    return pipe


def table_for(pipe):
    """Three entries: cheap and poor, mid and best, expensive and worse than mid."""
    schedules = [([[0.125, 4]], 4, True, 9.0), ([[0.25, 3], [1.0, 3]], 6, True, 2.0), ([[1.0, 12]], 12, False, 3.0)]
    entries = []
    for schedule, steps, use_cache, fid in schedules:
        gflops = pipe.planned_gflops_per_image(steps, schedule, use_cache)
        entries.append(dict(max_gflops_per_image=gflops, width_schedule=schedule, num_inference_steps=steps,
                            use_cache=use_cache, gflops_per_image=gflops, classifier_fid=fid, class_accuracy=0.9))
    return entries


def labels_out(pipe, **kwargs):
    return pipe([0, 2], generator=torch.Generator().manual_seed(0), output_type="latent", **kwargs)


def test_planned_gflops_equal_what_the_call_reports(tiny_pipeline):
    for kwargs in (dict(), dict(width_schedule="maskgit", use_cache=False), dict(num_inference_steps=5),
                   dict(guidance_scale=1.0, width_schedule=[[0.5, 3], [1.0, 2]])):
        assert tiny_pipeline.planned_gflops_per_image(**kwargs) == pytest.approx(
            labels_out(tiny_pipeline, **kwargs).gflops_per_image, rel=1e-12)


def test_a_budget_runs_the_best_stored_entry_that_fits(tiny_pipeline):
    entries = table_for(tiny_pipeline)
    pipe = with_table(tiny_pipeline, entries)
    expensive = entries[2]["gflops_per_image"]
    output = labels_out(pipe, max_gflops_per_image=expensive)  # all three fit: the mid one has the lowest cFID
    explicit = labels_out(pipe, width_schedule=entries[1]["width_schedule"], num_inference_steps=6, use_cache=True)
    assert torch.equal(output.images, explicit.images) and output.widths == explicit.widths
    assert output.gflops_per_image <= expensive
    cheap = entries[0]["gflops_per_image"]
    only_cheap = labels_out(pipe, max_gflops_per_image=cheap * 1.0001)
    assert only_cheap.widths == [8] * 4 and only_cheap.gflops_per_image <= cheap * 1.0001


def test_a_budget_is_costed_at_the_calls_guidance(tiny_pipeline):
    entries = table_for(tiny_pipeline)
    pipe = with_table(tiny_pipeline, entries)
    # Without guidance only one branch runs: the full-width entry then fits half its guided cost.
    budget = entries[2]["gflops_per_image"] / 2
    output = labels_out(pipe, max_gflops_per_image=budget, guidance_scale=1.0)
    assert output.gflops_per_image <= budget
    assert pipe.budget_schedule(budget, guidance_scale=1.0) == pipe.budget_schedule(budget * 2)


def test_a_budget_below_the_cheapest_entry_names_the_cheapest(tiny_pipeline):
    entries = table_for(tiny_pipeline)
    pipe = with_table(tiny_pipeline, entries)
    cheapest = entries[0]["gflops_per_image"]
    with pytest.raises(ValueError, match=rf"below the cheapest stored budget schedule \({cheapest:.4g} GFLOPs"):
        labels_out(pipe, max_gflops_per_image=cheapest / 2)


def test_a_budget_without_a_table_says_how_to_make_one(tiny_pipeline):
    with pytest.raises(ValueError, match="has none; make one with `mgnt search-schedule PIPELINE --budgets"):
        labels_out(tiny_pipeline, max_gflops_per_image=100.0)


@pytest.mark.parametrize("kwargs", [dict(width_schedule="maskgit"), dict(num_inference_steps=4), dict(use_cache=False)])
def test_a_budget_with_an_explicit_schedule_is_refused(tiny_pipeline, kwargs):
    pipe = with_table(tiny_pipeline, table_for(tiny_pipeline))
    with pytest.raises(ValueError, match="max_gflops_per_image chooses the schedule; it cannot be combined"):
        labels_out(pipe, max_gflops_per_image=100.0, **kwargs)


@pytest.mark.parametrize("budget", [0, -1.0, float("nan"), True])
def test_bad_budgets_are_refused(tiny_pipeline, budget):
    pipe = with_table(tiny_pipeline, table_for(tiny_pipeline))
    with pytest.raises(ValueError, match="max_gflops_per_image must be a finite number"):
        labels_out(pipe, max_gflops_per_image=budget)


def test_a_table_changes_nothing_about_calls_without_a_budget(tiny_pipeline):
    before = labels_out(tiny_pipeline).images
    with_table(tiny_pipeline, table_for(tiny_pipeline))
    assert torch.equal(labels_out(tiny_pipeline).images, before)
