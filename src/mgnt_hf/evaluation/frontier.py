"""The compute frontier: sample quality against transformer GFLOPs/image for every decode a user could pick.

A claim of "N x less compute" counts only against the strongest alternative at that compute, so the frontier
evaluates, with common random numbers (image j of every row has class j % C and the generator seeded seed + j):

- MaskGIT (the full width every step) at 2, 3, 4, 6, 8 and 12 steps, cache off and on;
- each smaller nested width alone at several step counts, cache off and on;
- MaGNeTS width schedules (the pipeline's default and the scheduler's nested presets) at several step counts,
  with the cache;
- `default`: exactly what `pipe(labels)` runs (the default schedule, its step count, the scheduler's cache
  setting), the row the fair comparison is about.

Each row is put in a family (`maskgit`, `width-<w>`, `magnets`); the Pareto front is the set of rows no other row
beats on both GFLOPs and classifier FID. Results: markdown, JSON and a PNG of cFID and accuracy against GFLOPs,
one curve per family, the front marked. See docs/design.md, "Evaluation".
"""

from __future__ import annotations

import os
from pathlib import Path

from ..scheduling_mgnt import resolve_width_schedule
from ..utils.checks import check_positive_int
from .image import evaluate_pipeline
from .rows import BASELINE_ROW, BASELINE_STEPS, QualityRow, write_result_files

MASKGIT_STEPS = (2, 3, 4, 6, 8, 12)
SINGLE_WIDTH_STEPS = (4, 8, 12)
MAGNETS_STEPS = (6, 8, 12, 16)
# Nested presets that use more than one width; "default" is the pipeline's own schedule.
MAGNETS_PRESETS = ("magnets", "magnets-uniform", "quarter-up", "half-then-full")
# The row of what the pipeline runs by default; the fair comparison is about it.
DEFAULT_ROW = "default"
FRONTIER_MARKDOWN = "frontier.md"
FRONTIER_JSON = "frontier.json"
FRONTIER_PLOT = "frontier.png"


def _step_counts(name: str, steps, num_tokens: int) -> tuple[int, ...]:
    counts = tuple(check_positive_int(f"{name} entry", count) for count in steps)
    too_many = [count for count in counts if count > num_tokens]
    if too_many:
        raise ValueError(f"{name} {too_many} exceed the grid's {num_tokens} tokens (one step reveals at least one)")
    return counts


def frontier_rows(pipeline, maskgit_steps=MASKGIT_STEPS, single_width_steps=SINGLE_WIDTH_STEPS,
                  magnets_steps=MAGNETS_STEPS, magnets_presets=MAGNETS_PRESETS,
                  baseline_steps: int = BASELINE_STEPS) -> list[QualityRow]:
    """The rows of the frontier for `pipeline`, each with its own step count and cache setting.

    Row names say what runs: `maskgit` (the baseline: MaskGIT at `baseline_steps`, 12, no cache, whatever step
    count the default schedule runs; added to `maskgit_steps` when missing),
    `maskgit-<T>[+cache]`, `width-<w>-<T>[+cache]`, `<schedule>-<T>+cache` where
    `<schedule>` is `default` (the pipeline scheduler's width schedule) or a preset name; presets equal to the
    default schedule are listed once, as `default`.
    """
    config = pipeline.transformer.config
    num_tokens = config.num_grid_tokens
    default = resolve_width_schedule(pipeline.scheduler.config.width_schedule)
    default_steps = sum(count for _, count in default)
    (baseline_steps,) = _step_counts("baseline_steps", (baseline_steps,), num_tokens)
    rows = []
    for steps in sorted({*_step_counts("maskgit_steps", maskgit_steps, num_tokens), baseline_steps}):
        for use_cache in (False, True):
            name = f"maskgit-{steps}{'+cache' if use_cache else ''}"
            if steps == baseline_steps and not use_cache:
                name = BASELINE_ROW  # the row every ratio is taken against
            rows.append(QualityRow(name, ((1.0, steps),), use_cache, num_inference_steps=steps))
    for width in config.nested_widths[:-1]:
        fraction = config.fraction_of(width)
        for steps in _step_counts("single_width_steps", single_width_steps, num_tokens):
            for use_cache in (False, True):
                rows.append(QualityRow(f"width-{width}-{steps}{'+cache' if use_cache else ''}",
                                       ((fraction, steps),), use_cache, num_inference_steps=steps))
    schedules = {"default": default}
    for preset in magnets_presets:
        segments = resolve_width_schedule(preset)
        if segments != default and preset not in schedules:
            schedules[preset] = segments
    for name, segments in schedules.items():
        for steps in _step_counts("magnets_steps", magnets_steps, num_tokens):
            if steps < len(segments):
                continue  # the rescaled schedule would drop widths: not this schedule any more
            rows.append(QualityRow(f"{name}-{steps}+cache", tuple((f, s) for f, s in segments), True,
                                   num_inference_steps=steps))
    # What `pipe(labels)` runs: the default schedule at its own step count with the scheduler's cache setting.
    rows.append(QualityRow(DEFAULT_ROW, tuple((f, s) for f, s in default), pipeline.scheduler.config.use_cache,
                           num_inference_steps=default_steps))
    return rows


