"""Quality against compute: sample an `MGNTPipeline` under several width schedules and score the samples.

Each *row* is one way of decoding: a width schedule (`[[fraction, steps], ...]`) and the KV cache on or off.
For every row the same images are drawn (image `j` has class `j % num_classes` and its own generator seeded
`seed + j`: common random numbers, so differences between rows come from the schedule, not the noise) and
scored in the feature space of the Fashion-MNIST classifier (`mgnt_hf.evaluation`): classifier FID against
the real test split and class accuracy. The cost side is the pipeline's analytic `gflops_per_image` and the
wall clock.

Row names (see [`parse_row`]):

    maskgit           full width every step, no cache: the MaskGIT baseline
    width-<w>         nested width w every step, no cache ([[w / D, T]])
    default           the scheduler's configured width schedule (MaGNeTS), no cache
    reverse           the default schedule's segments in reverse order (large to small)
    <preset>          any name of `WIDTH_SCHEDULE_PRESETS` (magnets, half-then-full, ...)
    <any of these>+cache   the same with the KV cache on

Typical use:

```python
>>> from mgnt_hf import MGNTPipeline, MGNTFeatureClassifier
>>> from mgnt_hf.quality import evaluate_pipeline, format_results_table, write_results
>>> pipe = MGNTPipeline.from_pretrained("pipelines/mgnt-fashion-mnist")
>>> classifier = MGNTFeatureClassifier.from_pretrained("pipelines/fashion-mnist-classifier")
>>> results = evaluate_pipeline(pipe, classifier, samples_per_class=100)
>>> print(format_results_table(results))
>>> write_results(results, "quality")            # results.md, results.json, quality_vs_gflops.png
```

The `mgnt evaluate` command and `benchmarks/quality.py` wrap this module.
"""

from __future__ import annotations

import datetime
import importlib.resources
import importlib.util
import json
import math
import numbers
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .evaluation import (
    FeatureStatistics,
    MGNTFeatureClassifier,
    cached_reference_statistics,
    classifier_outputs,
    evaluate_samples,
    fashion_mnist_pixels,
    frechet_distance,
    inception_fid,
    real_subset_indices,
)
from .evaluation import reference_statistics as compute_reference_statistics
from .scheduling_mgnt import WIDTH_SCHEDULE_PRESETS, MGNTScheduler, resolve_width_schedule

DEFAULT_CLASSIFIER_NAME = "fashion-mnist-classifier"
BASELINE_ROW = "maskgit"
CACHE_SUFFIX = "+cache"
RESULTS_MARKDOWN = "results.md"
RESULTS_JSON = "results.json"
RESULTS_PLOT = "quality_vs_gflops.png"


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QualityRow:
    """One way of decoding.

    Args:
        name: the row's name (see the module docstring).
        width_schedule: segments `[[width_fraction, num_steps], ...]` at the evaluation's step count.
        use_cache: whether the KV cache is on.
    """

    name: str
    width_schedule: tuple[tuple[float, int], ...]
    use_cache: bool

    def schedule_list(self) -> list[list]:
        return [[fraction, steps] for fraction, steps in self.width_schedule]


def default_num_inference_steps(pipeline) -> int:
    """The step count of the pipeline scheduler's configured width schedule (12 for the shipped ones)."""
    return sum(steps for _, steps in resolve_width_schedule(pipeline.scheduler.config.width_schedule))


def _check_num_inference_steps(pipeline, num_inference_steps) -> int:
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
            f"each optionally followed by '{CACHE_SUFFIX}'")


