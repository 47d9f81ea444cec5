"""Rows, and what every evaluation run shares: seeding, timing, decode settings, checks, machine info.

A *row* ([`QualityRow`]) is one way of decoding: a width schedule (`[[fraction, steps], ...]` of the hidden size),
the KV cache on or off, and optionally its own step count. Rows are built by name ([`parse_row`]):

    maskgit           full width every step, no cache: the MaskGIT baseline
    width-<w>         nested width w every step, no cache ([[w / D, T]])
    default           the scheduler's configured width schedule (MaGNeTS), no cache
    reverse           the default schedule's segments in reverse order (large to small)
    <preset>          any name of `WIDTH_SCHEDULE_PRESETS` (magnets, half-then-full, ...)
    <any of these>-<T>     the same at its own step count T (the frontier's names: maskgit-12, width-32-8, ...)
    <any of these>+cache   the same with the KV cache on

or directly, e.g. for a search over schedules:

```python
>>> QualityRow("half-8-steps", [[0.5, 4], [1.0, 4]], use_cache=True, num_inference_steps=8)
>>> QualityRow.from_widths("w32-w64", [(32, 6), (64, 6)], pipe.transformer.config)   # widths, not fractions
```

Both runners (`mgnt_hf.evaluation.image`, `mgnt_hf.evaluation.video`) take rows or row names, draw sample `j` of
every row with a generator seeded `seed + j` ([`seeded_generators`]: common random numbers, so rows differ by
their schedule, not their noise) and time pipeline calls with [`timed_call`] (CUDA synchronised).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..scheduling_mgnt import WIDTH_SCHEDULE_PRESETS, MGNTScheduler, rescale_width_schedule, resolve_width_schedule
from ..utils.checks import check_guidance_scale, check_positive_int, check_seed
from ..utils.hardware import resolve_device

BASELINE_ROW = "maskgit"
# The MaskGIT step count compute claims count against (MaskGIT's and the paper's baseline): the frontier's
# `maskgit` row and the search's "Nx" budgets use it whatever step count the pipeline's default schedule runs.
BASELINE_STEPS = 12
CACHE_SUFFIX = "+cache"


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityRow:
    """One way of decoding.

    Args:
        name: the row's name (see the module docstring); a row built by hand may be called anything.
        width_schedule: segments `[[width_fraction, num_steps], ...]` (or a preset name). The pipeline stretches
            the segments to the step count the row runs at. Stored as a tuple of `(float, int)` pairs.
        use_cache: whether the KV cache is on.
        num_inference_steps: the row's own step count; None (the default) runs it at the evaluation's.
    """

    name: str
    width_schedule: tuple[tuple[float, int], ...]
    use_cache: bool = False
    num_inference_steps: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"row name must be a non-empty string, got {self.name!r}")
        schedule = tuple((float(fraction), int(steps)) for fraction, steps in resolve_width_schedule(self.width_schedule))
        object.__setattr__(self, "width_schedule", schedule)
        if not isinstance(self.use_cache, bool):
            raise ValueError(f"row {self.name!r}: use_cache must be True or False, got {self.use_cache!r}")
        check_positive_int(f"row {self.name!r}: num_inference_steps", self.num_inference_steps, allow_none=True)

    @classmethod
    def from_widths(cls, name: str, segments, config, use_cache: bool = False,
                    num_inference_steps: int | None = None) -> QualityRow:
        """A row from `(width, num_steps)` segments in channels of the transformer configured by `config` (an
        `MGNTConfig`); each width must be one of its `nested_widths`."""
        schedule = [(config.fraction_of(width), steps) for width, steps in segments]
        return cls(name, tuple(schedule), use_cache, num_inference_steps)

    def schedule_list(self) -> list[list]:
        """The width schedule as the pipeline's `width_schedule` argument: `[[fraction, steps], ...]`."""
        return [[fraction, steps] for fraction, steps in self.width_schedule]

    def segment_widths(self, config) -> list[tuple[int, int]]:
        """The segments as `(width, num_steps)` in channels of the transformer configured by `config`."""
        return [(config.width_at(fraction), steps) for fraction, steps in self.width_schedule]

    def steps(self, num_inference_steps: int) -> int:
        """The step count this row runs at when the evaluation runs at `num_inference_steps`."""
        return num_inference_steps if self.num_inference_steps is None else self.num_inference_steps


