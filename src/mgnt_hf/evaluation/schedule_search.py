"""Schedule search under a compute budget: the best width schedule a pipeline can run within G GFLOPs/image.

Candidates are every width schedule with non-decreasing widths (small widths first, as MaGNeTS decodes) over the
transformer's nested widths, 2 to 16 steps, cache on and off, whose analytic transformer GFLOPs/image (the same
count the pipeline reports) fit the budget. Scoring needs samples, so the search is staged, and never chooses on
the samples it is reported on:

1. every candidate that fits a budget and uses at least `min_budget_use` of it is scored (classifier FID) on the
   *search* seeds; when more fit than `max_candidates_per_budget`, an evenly spaced subset by GFLOPs is kept;
2. the `finalists_per_budget` best are scored again on a disjoint set of *confirmation* seeds, which choose the
   winner and give the numbers stored in the table.

`write_budget_schedules` stores the table in a saved pipeline's scheduler config (`budget_schedules`), which
`pipe(labels, max_gflops_per_image=G)` reads. See docs/design.md, "Evaluation".
"""

from __future__ import annotations

import itertools
from pathlib import Path

from ..pipeline_mgnt_base import count_decode_flops
from ..scheduling_mgnt import MGNTScheduler
from ..utils.checks import check_finite_number, check_positive_int
from .image import evaluate_pipeline
from .rows import QualityRow

MIN_STEPS = 2
MAX_STEPS = 16
SEARCH_SEED = 1_000_000
CONFIRM_SEED = 2_000_000


def enumerate_width_schedules(fractions, min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS) -> list[list[list]]:
    """Every schedule `[[fraction, steps], ...]` with non-decreasing fractions from `fractions`, `min_steps` to
    `max_steps` steps in all: each fraction gets zero or more steps, in increasing order of fraction."""
    fractions = sorted(fractions)
    check_positive_int("min_steps", min_steps)
    check_positive_int("max_steps", max_steps)
    if min_steps > max_steps:
        raise ValueError(f"min_steps {min_steps} must be <= max_steps {max_steps}")
    schedules = []
    for total in range(min_steps, max_steps + 1):
        # Compositions of `total` into len(fractions) non-negative parts: stars and bars.
        for bars in itertools.combinations(range(total + len(fractions) - 1), len(fractions) - 1):
            edges = (-1, *bars, total + len(fractions) - 1)
            counts = [edges[i + 1] - edges[i] - 1 for i in range(len(fractions))]
            schedules.append([[fraction, count] for fraction, count in zip(fractions, counts) if count > 0])
    return schedules


def schedule_gflops_per_image(pipeline, width_schedule, num_inference_steps: int, use_cache: bool,
                              guidance_scale: float | None = None) -> float:
    """Transformer GFLOPs per image of one decode from a fully masked grid: what the pipeline's output reports for
    that call, computed without running it (the scheduler's `decode_plan`, counted by `count_decode_flops`)."""
    scheduler = MGNTScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, width_schedule=width_schedule)
    config = pipeline.transformer.config
    guidance_scale = scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
    plan = scheduler.decode_plan(config.num_grid_tokens, use_cache=use_cache)
    return count_decode_flops(config, plan, guided=guidance_scale != 1) / 1e9


def _candidate_name(width_schedule, use_cache: bool) -> str:
    return "+".join(f"{fraction:g}x{steps}" for fraction, steps in width_schedule) + ("+cache" if use_cache else "")


def budget_candidates(pipeline, budget: float, min_budget_use: float = 0.5, max_candidates: int = 24,
                      min_steps: int = MIN_STEPS, max_steps: int = MAX_STEPS, guidance_scale: float | None = None
                      ) -> list[dict]:
    """The candidates the search scores for `budget` GFLOPs/image: enumerated schedules, cache on and off, whose
    GFLOPs are in `[min_budget_use * budget, budget]` (a schedule using far less than the budget is left to a
    smaller budget), thinned to `max_candidates` evenly spaced by GFLOPs (one: the costliest). Each: name,
    width_schedule, num_inference_steps, use_cache, gflops_per_image."""
    budget = check_finite_number("budget", budget, minimum=0, exclusive_minimum=True)
    check_finite_number("min_budget_use", min_budget_use, minimum=0, maximum=1)
    check_positive_int("max_candidates", max_candidates)
    config = pipeline.transformer.config
    fractions = [config.fraction_of(width) for width in config.nested_widths]
    fitting = []
    for schedule in enumerate_width_schedules(fractions, min_steps, max_steps):
        steps = sum(count for _, count in schedule)
        for use_cache in (False, True):
            gflops = schedule_gflops_per_image(pipeline, schedule, steps, use_cache, guidance_scale)
            if min_budget_use * budget <= gflops <= budget:
                fitting.append({"name": _candidate_name(schedule, use_cache), "width_schedule": schedule,
                                "num_inference_steps": steps, "use_cache": use_cache, "gflops_per_image": gflops})
    fitting.sort(key=lambda candidate: (candidate["gflops_per_image"], candidate["name"]))
    if len(fitting) > max_candidates == 1:
        fitting = fitting[-1:]  # the one that uses the budget best
    elif len(fitting) > max_candidates:
        picks = sorted({round(i * (len(fitting) - 1) / (max_candidates - 1)) for i in range(max_candidates)})
        fitting = [fitting[i] for i in picks]
    return fitting


