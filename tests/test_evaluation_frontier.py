"""The compute frontier and the schedule search on a tiny random pipeline and classifier."""

import json

import pytest
import torch

from evaluation_helpers import make_image_classifier, make_image_pipeline, make_reference
from mgnt_hf import MGNTPipeline, MGNTScheduler
from mgnt_hf.evaluation import QualityRow
from mgnt_hf.evaluation.frontier import (
    evaluate_frontier,
    fair_comparison,
    frontier_rows,
    pareto_front,
    row_family,
    write_frontier,
)
from mgnt_hf.evaluation.schedule_search import (
    budget_candidates,
    enumerate_width_schedules,
    schedule_gflops_per_image,
    search_schedules,
    write_budget_schedules,
)


def evaluation_kwargs():
    reference, labels = make_reference()
    return dict(batch_size=6, device="cpu", reference=reference, reference_labels=labels, progress=False)


# ---------------------------------------------------------------- the rows


def test_frontier_rows_cover_maskgit_steps_single_widths_and_magnets_schedules():
    pipe = make_image_pipeline()  # widths 8/16/32/64, default schedule magnets (12 steps)
    rows = {row.name: row for row in frontier_rows(pipe)}
    for steps in (2, 3, 4, 6, 8):
        assert rows[f"maskgit-{steps}"].num_inference_steps == steps and not rows[f"maskgit-{steps}"].use_cache
        assert rows[f"maskgit-{steps}+cache"].use_cache
    assert "maskgit-12" not in rows and rows["maskgit"].num_inference_steps == 12  # the baseline keeps its name
    assert rows["maskgit"].width_schedule == ((1.0, 12),) and "maskgit-12+cache" in rows
    for width in (8, 16, 32):
        for steps in (4, 8, 12):
            assert rows[f"width-{width}-{steps}"].width_schedule == ((width / 64, steps),)
    assert rows["default-12+cache"].width_schedule == ((0.125, 1), (0.25, 4), (0.5, 4), (1.0, 3))
    assert "magnets-12+cache" not in rows  # the default is the magnets preset: listed once
    assert {"quarter-up-6+cache", "magnets-uniform-16+cache", "half-then-full-8+cache"} <= set(rows)
    assert rows["default"].width_schedule == rows["default-12+cache"].width_schedule
    assert rows["default"].num_inference_steps == 12 and rows["default"].use_cache  # what pipe(labels) runs
    assert len({row.name for row in frontier_rows(pipe)}) == len(frontier_rows(pipe))


def test_the_baseline_is_12_step_maskgit_whatever_steps_the_default_runs():
    pipe = make_image_pipeline()
    pipe.scheduler = MGNTScheduler(width_schedule=[[0.5, 4], [1.0, 4]])  # an 8-step default, as a search may set
    rows = {row.name: row for row in frontier_rows(pipe)}
    assert rows["maskgit"] == QualityRow("maskgit", ((1.0, 12),), False, num_inference_steps=12)
    assert rows["maskgit-8"].num_inference_steps == 8 and "maskgit-12" not in rows
    assert rows["default"].num_inference_steps == 8
    rows = {row.name: row for row in frontier_rows(pipe, maskgit_steps=(2, 4), baseline_steps=10)}
    assert rows["maskgit"].num_inference_steps == 10 and {"maskgit-2", "maskgit-4", "maskgit-10+cache"} <= set(rows)
    with pytest.raises(ValueError, match=r"baseline_steps \[17\] exceed the grid's 16 tokens"):
        frontier_rows(pipe, baseline_steps=17)


def test_frontier_step_counts_are_checked():
    pipe = make_image_pipeline()
    with pytest.raises(ValueError, match=r"maskgit_steps \[17\] exceed the grid's 16 tokens"):
        frontier_rows(pipe, maskgit_steps=(2, 17))
    with pytest.raises(ValueError, match="maskgit_steps entry must be a positive integer, got 0"):
        frontier_rows(pipe, maskgit_steps=(0,))