def default_num_inference_steps(pipeline) -> int:
    """The step count of the pipeline scheduler's configured width schedule (12 for the shipped ones)."""
    return sum(steps for _, steps in resolve_width_schedule(pipeline.scheduler.config.width_schedule))


def check_num_inference_steps(pipeline, num_inference_steps: int | None) -> int:
    """`num_inference_steps`, or the scheduler's step count for None; `ValueError` unless it is an integer in
    `[1, number of grid tokens]`."""
    if num_inference_steps is None:
        return default_num_inference_steps(pipeline)
    num_tokens = pipeline.transformer.config.num_grid_tokens
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
            or not 1 <= num_inference_steps <= num_tokens:
        raise ValueError(f"num_inference_steps must be an integer in [1, {num_tokens}] (the grid's tokens), "
                         f"got {num_inference_steps!r}")
    return num_inference_steps


def row_names_allowed(pipeline) -> str:
    """A one-line description of the row names this pipeline accepts (for error messages and --help)."""
    config = pipeline.transformer.config
    widths = ", ".join(f"width-{width}" for width in config.nested_widths)
    return (f"maskgit, default, reverse, {widths}, or a preset {sorted(WIDTH_SCHEDULE_PRESETS)}; "
            f"each optionally followed by '-<T>' (its own step count) and '{CACHE_SUFFIX}'")


def parse_row(name: str, pipeline, num_inference_steps: int | None = None) -> QualityRow:
    """The [`QualityRow`] called `name` for `pipeline` (see the module docstring for the names).

    `width-<w>` rows run `[[w / hidden_size, T]]` with `T = num_inference_steps` (default: the scheduler's step
    count); the other schedules are stored as their segments and stretched to `T` by the pipeline. The row runs
    at the evaluation's step count (its `num_inference_steps` is None), except a name ending in `-<T>`
    (`maskgit-4`, `width-32-8+cache`, `default-8+cache`: the frontier's names), which runs at its own T steps.
    Raises `ValueError` for an unknown name, a step count outside `[1, grid tokens]`, or a schedule whose widths
    are not nested widths of the transformer.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"row name must be a non-empty string, got {name!r}; allowed: {row_names_allowed(pipeline)}")
    num_steps = check_num_inference_steps(pipeline, num_inference_steps)
    config = pipeline.transformer.config
    base, use_cache = (name[: -len(CACHE_SUFFIX)], True) if name.endswith(CACHE_SUFFIX) else (name, False)
    own_steps = None
    prefix, _, suffix = base.rpartition("-")
    # `<row>-<T>` is <row> at its own T steps, unless the whole name is a row (`width-32`, a preset with a dash).
    if not _is_row_base(base) and suffix.isdigit() and _is_row_base(prefix):
        base, own_steps = prefix, check_num_inference_steps(pipeline, int(suffix))
        num_steps = own_steps
    default_schedule = resolve_width_schedule(pipeline.scheduler.config.width_schedule)
    if base == "default":
        schedule = default_schedule
    elif base == "reverse":
        schedule = default_schedule[::-1]
    elif base in WIDTH_SCHEDULE_PRESETS:
        schedule = resolve_width_schedule(base)
    elif base.startswith("width-") and base[len("width-"):].isdigit():
        width = int(base[len("width-"):])
        if width not in config.nested_widths:
            raise ValueError(f"unknown row {name!r}: width {width} is not one of nested_widths "
                             f"{list(config.nested_widths)}; allowed: {row_names_allowed(pipeline)}")
        schedule = [[config.fraction_of(width), num_steps]]
    else:
        raise ValueError(f"unknown row {name!r}; allowed: {row_names_allowed(pipeline)}")
    row = QualityRow(name, tuple((float(fraction), int(steps)) for fraction, steps in schedule), use_cache,
                     num_inference_steps=own_steps)
    row_step_widths(row, pipeline, num_steps)  # the widths must exist in this transformer
    return row


def _is_row_base(base: str) -> bool:
    """Whether `base` (a row name without `+cache` or a step count) names a schedule `parse_row` knows."""
    if base in ("maskgit", "default", "reverse") or base in WIDTH_SCHEDULE_PRESETS:
        return True
    return base.startswith("width-") and base[len("width-"):].isdigit()


def row_step_widths(row: QualityRow, pipeline, num_inference_steps: int | None = None) -> list[int]:
    """The width of every step of `row` as the pipeline will run them: at the row's own step count, else at
    `num_inference_steps` (default: the scheduler's)."""
    num_steps = row.steps(check_num_inference_steps(pipeline, num_inference_steps))
    scheduler = MGNTScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_steps, width_schedule=row.schedule_list())
    config = pipeline.transformer.config
    try:
        return scheduler.step_widths(config.hidden_size, config.nested_widths)
    except ValueError as error:
        raise ValueError(f"row {row.name!r}: {error}") from error