def _row(candidate: dict) -> QualityRow:
    return QualityRow(candidate["name"], tuple((f, s) for f, s in candidate["width_schedule"]),
                      candidate["use_cache"], num_inference_steps=candidate["num_inference_steps"])


def search_schedules(pipeline, classifier, budgets, search_samples_per_class: int = 20,
                     confirm_samples_per_class: int = 50, finalists_per_budget: int = 3, min_budget_use: float = 0.5,
                     max_candidates_per_budget: int = 24, search_seed: int = SEARCH_SEED,
                     confirm_seed: int = CONFIRM_SEED, **evaluate_kwargs) -> dict:
    """Search the best schedule for each budget (GFLOPs/image); see the module docstring for the stages.

    `evaluate_kwargs` go to `evaluate_pipeline` (guidance_scale, batch_size, device, reference, progress, ...).
    Returns `{"budget_schedules": [...entries for the scheduler config...], "budgets": [per budget: the
    candidates' search scores and the finalists' confirmation scores], "settings": {...}}`.
    """
    budgets = sorted({check_finite_number("budget", b, minimum=0, exclusive_minimum=True) for b in budgets})
    if not budgets:
        raise ValueError("budgets must name at least one GFLOPs/image budget")
    if search_seed == confirm_seed or abs(search_seed - confirm_seed) < pipeline.transformer.config.num_classes * max(
            search_samples_per_class, confirm_samples_per_class):
        raise ValueError(f"search_seed {search_seed} and confirm_seed {confirm_seed} give overlapping seeds")
    guidance_scale = evaluate_kwargs.get("guidance_scale")
    per_budget = {budget: budget_candidates(pipeline, budget, min_budget_use, max_candidates_per_budget,
                                            guidance_scale=guidance_scale) for budget in budgets}
    empty = [budget for budget, candidates in per_budget.items() if not candidates]
    if empty:
        raise ValueError(f"no schedule fits budgets {empty} GFLOPs/image with at least {min_budget_use:.0%} use; "
                         "raise the budget or lower min_budget_use")
    unique = {c["name"]: c for candidates in per_budget.values() for c in candidates}
    searched = evaluate_pipeline(pipeline, classifier, rows=[_row(c) for c in unique.values()],
                                 samples_per_class=search_samples_per_class, seed=search_seed, **evaluate_kwargs)
    search_scores = {row["name"]: row for row in searched["rows"]}
    finalists = {budget: sorted(candidates, key=lambda c: search_scores[c["name"]]["classifier_fid"])
                 [:finalists_per_budget] for budget, candidates in per_budget.items()}
    unique_finalists = {c["name"]: c for candidates in finalists.values() for c in candidates}
    confirmed = evaluate_pipeline(pipeline, classifier, rows=[_row(c) for c in unique_finalists.values()],
                                  samples_per_class=confirm_samples_per_class, seed=confirm_seed, **evaluate_kwargs)
    confirm_scores = {row["name"]: row for row in confirmed["rows"]}
    entries, report = [], []
    for budget in budgets:
        winner = min(finalists[budget], key=lambda c: (confirm_scores[c["name"]]["classifier_fid"], c["name"]))
        score = confirm_scores[winner["name"]]
        entries.append({"max_gflops_per_image": budget, "width_schedule": winner["width_schedule"],
                        "num_inference_steps": winner["num_inference_steps"], "use_cache": winner["use_cache"],
                        "gflops_per_image": score["gflops_per_image"], "classifier_fid": score["classifier_fid"],
                        "class_accuracy": score["class_accuracy"]})
        report.append({
            "budget": budget, "winner": winner["name"],
            "candidates": [{**c, "search_classifier_fid": search_scores[c["name"]]["classifier_fid"],
                            "search_class_accuracy": search_scores[c["name"]]["class_accuracy"]}
                           for c in per_budget[budget]],
            "finalists": [{"name": c["name"], "confirm_classifier_fid": confirm_scores[c["name"]]["classifier_fid"],
                           "confirm_class_accuracy": confirm_scores[c["name"]]["class_accuracy"]}
                          for c in finalists[budget]],
        })
    return {"budget_schedules": entries, "budgets": report,
            "settings": {"search_seed": search_seed, "confirm_seed": confirm_seed,
                         "search_samples_per_class": search_samples_per_class,
                         "confirm_samples_per_class": confirm_samples_per_class,
                         "finalists_per_budget": finalists_per_budget, "min_budget_use": min_budget_use,
                         "max_candidates_per_budget": max_candidates_per_budget,
                         "steps": [MIN_STEPS, MAX_STEPS], "machine": confirmed.get("machine"),
                         "reference": confirmed["settings"].get("reference")}}


def write_budget_schedules(pipeline_folder, entries: list[dict]) -> None:
    """Store `entries` as `budget_schedules` in the scheduler config of the saved pipeline at `pipeline_folder`
    (nothing else in the folder changes)."""
    folder = Path(pipeline_folder) / "scheduler"
    if not (folder / "scheduler_config.json").is_file():
        raise OSError(f"no saved scheduler at {folder} (scheduler_config.json is missing)")
    scheduler = MGNTScheduler.from_pretrained(folder)
    scheduler = MGNTScheduler.from_config(scheduler.config, budget_schedules=entries)
    scheduler.save_pretrained(folder)