def parse_row(name: str, pipeline, num_inference_steps: int | None = None) -> QualityRow:
    """The [`QualityRow`] called `name` for `pipeline` (see the module docstring for the names).

    `width-<w>` rows run `[[w / hidden_size, T]]` with `T = num_inference_steps` (default: the scheduler's step
    count); the other schedules are stored as their segments and stretched to `T` by the pipeline. Raises
    `ValueError` for an unknown name or a schedule whose widths are not nested widths of the transformer.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"row name must be a non-empty string, got {name!r}; allowed: {row_names_allowed(pipeline)}")
    num_steps = _check_num_inference_steps(pipeline, num_inference_steps)
    config = pipeline.transformer.config
    base, use_cache = (name[: -len(CACHE_SUFFIX)], True) if name.endswith(CACHE_SUFFIX) else (name, False)
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
        schedule = [[width / config.hidden_size, num_steps]]
    else:
        raise ValueError(f"unknown row {name!r}; allowed: {row_names_allowed(pipeline)}")
    row = QualityRow(name, tuple((float(fraction), int(steps)) for fraction, steps in schedule), use_cache)
    row_step_widths(row, pipeline, num_steps)  # the widths must exist in this transformer
    return row


def row_step_widths(row: QualityRow, pipeline, num_inference_steps: int) -> list[int]:
    """The width of every step of `row` at `num_inference_steps` steps, as the pipeline will run them."""
    scheduler = MGNTScheduler.from_config(pipeline.scheduler.config)
    scheduler.set_timesteps(num_inference_steps, width_schedule=row.schedule_list())
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


# ---------------------------------------------------------------------------------------------
# The default classifier
# ---------------------------------------------------------------------------------------------


def default_classifier_candidates() -> list[Path]:
    """Where the shipped classifier may be: package data, then the repo checkout's `pipelines/`."""
    packaged = Path(str(importlib.resources.files("mgnt_hf"))) / "pipelines" / DEFAULT_CLASSIFIER_NAME
    checkout = Path(__file__).resolve().parents[2] / "pipelines" / DEFAULT_CLASSIFIER_NAME
    return [packaged, checkout]


def resolve_classifier(classifier: str | os.PathLike | None) -> str:
    """The classifier folder to load: the given one, or the first default candidate that has a config."""
    if classifier is not None:
        if not (Path(classifier) / "config.json").is_file():
            raise OSError(f"no MGNTFeatureClassifier folder at {os.fspath(classifier)!r} (config.json is missing)")
        return os.fspath(classifier)
    candidates = default_classifier_candidates()
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return str(candidate)
    raise OSError(f"the default classifier '{DEFAULT_CLASSIFIER_NAME}' is not available (looked in "
                  f"{', '.join(str(c) for c in candidates)}); pass a classifier folder")


# ---------------------------------------------------------------------------------------------
# Tokenizer reconstruction and the real-data floor
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def tokenizer_reconstruction(
    vqvae,
    classifier: MGNTFeatureClassifier,
    pixels: torch.Tensor,
    reference: FeatureStatistics | torch.Tensor,
    labels: torch.Tensor | None = None,
    batch_size: int = 500,
    device=None,
    progress: bool = False,
) -> dict:
    """How well the tokenizer alone reproduces real images: encode -> decode every image of `pixels`.

    Args:
        vqvae: an `MGNTVQModel`.
        classifier: the feature classifier.
        pixels: real images `float [N, C, H, W]` in `[-1, 1]` at the tokenizer's resolution.
        reference: feature statistics of the real images (or real pixels to compute them from).
        labels: `[N]` class ids; when given, the reconstructions' class accuracy is reported too.

    Returns:
        `{"classifier_fid", "mse", "class_accuracy" (None without labels), "num_images"}`; `mse` is the mean
        squared error per pixel value in `[-1, 1]` space.
    """
    if pixels.ndim != 4 or pixels.shape[0] < 2:
        raise ValueError(f"pixels must be [N >= 2, C, H, W], got {tuple(pixels.shape)}")
    device = torch.device(device) if device is not None else vqvae.device
    vqvae.to(device)
    reconstructions, squared_error = [], 0.0
    for start in tqdm(range(0, pixels.shape[0], batch_size), desc="tokenizer reconstruction", disable=not progress,
                      mininterval=5):
        batch = pixels[start : start + batch_size].to(device)
        reconstruction = vqvae.decode(vqvae.encode(batch)).float()  # [B, C, H, W] in [-1, 1]
        squared_error += float(((reconstruction - batch.float()) ** 2).double().sum())
        reconstructions.append(reconstruction.cpu())
    reconstructions = torch.cat(reconstructions)
    if labels is not None:
        scores = evaluate_samples(classifier, reconstructions, labels, reference, batch_size, device)
        accuracy = scores["class_accuracy"]
        fid = scores["classifier_fid"]
    else:
        features, _ = classifier_outputs(classifier, reconstructions, batch_size, device)
        fid = frechet_distance(features, reference if isinstance(reference, FeatureStatistics)
                               else compute_reference_statistics(classifier, reference, batch_size, device))
        accuracy = None
    return {"classifier_fid": fid, "mse": squared_error / pixels.numel(), "class_accuracy": accuracy,
            "num_images": int(pixels.shape[0])}


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_classifier_fits(pipeline, classifier: MGNTFeatureClassifier) -> None:
    """`ValueError` unless the pipeline's images and classes are what the classifier takes."""
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