def default_rows(pipeline, num_inference_steps: int | None = None) -> list[QualityRow]:
    """`maskgit`, `width-<w>` for every nested width below the full one, `default`, `default+cache`,
    `reverse+cache`."""
    config = pipeline.transformer.config
    names = [BASELINE_ROW, *(f"width-{width}" for width in config.nested_widths[:-1]),
             "default", "default" + CACHE_SUFFIX, "reverse" + CACHE_SUFFIX]
    return [parse_row(name, pipeline, num_inference_steps) for name in names]


def resolve_rows(pipeline, rows, num_inference_steps: int) -> list[QualityRow]:
    """The rows of an evaluation at `num_inference_steps` steps: [`default_rows`] for None, else each given
    [`QualityRow`] or row name ([`parse_row`]). `ValueError` for no rows, repeated names, a row step count
    outside the grid or widths the transformer lacks."""
    if rows is None:
        return default_rows(pipeline, num_inference_steps)
    rows = [row if isinstance(row, QualityRow) else parse_row(row, pipeline, num_inference_steps) for row in rows]
    if not rows:
        raise ValueError("rows is empty; give at least one row")
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    for row in rows:
        check_num_inference_steps(pipeline, row.num_inference_steps)
        row_step_widths(row, pipeline, num_inference_steps)
    return rows


def row_summary(row: QualityRow, num_inference_steps: int) -> dict:
    """The fields every row result starts with; `num_inference_steps` only for a row that runs at its own count."""
    summary = {"name": row.name, "width_schedule": row.schedule_list(), "use_cache": row.use_cache}
    if row.steps(num_inference_steps) != num_inference_steps:
        summary["num_inference_steps"] = row.num_inference_steps
    return summary


def format_schedule(schedule: list[list], num_inference_steps: int | None = None) -> str:
    """`[[0.5, 6], [1.0, 6]]` -> `"0.5x6 1x6"` (for results tables). With the step count `T` the row runs at,
    the segments as the pipeline runs them, rescaled to `T` steps (`maskgit-4`: `"1x4"`, not the stored
    `"1x12"`)."""
    if num_inference_steps is not None:
        schedule = rescale_width_schedule([list(segment) for segment in schedule], num_inference_steps)
    return " ".join(f"{fraction:g}x{steps}" for fraction, steps in schedule)


def baseline_result(row_results: list[dict]) -> dict:
    """The row result ratios are taken against: `maskgit` when evaluated, else the first row."""
    return next((result for result in row_results if result["name"] == BASELINE_ROW), row_results[0])


# ---------------------------------------------------------------------------------------------
# Settings shared by every row
# ---------------------------------------------------------------------------------------------


def resolve_guidance_scale(pipeline, guidance_scale: float | None) -> float:
    """`guidance_scale`, or the scheduler's for None; `ValueError` unless it is a finite number >= 0."""
    return check_guidance_scale(pipeline.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale)


def decode_settings(pipeline, num_steps: int, guidance_scale: float) -> dict:
    """The decoding settings every row of an evaluation shares, as recorded in its results."""
    config = pipeline.scheduler.config
    return {
        "num_inference_steps": num_steps,
        "guidance_scale": float(guidance_scale),
        "guidance_schedule": config.guidance_schedule,
        "cache_refresh_interval": config.cache_refresh_interval,
        "default_width_schedule": resolve_width_schedule(config.width_schedule),
    }