def test_row_families():
    assert [row_family(name) for name in ("maskgit", "maskgit-3+cache", "width-32-8", "width-8-4+cache",
                                          "default-12+cache", "quarter-up-6+cache", "default")] == [
        "maskgit", "maskgit", "width-32", "width-8", "magnets", "magnets", "default"]
    # The video runner's rows without a step count are the same families.
    assert [row_family(name) for name in ("width-64", "width-64+cache", "default+cache")] == [
        "width-64", "width-64", "default"]


def test_pareto_front_keeps_exactly_the_undominated_rows():
    rows = [dict(name="a", gflops_per_image=1.0, classifier_fid=5.0), dict(name="b", gflops_per_image=2.0,
            classifier_fid=3.0), dict(name="c", gflops_per_image=2.5, classifier_fid=4.0),
            dict(name="d", gflops_per_image=3.0, classifier_fid=3.0), dict(name="e", gflops_per_image=4.0,
            classifier_fid=1.0)]
    assert pareto_front(rows) == ["a", "b", "e"]  # c and d are beaten by b


def test_pareto_front_of_a_measure_where_higher_is_better_on_another_cost():
    rows = [dict(name="a", gflops_per_video=1.0, psnr=14.0), dict(name="b", gflops_per_video=2.0, psnr=16.0),
            dict(name="c", gflops_per_video=2.5, psnr=15.0), dict(name="d", gflops_per_video=3.0, psnr=16.0),
            dict(name="e", gflops_per_video=4.0, psnr=18.0)]
    assert pareto_front(rows, "psnr", "gflops_per_video", higher_is_better=True) == ["a", "b", "e"]
    # Read as lower-is-better, the cheapest row is also the best: it alone is on the front.
    assert pareto_front(rows, "psnr", "gflops_per_video") == ["a"]


def test_fair_comparison_where_higher_is_better_names_its_keys():
    rows = [dict(name="default+cache", gflops_per_video=4.0, psnr=16.0),
            dict(name="maskgit-3", gflops_per_video=4.5, psnr=15.0),
            dict(name="maskgit", gflops_per_video=16.0, psnr=15.5),
            dict(name="width-32", gflops_per_video=4.9, psnr=16.5),
            dict(name="width-16", gflops_per_video=6.0, psnr=20.0)]  # beyond 1.25x: not counted
    fair = fair_comparison(rows, "default+cache", quality_key="psnr", cost_key="gflops_per_video",
                           higher_is_better=True)
    assert fair == {"row": "default+cache", "psnr": 16.0, "gflops_per_video": 4.0, "best_competitor": "width-32",
                    "best_competitor_psnr": 16.5, "best_competitor_gflops_per_video": 4.9, "compute_margin": 1.25,
                    "beats_every_competitor": False}
    assert fair_comparison(rows[:3], "default+cache", quality_key="psnr", cost_key="gflops_per_video",
                           higher_is_better=True)["beats_every_competitor"]
    with pytest.raises(ValueError, match="no MaskGIT or single-width row to compare 'default\\+cache' with"):
        fair_comparison(rows[:1], "default+cache", quality_key="psnr", cost_key="gflops_per_video")


def test_fair_comparison_counts_every_maskgit_row_and_nearby_single_widths():
    rows = [dict(name="default-12+cache", gflops_per_image=4.0, classifier_fid=2.0),
            dict(name="maskgit-3", gflops_per_image=4.5, classifier_fid=2.5),
            dict(name="maskgit", gflops_per_image=16.0, classifier_fid=1.5),
            dict(name="width-32-12", gflops_per_image=4.9, classifier_fid=1.8),
            dict(name="width-32-16", gflops_per_image=6.0, classifier_fid=1.0)]  # beyond 1.25x: not counted
    fair = fair_comparison(rows, "default-12+cache")
    assert fair["best_competitor"] == "maskgit" and not fair["beats_every_competitor"]
    assert fair_comparison(rows[:2] + rows[3:], "default-12+cache")["best_competitor"] == "width-32-12"
    assert fair_comparison(rows[:2], "default-12+cache")["beats_every_competitor"]
    with pytest.raises(ValueError, match="no row 'nope' in the frontier"):
        fair_comparison(rows, "nope")