def machine_info(device) -> dict:
    """Versions and hardware the numbers were measured on."""
    from . import __version__

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


def _to_pil(pixels: torch.Tensor) -> list:
    """`[B, C, H, W]` in `[-1, 1]` -> PIL images (mode L for one channel, RGB for three)."""
    from PIL import Image

    array = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image) for image in array]


def _write_sample_grid(pixels: torch.Tensor, num_classes: int, images_per_class: int, id2label: dict,
                       path: Path) -> None:
    """Grid PNG: one row per class, its first `images_per_class` samples (image j has class j % num_classes)."""
    from .cli import labelled_grid

    order = [label + num_classes * column for label in range(num_classes) for column in range(images_per_class)]
    images = _to_pil(pixels[order])
    names = [f"{label}: {id2label[label]}" if label in id2label else str(label) for label in range(num_classes)]
    scale = max(1, 64 // images[0].height)
    path.parent.mkdir(parents=True, exist_ok=True)
    labelled_grid(images, names, images_per_class, scale).save(path)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate_pipeline(
    pipeline,
    classifier: MGNTFeatureClassifier,
    rows: list[QualityRow | str] | None = None,
    samples_per_class: int = 100,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 100,
    seed: int = 0,
    device: str | torch.device | None = None,
    reference: torch.Tensor | None = None,
    reference_labels: torch.Tensor | None = None,
    reference_statistics: FeatureStatistics | None = None,
    cache_dir: str | os.PathLike | None = None,
    inception_weights: str | os.PathLike | None = None,
    sample_grid_dir: str | os.PathLike | None = None,
    grid_images_per_class: int = 8,
    progress: bool = True,
) -> dict:
    """Sample `pipeline` under each row's width schedule and cache setting, and score every row.

    Args:
        pipeline: an `MGNTPipeline` with a vqvae; it is moved to `device` and its per-step progress bars are
            turned off.
        classifier: the feature classifier ([`check_classifier_fits`] the pipeline).
        rows: [`QualityRow`]s or row names; default [`default_rows`].
        samples_per_class: images per class; `num_classes * samples_per_class` per row.
        num_inference_steps: decoding steps `T` of every row; default the scheduler's step count.
        guidance_scale: classifier-free guidance scale; default the scheduler's.
        batch_size: images per pipeline call (also per classifier / tokenizer batch).
        seed: image `j` (class `j % num_classes`) uses a generator seeded `seed + j`, in every row.
        device: where to run; default cuda if available, else cpu.
        reference: real images `float [N, C, H, W]` in `[-1, 1]` (default: the Fashion-MNIST test split at the
            classifier's size, with its labels). Used for the reference statistics, the tokenizer's
            reconstruction and the real-data floor.
        reference_labels: `[N]` class ids of `reference` (for accuracy of reconstructions and the real floor).
        reference_statistics: precomputed classifier statistics of `reference`; default computed (and cached in
            `cache_dir` when given, see [`cached_reference_statistics`]).
        inception_weights: torch-fidelity Inception weights file: also report standard Inception FID per row
            (against `reference`; needs the optional `torch-fidelity`).
        sample_grid_dir: when given, `<row>.png` with `grid_images_per_class` samples per class is written there.
        progress: show tqdm progress bars.

    Returns:
        A JSON-ready dict: `settings`, `machine`, `timestamp`, `baseline` (the row ratios are taken against:
        `maskgit` when evaluated, else the first row), `rows` (one dict per row: `name`, `width_schedule`,
        `use_cache`, `step_widths`, `num_full_passes`, `gflops_per_image`, `seconds_per_image`,
        `classifier_fid`, `class_accuracy`, `num_samples`, `flops_ratio` (baseline GFLOPs / row GFLOPs),
        `fid_relative_difference` ((row - baseline) / baseline), `accuracy_difference_points` (100 x (row -
        baseline)), and `inception_fid` with `inception_weights`), `tokenizer` ([`tokenizer_reconstruction`])
        and `real_images` (the same scores for `num_samples` real images: the floor a perfect generator
        reaches at this sample size).
    """
    _check_positive_int("samples_per_class", samples_per_class)
    _check_positive_int("batch_size", batch_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(grid_images_per_class, bool) or not isinstance(grid_images_per_class, int) or grid_images_per_class < 0:
        raise ValueError(f"grid_images_per_class must be a non-negative integer, got {grid_images_per_class!r}")
    num_steps = _check_num_inference_steps(pipeline, num_inference_steps)
    guidance_scale = pipeline.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}")
    check_classifier_fits(pipeline, classifier)
    rows = default_rows(pipeline, num_steps) if rows is None else \
        [row if isinstance(row, QualityRow) else parse_row(row, pipeline, num_steps) for row in rows]
    if not rows:
        raise ValueError("rows is empty; give at least one row")
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"row names must be unique, got {names}")
    if inception_weights is not None:
        if not Path(inception_weights).is_file():
            raise OSError(f"Inception weights file not found: {inception_weights}")
        if importlib.util.find_spec("torch_fidelity") is None:
            raise ImportError("Inception FID needs the optional package torch-fidelity (and a torchvision matching "
                              "your torch): pip install torch-fidelity")

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    classifier.to(device)
    config = pipeline.transformer.config
    num_classes = config.num_classes

    reference_source = "given pixels"
    if reference is None:
        reference, reference_labels = fashion_mnist_pixels("test", image_size=classifier.config.image_size)
        reference_source = "Fashion-MNIST test split"
    classifier.check_pixels(reference)
    statistics_path = None
    if reference_statistics is None:
        reference_statistics, statistics_path = cached_reference_statistics(
            classifier, reference, cache_dir, batch_size, device)

    num_samples = num_classes * samples_per_class
    labels = torch.arange(num_samples) % num_classes
    generator_device = "cuda" if device.type == "cuda" else "cpu"
    batches = [range(start, min(start + batch_size, num_samples)) for start in range(0, num_samples, batch_size)]
    grid_images_per_class = min(grid_images_per_class, samples_per_class)

    # One untimed image first: the first call pays for lazy initialisation (allocator, kernels, threads).
    pipeline([0], num_inference_steps=num_steps, guidance_scale=guidance_scale, output_type="pt",
             generator=torch.Generator(generator_device).manual_seed(seed))

    row_results = []
    bar = tqdm(total=len(rows) * len(batches), desc="sampling", unit="batch", disable=not progress, mininterval=5)
    for row in rows:
        bar.set_postfix_str(row.name)
        pixels, total_gflops, seconds, step_widths, full_passes = [], 0.0, 0.0, None, None
        for batch in batches:
            generators = [torch.Generator(generator_device).manual_seed(seed + index) for index in batch]
            _synchronize(device)
            start = time.perf_counter()
            output = pipeline(labels[batch.start : batch.stop].tolist(), num_inference_steps=num_steps,
                              guidance_scale=guidance_scale, generator=generators, output_type="pt",
                              use_cache=row.use_cache, width_schedule=row.schedule_list())
            _synchronize(device)
            seconds += time.perf_counter() - start
            pixels.append((output.images.float() * 2 - 1).cpu())  # [B, C, H, W] in [-1, 1]
            total_gflops += output.gflops_per_image * len(batch)
            step_widths, full_passes = output.widths, output.full_passes
            bar.update()
        pixels = torch.cat(pixels)
        scores = evaluate_samples(classifier, pixels, labels, reference_statistics, batch_size, device)
        result = {
            "name": row.name,
            "width_schedule": row.schedule_list(),
            "use_cache": row.use_cache,
            "step_widths": step_widths,
            "num_full_passes": int(sum(full_passes)),
            "gflops_per_image": total_gflops / num_samples,
            "seconds_per_image": seconds / num_samples,
            **scores,
        }
        if inception_weights is not None:
            result["inception_fid"] = inception_fid(pixels, reference, inception_weights, batch_size, device)
        if sample_grid_dir is not None and grid_images_per_class:
            grid_path = Path(sample_grid_dir) / f"{row.name}.png"
            _write_sample_grid(pixels, num_classes, grid_images_per_class, config.id2label or {}, grid_path)
            result["sample_grid"] = str(grid_path)
        row_results.append(result)
    bar.close()

    baseline = next((r for r in row_results if r["name"] == BASELINE_ROW), row_results[0])
    for result in row_results:
        result["flops_ratio"] = baseline["gflops_per_image"] / result["gflops_per_image"]
        result["fid_relative_difference"] = (
            (result["classifier_fid"] - baseline["classifier_fid"]) / baseline["classifier_fid"]
            if baseline["classifier_fid"] > 0 else None)
        result["accuracy_difference_points"] = 100.0 * (result["class_accuracy"] - baseline["class_accuracy"])

    tokenizer = tokenizer_reconstruction(pipeline.vqvae, classifier, reference, reference_statistics,
                                         reference_labels, batch_size, device, progress)
    subset = real_subset_indices(reference_labels, num_classes, samples_per_class, reference.shape[0])
    if reference_labels is not None:
        real_images = evaluate_samples(classifier, reference[subset], reference_labels[subset], reference_statistics,
                                       batch_size, device)
    else:
        features, _ = classifier_outputs(classifier, reference[subset], batch_size, device)
        real_images = {"classifier_fid": frechet_distance(features, reference_statistics), "class_accuracy": None,
                       "num_samples": int(subset.numel())}

    return {
        "settings": {
            "pipeline": pipeline.name_or_path,
            "classifier": getattr(classifier, "name_or_path", None),
            "samples_per_class": samples_per_class,
            "num_classes": num_classes,
            "num_samples": num_samples,
            **decode_settings(pipeline, num_steps, guidance_scale),
            "batch_size": batch_size,
            "seed": seed,
            "seeding": "image j has class j % num_classes and a torch.Generator seeded seed + j, in every row",
            "timing": "wall clock of the row's pipeline calls (sampling + tokenizer decode), excluding scoring, "
                      "after one untimed warm-up image",
            "gflops": "analytic transformer FLOPs (2 x multiply-adds), both guidance branches, tokenizer excluded",
            "reference": {"source": reference_source, "num_images": int(reference.shape[0]),
                          "statistics_file": None if statistics_path is None else str(statistics_path)},
        },
        "machine": machine_info(device),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "baseline": baseline["name"],
        "rows": row_results,
        "tokenizer": tokenizer,
        "real_images": real_images,
    }


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


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