def check_classifier_fits(pipeline, classifier) -> None:
    """`ValueError` unless the pipeline's images (or frames) and classes are what the classifier takes."""
    if pipeline.vqvae is None:
        raise ValueError("the pipeline has no vqvae: quality evaluation needs images, not only token grids")
    vq_config, classifier_config = pipeline.vqvae.config, classifier.config
    image_shape = (vq_config.num_channels, *vq_config.resolution)
    expected = (classifier_config.num_channels, classifier_config.image_size, classifier_config.image_size)
    if image_shape != expected:
        raise ValueError(f"the pipeline makes images {list(image_shape)} (channels, height, width) but the classifier "
                         f"takes {list(expected)}; use a classifier trained at the pipeline's image size")
    num_classes = pipeline.transformer.config.num_classes
    if classifier_config.num_labels != num_classes:
        raise ValueError(f"the pipeline has {num_classes} classes but the classifier {classifier_config.num_labels}; "
                         "class accuracy needs the same classes")


# ---------------------------------------------------------------------------------------------
# Devices, seeds and timing
# ---------------------------------------------------------------------------------------------


def seeded_generators(device, seed: int, count: int) -> list[torch.Generator]:
    """`count` generators seeded `seed, seed + 1, ...`, on CUDA for a CUDA `device`, else on the CPU.

    Output `j` of a call (or sample `start + j` with `seed + start`) gets its own generator, so a sample does not
    depend on the batch it is drawn in. `ValueError` unless every seed is one torch takes ([`check_seed`])."""
    check_seed("seed", seed, count)
    generator_device = "cuda" if torch.device(device).type == "cuda" else "cpu"
    return [torch.Generator(generator_device).manual_seed(seed + index) for index in range(count)]


def batches(count: int, batch_size: int) -> list[range]:
    """`range(0, count)` cut into consecutive ranges of at most `batch_size` indices."""
    return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]


def synchronize(device) -> None:
    """Wait for the CUDA device's queued work (nothing on other devices), so wall clocks measure finished work."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_call(device, function, *args, **kwargs):
    """`(function(*args, **kwargs), seconds)`: its wall clock, synchronised before and after on CUDA."""
    synchronize(device)
    start = time.perf_counter()
    result = function(*args, **kwargs)
    synchronize(device)
    return result, time.perf_counter() - start


def place_on_device(device: str | torch.device | None, pipeline, classifier) -> torch.device:
    """Move the pipeline (its per-step progress bars off) and the classifier to `device` (default: cuda when
    available, else cpu); return it."""
    device = resolve_device(device)
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    classifier.to(device)
    return device


def machine_info(device) -> dict:
    """Versions and hardware the numbers were measured on."""
    from .. import __version__

    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "mgnt_hf": __version__,
        "torch_num_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if torch.device(device).type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(torch.device(device))
    return info


def measured_on(device) -> dict:
    """The `machine` ([`machine_info`]) and UTC `timestamp` entries of a results dict."""
    return {"machine": machine_info(device),
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def format_machine(results: dict) -> str:
    """One line for a results table: device, torch and its threads, mgnt_hf, timestamp."""
    machine = results["machine"]
    return (f"Device {machine['device']}{' (' + machine['device_name'] + ')' if 'device_name' in machine else ''}, "
            f"torch {machine['torch']} with {machine['torch_num_threads']} threads, mgnt_hf {machine['mgnt_hf']}, "
            f"{results['timestamp']}")


def write_result_files(results: dict, output_dir, file_names: dict, format_markdown, plot) -> dict:
    """Write `results` to `output_dir` as markdown (`format_markdown(results)`), JSON and, when `file_names["plot"]`
    is not None, a plot (`plot(results, path)`); return the paths written by kind."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / file_names["markdown"], "json": output_dir / file_names["json"]}
    paths["markdown"].write_text(format_markdown(results))
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    if file_names.get("plot") is not None:
        paths["plot"] = output_dir / file_names["plot"]
        plot(results, paths["plot"])
    return paths