# ---------------------------------------------------------------- the frontier run


def rows_equal(results, first, second) -> bool:
    rows = {row["name"]: row for row in results["rows"]}
    keys = ("gflops_per_image", "classifier_fid", "class_accuracy", "step_widths")
    return all(rows[first][key] == rows[second][key] for key in keys)


@pytest.fixture(scope="module")
def frontier(tmp_path_factory):
    pipe = make_image_pipeline()
    rows = frontier_rows(pipe, maskgit_steps=(2, 12), single_width_steps=(4,), magnets_steps=(12,),
                         magnets_presets=("quarter-up",))
    results = evaluate_frontier(pipe, make_image_classifier(), rows=rows, samples_per_class=2, seed=5,
                                **evaluation_kwargs())
    return results, write_frontier(results, tmp_path_factory.mktemp("frontier"))


def test_the_frontier_marks_its_pareto_rows_and_compares_the_default(frontier):
    results, _ = frontier
    names = [row["name"] for row in results["rows"]]
    assert names[:4] == ["maskgit-2", "maskgit-2+cache", "maskgit", "maskgit-12+cache"]
    assert results["baseline"] == "maskgit"
    assert results["pareto_front"] == pareto_front(results["rows"])
    assert all(row["on_pareto_front"] == (row["name"] in results["pareto_front"]) for row in results["rows"])
    assert results["fair_comparison"]["row"] == "default"
    assert rows_equal(results, "default", "default-12+cache")
    rows = {row["name"]: row for row in results["rows"]}
    assert rows["maskgit-2"]["step_widths"] == [64, 64] and rows["width-8-4"]["step_widths"] == [8] * 4
    assert rows["maskgit"]["flops_ratio"] == 1.0 and rows["maskgit-2"]["flops_ratio"] == pytest.approx(6.0)


def test_the_frontier_rows_share_their_seeds(frontier):
    """Common random numbers: the 12-step MaskGIT row equals a separate evaluation of that row alone."""
    results, _ = frontier
    pipe = make_image_pipeline()
    alone = evaluate_frontier(pipe, make_image_classifier(), rows=[frontier_rows(pipe, maskgit_steps=(12,))[0]],
                              samples_per_class=2, seed=5, **evaluation_kwargs())
    together = {row["name"]: row for row in results["rows"]}["maskgit"]
    assert alone["rows"][0]["classifier_fid"] == together["classifier_fid"]


def test_the_frontier_writes_markdown_json_and_a_plot(frontier):
    results, paths = frontier
    assert json.loads(paths["json"].read_text())["pareto_front"] == results["pareto_front"]
    text = paths["markdown"].read_text()
    assert "| `maskgit-2` | maskgit |" in text and "Fair comparison: `default`" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- the schedule search