def row_family(name: str) -> str:
    """`maskgit`, `width-<w>`, `magnets`, or `default` (the pipeline's own decode): the curve a frontier row
    belongs to (cache on and off together)."""
    base = name.removesuffix("+cache")
    if base == DEFAULT_ROW:
        return DEFAULT_ROW
    if base == BASELINE_ROW or base.startswith("maskgit-"):
        return "maskgit"
    if base.startswith("width-"):
        return "-".join(base.split("-")[:2])  # width-<w> and width-<w>-<T> are both width-<w>
    return "magnets"


def pareto_front(rows: list[dict], quality_key: str = "classifier_fid", cost_key: str = "gflops_per_image",
                 higher_is_better: bool = False) -> list[str]:
    """Names of the rows that no other row beats: none costs <= (`cost_key`) with `quality_key` as good or
    better (lower, or higher with `higher_is_better`), one of the two strictly. Sorted by cost."""
    sign = -1.0 if higher_is_better else 1.0
    front = []
    for row in rows:
        cost, loss = row[cost_key], sign * row[quality_key]
        dominated = any(
            other[cost_key] <= cost and sign * other[quality_key] <= loss
            and (other[cost_key] < cost or sign * other[quality_key] < loss)
            for other in rows)
        if not dominated:
            front.append(row)
    return [row["name"] for row in sorted(front, key=lambda row: row[cost_key])]


def fair_comparison(rows: list[dict], row_name: str, compute_margin: float = 1.25,
                    quality_key: str = "classifier_fid", cost_key: str = "gflops_per_image",
                    higher_is_better: bool = False) -> dict:
    """How `row_name` compares with what a user could pick instead at about its compute: every MaskGIT row
    (any step count, cache or not), and every single-width row that costs (`cost_key`) <= `compute_margin` x
    its own.

    Returns the row's `quality_key` and `cost_key`, the best competitor (`best_competitor` and its
    `best_competitor_<quality_key>`, `best_competitor_<cost_key>`) and whether the row beats all of them
    (`beats_every_competitor`); `quality_key` is better lower, or higher with `higher_is_better`."""
    by_name = {row["name"]: row for row in rows}
    if row_name not in by_name:
        raise ValueError(f"no row {row_name!r} in the frontier; rows: {sorted(by_name)}")
    target = by_name[row_name]
    sign = -1.0 if higher_is_better else 1.0
    limit = compute_margin * target[cost_key]
    competitors = [row for row in rows if row_family(row["name"]) == "maskgit"
                   or (row_family(row["name"]).startswith("width-") and row[cost_key] <= limit)]
    if not competitors:
        raise ValueError(f"no MaskGIT or single-width row to compare {row_name!r} with; rows: {sorted(by_name)}")
    best = min(competitors, key=lambda row: sign * row[quality_key])
    return {"row": row_name, quality_key: target[quality_key], cost_key: target[cost_key],
            "best_competitor": best["name"], f"best_competitor_{quality_key}": best[quality_key],
            f"best_competitor_{cost_key}": best[cost_key], "compute_margin": compute_margin,
            "beats_every_competitor": all(sign * target[quality_key] < sign * row[quality_key]
                                          for row in competitors)}