def _format_schedule(schedule: list[list]) -> str:
    return " ".join(f"{fraction:g}x{steps}" for fraction, steps in schedule)


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def format_results_table(results: dict) -> str:
    """The results of [`evaluate_pipeline`] as a markdown document: settings, the row table, the tokenizer's
    reconstruction and the real-image floor."""
    settings, machine = results["settings"], results["machine"]
    with_inception = any("inception_fid" in row for row in results["rows"])
    lines = [
        "# Sample quality against compute",
        "",
        f"Pipeline `{settings['pipeline']}`, classifier `{settings['classifier']}`; "
        f"{settings['num_samples']} samples per row ({settings['samples_per_class']} per class), "
        f"{settings['num_inference_steps']} steps, guidance {settings['guidance_scale']:g} "
        f"({settings['guidance_schedule']}), seed {settings['seed']}, batch {settings['batch_size']}. "
        f"Reference: {settings['reference']['source']} ({settings['reference']['num_images']} images).",
        f"Device {machine['device']}{' (' + machine['device_name'] + ')' if 'device_name' in machine else ''}, "
        f"torch {machine['torch']} with {machine['torch_num_threads']} threads, mgnt_hf {machine['mgnt_hf']}, "
        f"{results['timestamp']}.",
        "",
        "Schedules are `fraction x steps` segments of the hidden size. cFID: Fréchet distance in the classifier's "
        "feature space (lower is better); acc: class accuracy of the samples under the classifier. Ratios are "
        f"against `{results['baseline']}`: FLOPs ratio = baseline GFLOPs / row GFLOPs; cFID rel = (row - baseline) "
        "/ baseline; acc diff in percentage points. Seconds per image: wall clock of sampling and decoding.",
        "",
    ]
    header = ["row", "schedule", "cache", "GFLOPs/img", "FLOPs ratio", "s/img", "cFID", "cFID rel", "acc %",
              "acc diff (pts)"]
    if with_inception:
        header.append("Inception FID")
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    for row in results["rows"]:
        relative = row["fid_relative_difference"]
        cells = [
            f"`{row['name']}`", _format_schedule(row["width_schedule"]), "yes" if row["use_cache"] else "no",
            f"{row['gflops_per_image']:.3f}", f"{row['flops_ratio']:.2f}x", f"{row['seconds_per_image']:.4f}",
            f"{row['classifier_fid']:.3f}", "n/a" if relative is None else f"{100 * relative:+.1f}%",
            _percent(row["class_accuracy"]), f"{row['accuracy_difference_points']:+.1f}",
        ]
        if with_inception:
            cells.append(f"{row['inception_fid']:.2f}" if "inception_fid" in row else "")
        lines.append("| " + " | ".join(cells) + " |")
    tokenizer, real = results["tokenizer"], results["real_images"]
    lines += [
        "",
        f"Tokenizer reconstruction (encode -> decode of the {tokenizer['num_images']} reference images): "
        f"cFID {tokenizer['classifier_fid']:.3f}, MSE {tokenizer['mse']:.5f} (pixels in [-1, 1]), "
        f"acc {_percent(tokenizer['class_accuracy'])}%.",
        f"Real images ({real['num_samples']} reference images, the same number per class as the samples): "
        f"cFID {real['classifier_fid']:.3f}, acc {_percent(real['class_accuracy'])}% "
        "(the floor of cFID at this sample size).",
        "",
    ]
    return "\n".join(lines)