def test_enumeration_gives_every_non_decreasing_schedule_once():
    schedules = enumerate_width_schedules([0.5, 1.0], min_steps=2, max_steps=3)
    assert schedules == [[[1.0, 2]], [[0.5, 1], [1.0, 1]], [[0.5, 2]], [[1.0, 3]], [[0.5, 1], [1.0, 2]],
                         [[0.5, 2], [1.0, 1]], [[0.5, 3]]]
    four = enumerate_width_schedules([0.125, 0.25, 0.5, 1.0], 2, 16)
    assert len(four) == sum((t + 1) * (t + 2) * (t + 3) // 6 for t in range(2, 17))  # C(t+3, 3) per step count
    assert len({json.dumps(s) for s in four}) == len(four)
    with pytest.raises(ValueError, match="min_steps 5 must be <= max_steps 4"):
        enumerate_width_schedules([1.0], 5, 4)


def test_schedule_gflops_equal_the_pipelines_own_count():
    pipe = make_image_pipeline()
    schedule = [[0.125, 2], [0.5, 3], [1.0, 2]]
    output = pipe([0, 1], width_schedule=schedule, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert schedule_gflops_per_image(pipe, schedule, 7, True) == pytest.approx(output.gflops_per_image, rel=1e-12)


def test_budget_candidates_fit_the_budget_and_use_most_of_it():
    pipe = make_image_pipeline()
    budget = pipe.planned_gflops_per_image()  # the default schedule with its cache
    candidates = budget_candidates(pipe, budget, min_budget_use=0.8, max_candidates=10)
    assert 1 < len(candidates) <= 10
    gflops = [c["gflops_per_image"] for c in candidates]
    assert gflops == sorted(gflops) and all(0.8 * budget <= g <= budget for g in gflops)
    for candidate in candidates:
        widths = [fraction for fraction, _ in candidate["width_schedule"]]
        assert widths == sorted(widths) and 2 <= candidate["num_inference_steps"] <= 16
        assert schedule_gflops_per_image(pipe, candidate["width_schedule"], candidate["num_inference_steps"],
                                         candidate["use_cache"]) == candidate["gflops_per_image"]


def test_one_candidate_per_budget_is_the_costliest_that_fits():
    pipe = make_image_pipeline()
    budget = pipe.planned_gflops_per_image()
    every = budget_candidates(pipe, budget, min_budget_use=0.8, max_candidates=10_000)
    assert len(every) > 1
    assert budget_candidates(pipe, budget, min_budget_use=0.8, max_candidates=1) == every[-1:]


def test_the_search_confirms_on_other_seeds_and_its_table_drives_the_pipeline(tmp_path):
    pipe = make_image_pipeline()
    budgets = [pipe.planned_gflops_per_image() * scale for scale in (0.6, 1.0)]
    found = search_schedules(pipe, make_image_classifier(), budgets, search_samples_per_class=2,
                             confirm_samples_per_class=2, finalists_per_budget=2, max_candidates_per_budget=3,
                             **evaluation_kwargs())
    entries = found["budget_schedules"]
    assert [entry["max_gflops_per_image"] for entry in entries] == sorted(budgets)
    for entry, report in zip(entries, found["budgets"]):
        assert entry["gflops_per_image"] <= entry["max_gflops_per_image"]
        finalists = {f["name"]: f for f in report["finalists"]}
        assert report["winner"] in finalists and len(finalists) == 2
        # The winner is the finalist best on the confirmation seeds, and its stored numbers are those.
        assert finalists[report["winner"]]["confirm_classifier_fid"] == min(
            f["confirm_classifier_fid"] for f in finalists.values()) == entry["classifier_fid"]
        searched = sorted(report["candidates"], key=lambda c: c["search_classifier_fid"])
        assert set(finalists) == {c["name"] for c in searched[:2]}
    assert found["settings"]["search_seed"] != found["settings"]["confirm_seed"]

    pipe.save_pretrained(tmp_path)
    write_budget_schedules(tmp_path, entries)
    loaded = MGNTPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert loaded.scheduler.config.budget_schedules == entries
    assert loaded.scheduler.config.width_schedule == pipe.scheduler.config.width_schedule
    output = loaded([0], max_gflops_per_image=max(budgets), output_type="latent")
    assert output.gflops_per_image <= max(budgets)


def test_the_search_refuses_overlapping_seeds_and_budgets_nothing_fits():
    pipe = make_image_pipeline()
    with pytest.raises(ValueError, match="give overlapping seeds"):
        search_schedules(pipe, make_image_classifier(), [1.0], search_seed=0, confirm_seed=5)
    with pytest.raises(ValueError, match=r"no schedule fits budgets \[1e-09\]"):
        search_schedules(pipe, make_image_classifier(), [1e-9])


def test_writing_a_table_needs_a_saved_scheduler(tmp_path):
    with pytest.raises(OSError, match="no saved scheduler at"):
        write_budget_schedules(tmp_path, [])


# ---------------------------------------------------------------- the command line

@pytest.fixture
def saved(tmp_path):
    import numpy as np

    make_image_pipeline().save_pretrained(tmp_path / "pipeline")
    make_image_classifier().save_pretrained(tmp_path / "classifier")
    pixels, labels = make_reference()
    np.savez(tmp_path / "reference.npz", pixels=pixels.numpy(), labels=labels.numpy())
    return ["--classifier", str(tmp_path / "classifier"), "--reference-images", str(tmp_path / "reference.npz"),
            "--cache-dir", str(tmp_path / "cache"), "--batch-size", "6", "--device", "cpu"]


def test_mgnt_search_schedule_writes_the_table_and_the_default(saved, tmp_path):
    from mgnt_hf import cli

    folder = tmp_path / "pipeline"
    status = cli.main(["search-schedule", str(folder), "--budgets", "2x", "4x", "--search-samples-per-class", "1",
                       "--confirm-samples-per-class", "1", "--finalists", "1", "--max-candidates", "2", "--write",
                       "--set-default", "4x", "--output-dir", str(tmp_path / "search"), *saved])
    assert status == 0
    found = json.loads((tmp_path / "search" / "search.json").read_text())
    maskgit = found["maskgit_gflops_per_image"]
    entries = found["budget_schedules"]
    assert [entry["max_gflops_per_image"] for entry in entries] == pytest.approx([maskgit / 4, maskgit / 2])
    pipe = MGNTPipeline.from_pretrained(folder)
    assert pipe.scheduler.config.budget_schedules == entries
    default = entries[0]
    assert sum(steps for _, steps in pipe.scheduler.config.width_schedule) == default["num_inference_steps"]
    assert pipe.scheduler.config.use_cache == default["use_cache"]
    assert pipe.planned_gflops_per_image() == pytest.approx(default["gflops_per_image"], rel=1e-12)


def test_mgnt_search_schedule_budgets_count_against_12_step_maskgit_whatever_the_default(saved, tmp_path):
    from mgnt_hf import cli

    folder = tmp_path / "pipeline"
    pipe = MGNTPipeline.from_pretrained(folder)
    MGNTScheduler.from_config(pipe.scheduler.config, width_schedule=[[0.5, 3], [1.0, 3]]).save_pretrained(
        folder / "scheduler")  # a 6-step default, as an earlier --set-default may leave it
    status = cli.main(["search-schedule", str(folder), "--budgets", "4x", "--search-samples-per-class", "1",
                       "--confirm-samples-per-class", "1", "--finalists", "1", "--max-candidates", "1",
                       "--output-dir", str(tmp_path / "search"), *saved])
    assert status == 0
    found = json.loads((tmp_path / "search" / "search.json").read_text())
    maskgit_12 = pipe.planned_gflops_per_image(12, [[1.0, 12]], use_cache=False)
    assert found["maskgit_gflops_per_image"] == pytest.approx(maskgit_12, rel=1e-12)
    assert found["budget_schedules"][0]["max_gflops_per_image"] == pytest.approx(maskgit_12 / 4, rel=1e-12)


def test_mgnt_search_schedule_refuses_bad_requests(saved, tmp_path, capsys):
    from mgnt_hf import cli

    folder = str(tmp_path / "pipeline")
    assert cli.main(["search-schedule", folder, "--budgets", "fast", *saved]) == 2
    assert "budget 'fast' must be a number of GFLOPs/image or 'Nx'" in capsys.readouterr().err
    assert cli.main(["search-schedule", folder, "--budgets", "4x", "--set-default", "4x", *saved]) == 2
    assert "--set-default changes the saved pipeline: pass --write too" in capsys.readouterr().err
    assert cli.main(["evaluate", folder, "--frontier", "--rows", "maskgit", *saved]) == 2
    assert "--frontier chooses its own rows" in capsys.readouterr().err