def evaluate_frontier(pipeline, classifier, rows: list[QualityRow] | None = None, default_row: str | None = None,
                      **evaluate_kwargs) -> dict:
    """Evaluate the frontier rows (default: `frontier_rows(pipeline)`) in one run with common random numbers.

    `evaluate_kwargs` go to `evaluate_pipeline` (samples_per_class, seed, guidance_scale, batch_size, device, ...).
    The results are `evaluate_pipeline`'s, with per row `family` and `on_pareto_front` (for cFID and for
    accuracy), and `pareto_front` / `fair_comparison` (of `default_row`, by default the `default` row: what
    `pipe(labels)` runs) at the top level.
    """
    rows = frontier_rows(pipeline) if rows is None else rows
    results = evaluate_pipeline(pipeline, classifier, rows=rows, **evaluate_kwargs)
    results["rows"] = [{**row, "family": row_family(row["name"])} for row in results["rows"]]
    fid_front = pareto_front(results["rows"])
    accuracy_front = pareto_front(results["rows"], quality_key="class_accuracy", higher_is_better=True)
    for row in results["rows"]:
        row["on_pareto_front"] = row["name"] in fid_front
        row["on_accuracy_pareto_front"] = row["name"] in accuracy_front
    results["pareto_front"] = fid_front
    results["accuracy_pareto_front"] = accuracy_front
    default_row = DEFAULT_ROW if default_row is None else default_row
    names = [row["name"] for row in results["rows"]]
    if default_row in names:
        results["fair_comparison"] = fair_comparison(results["rows"], default_row)
    return results