def plot_quality_vs_gflops(results: dict, path: str | os.PathLike) -> None:
    """PNG with two panels against GFLOPs per image: classifier FID, and class accuracy (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the quality plot needs matplotlib: pip install matplotlib (or mgnt_hf[plot])") from error
    rows = results["rows"]
    gflops = [row["gflops_per_image"] for row in rows]
    figure, (fid_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = ((fid_axis, "classifier_fid", 1.0, "classifier FID (lower is better)"),
              (accuracy_axis, "class_accuracy", 100.0, "class accuracy % (higher is better)"))
    for axis, key, scale, label in panels:
        values = [row[key] * scale for row in rows]
        for row, x, y in zip(rows, gflops, values):
            axis.scatter(x, y, marker="o" if row["use_cache"] else "s", color="C1" if row["use_cache"] else "C0")
            axis.annotate(row["name"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for reference, style, name in ((results["tokenizer"], "--", "tokenizer reconstruction"),
                                       (results["real_images"], ":", "real images")):
            if reference.get(key) is not None:
                axis.axhline(reference[key] * scale, linestyle=style, color="gray", linewidth=1, label=name)
        axis.set_xlabel("transformer GFLOPs per image")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="best")
    settings = results["settings"]
    figure.suptitle(f"{settings['pipeline']}: {settings['num_samples']} samples, {settings['num_inference_steps']} "
                    f"steps, guidance {settings['guidance_scale']:g} (squares: no cache, circles: cache)", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_results(results: dict, output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write `results.md`, `results.json` and (with `plot`) `quality_vs_gflops.png` to `output_dir`.

    Returns the paths written, by kind (`markdown`, `json`, `plot`).
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / RESULTS_MARKDOWN, "json": output_dir / RESULTS_JSON}
    paths["markdown"].write_text(format_results_table(results))
    paths["json"].write_text(json.dumps(results, indent=2) + "\n")
    if plot:
        paths["plot"] = output_dir / RESULTS_PLOT
        plot_quality_vs_gflops(results, paths["plot"])
    return paths