def format_frontier_table(results: dict) -> str:
    """The frontier as markdown: settings, one table sorted by GFLOPs (Pareto rows marked), the fair comparison."""
    settings = results["settings"]
    lines = [
        "# Compute frontier",
        "",
        f"Pipeline `{settings['pipeline']}`, classifier `{settings['classifier']}`; {settings['num_samples']} samples "
        f"per row ({settings['samples_per_class']} per class), guidance {settings['guidance_scale']:g}, seed "
        f"{settings['seed']} (image j: class j % C, generator seed + j, in every row: common random numbers). "
        f"Machine: {results['machine'].get('device')}, torch {results['machine'].get('torch')}, {results['timestamp']}.",
        "",
        f"`maskgit` is the MaskGIT baseline (full width every step, no cache) at {_baseline_steps(results)} steps; "
        "`maskgit-T` the same at T steps, `width-w-T` the nested width w alone at T steps, `S-T+cache` the MaGNeTS "
        "schedule S rescaled to T steps. GFLOPs: analytic transformer FLOPs per image, both guidance branches. "
        "Front: on the Pareto front of cFID against GFLOPs (no row is both cheaper and better).",
        "",
        "| row | family | schedule | steps | cache | GFLOPs/img | vs maskgit | cFID | acc % | front |",
        "|---|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for row in sorted(results["rows"], key=lambda row: row["gflops_per_image"]):
        steps = row.get("num_inference_steps", settings["num_inference_steps"])
        schedule = " ".join(f"{fraction:g}x{count}" for fraction, count in row["width_schedule"])
        lines.append(
            f"| `{row['name']}` | {row['family']} | {schedule} | {steps} | {'yes' if row['use_cache'] else 'no'} | "
            f"{row['gflops_per_image']:.3f} | {row['flops_ratio']:.2f}x | {row['classifier_fid']:.3f} | "
            f"{100 * row['class_accuracy']:.1f} | {'**front**' if row['on_pareto_front'] else ''} |")
    tokenizer, real = results["tokenizer"], results["real_images"]
    lines += ["", f"Tokenizer reconstruction: cFID {tokenizer['classifier_fid']:.3f}; real images "
              f"({real['num_samples']}): cFID {real['classifier_fid']:.3f} (the floor at this sample size).", ""]
    fair = results.get("fair_comparison")
    if fair is not None:
        verdict = "beats" if fair["beats_every_competitor"] else "does not beat"
        lines += [
            f"Fair comparison: `{fair['row']}` ({fair['gflops_per_image']:.3f} GFLOPs, cFID {fair['classifier_fid']:.3f}) "
            f"{verdict} every MaskGIT row (any step count) and every single-width row within "
            f"{fair['compute_margin']:g}x its GFLOPs; "
            f"the best of those is `{fair['best_competitor']}` (cFID {fair['best_competitor_classifier_fid']:.3f} at "
            f"{fair['best_competitor_gflops_per_image']:.3f} GFLOPs).", ""]
    return "\n".join(lines)


def _baseline_steps(results: dict):
    baseline = next((row for row in results["rows"] if row["name"] == BASELINE_ROW), None)
    if baseline is None:
        return "the evaluation's step count"
    return baseline.get("num_inference_steps", results["settings"]["num_inference_steps"])


def plot_frontier(results: dict, path: str | os.PathLike) -> None:
    """PNG: cFID and class accuracy against GFLOPs/image (log scale), one curve per family (cache on and off as
    separate curves), the Pareto front drawn over them. Needs matplotlib (the `plot` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the frontier plot needs matplotlib: pip install 'mgnt_hf[plot]'") from error
    rows = results["rows"]
    curves: dict[str, list[dict]] = {}
    for row in rows:
        if row["family"] == DEFAULT_ROW:
            continue
        label = row["family"] + (" +cache" if row["use_cache"] else "")
        curves.setdefault(label, []).append(row)
    figure, axes = plt.subplots(1, 2, figsize=(13, 5))
    for axis, key, title, front_key in ((axes[0], "classifier_fid", "classifier FID (lower is better)",
                                         "on_pareto_front"),
                                        (axes[1], "class_accuracy", "class accuracy (higher is better)",
                                         "on_accuracy_pareto_front")):
        for label, members in sorted(curves.items()):
            members = sorted(members, key=lambda row: row["gflops_per_image"])
            axis.plot([row["gflops_per_image"] for row in members], [row[key] for row in members], marker="o",
                      markersize=4, linewidth=1, label=label, linestyle="--" if "+cache" not in label else "-")
        for row in rows:
            if row["family"] == DEFAULT_ROW:
                axis.plot([row["gflops_per_image"]], [row[key]], marker="*", markersize=16, color="crimson",
                          linestyle="none", label="default (pipe(labels))", zorder=5)
        front = sorted((row for row in rows if row[front_key]), key=lambda row: row["gflops_per_image"])
        axis.plot([row["gflops_per_image"] for row in front], [row[key] for row in front], color="black",
                  linewidth=2.5, alpha=0.35, label="Pareto front", zorder=0)
        axis.set_xscale("log")
        axis.set_xlabel("transformer GFLOPs per image")
        axis.set_title(title)
        axis.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"{results['settings']['pipeline']}: {results['settings']['num_samples']} samples per row")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_frontier(results: dict, output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write `frontier.md`, `frontier.json` and (with `plot`) `frontier.png` to `output_dir`."""
    return write_result_files(results, output_dir, {"markdown": FRONTIER_MARKDOWN, "json": FRONTIER_JSON,
                                                    "plot": FRONTIER_PLOT if plot else None},
                              format_frontier_table, plot_frontier)
