"""Image quality against compute: sample an `MGNTPipeline` under several rows (width schedules, cache on or off)
and score the samples.

For every row the same images are drawn (image `j` has class `j % num_classes` and its own generator seeded
`seed + j`: common random numbers, so differences between rows come from the schedule, not the noise) and scored
in the feature space of the Fashion-MNIST classifier (`mgnt_hf.evaluation.metrics`): classifier FID against the
real test split and class accuracy. The cost side is the pipeline's analytic `gflops_per_image` and the wall
clock. Rows are names or [`QualityRow`]s (`mgnt_hf.evaluation.rows`).

```python
>>> from mgnt_hf import MGNTPipeline, shipped
>>> from mgnt_hf.evaluation import QualityRow, evaluate_pipeline, format_results_table, write_results
>>> pipe = MGNTPipeline.from_pretrained(shipped("mgnt-fashion-mnist"))
>>> results = evaluate_pipeline(pipe, samples_per_class=100)        # the shipped classifier, the default rows
>>> results = evaluate_pipeline(pipe, rows=["maskgit", QualityRow("half", [[0.5, 6], [1.0, 6]], use_cache=True)])
>>> print(format_results_table(results))
>>> write_results(results, "quality")            # results.md, results.json, quality_vs_gflops.png
```

`mgnt evaluate` and `benchmarks/quality.py` are its command line (`mgnt_hf.cli`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..modeling_feature_classifier import MGNTFeatureClassifier
from ..utils.checks import check_non_negative_int, check_positive_int
from ..visualization import write_sample_grid
from .data import fashion_mnist_pixels, load_classifier, real_subset_indices
from .metrics import (
    FeatureStatistics,
    cached_reference_statistics,
    evaluate_samples,
    inception_fid,
    reference_statistics_key,
)
from .rows import (
    QualityRow,
    baseline_result,
    batches,
    check_classifier_fits,
    check_num_inference_steps,
    decode_settings,
    format_schedule,
    format_machine,
    measured_on,
    place_on_device,
    resolve_guidance_scale,
    resolve_rows,
    row_summary,
    seeded_generators,
    timed_call,
    write_result_files,
)

RESULTS_MARKDOWN = "results.md"
RESULTS_JSON = "results.json"
RESULTS_PLOT = "quality_vs_gflops.png"


# ---------------------------------------------------------------------------------------------
# Tokenizer reconstruction
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
    scores = evaluate_samples(classifier, torch.cat(reconstructions), labels, reference, batch_size, device)
    return {"classifier_fid": scores["classifier_fid"], "mse": squared_error / pixels.numel(),
            "class_accuracy": scores["class_accuracy"], "num_images": int(pixels.shape[0])}


def tokenizer_reconstruction_key(vqvae, classifier: MGNTFeatureClassifier, pixels: torch.Tensor,
                                 labels: torch.Tensor | None) -> str:
    """SHA-256 of the tokenizer's weights and buffers, of the classifier and reference images (their
    [`reference_statistics_key`]) and of the labels: a cached reconstruction score is reused only for the same
    tokenizer, classifier, images and labels."""
    digest = hashlib.sha256(reference_statistics_key(classifier, pixels).encode())
    for name, tensor in sorted(vqvae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    digest.update(b"no labels" if labels is None else labels.detach().to("cpu", torch.int64).numpy().tobytes())
    return digest.hexdigest()


def cached_tokenizer_reconstruction(vqvae, classifier: MGNTFeatureClassifier, pixels: torch.Tensor,
                                    reference: FeatureStatistics, labels: torch.Tensor | None = None,
                                    cache_dir: str | os.PathLike | None = None, batch_size: int = 500, device=None,
                                    progress: bool = False) -> dict:
    """[`tokenizer_reconstruction`] read from `cache_dir/tokenizer-<key>.json` when present (key:
    [`tokenizer_reconstruction_key`]), else computed and written there, next to the reference statistics: the
    reconstruction of 10k reference images takes minutes on a CPU and is the same in every evaluation of one
    tokenizer. `cache_dir=None` computes without caching."""
    if cache_dir is None:
        return tokenizer_reconstruction(vqvae, classifier, pixels, reference, labels, batch_size, device, progress)
    path = Path(cache_dir) / f"tokenizer-{tokenizer_reconstruction_key(vqvae, classifier, pixels, labels)[:24]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = tokenizer_reconstruction(vqvae, classifier, pixels, reference, labels, batch_size, device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.json")  # another run may write the same key
    partial.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(partial, path)
    return result


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageSampling:
    """What every row of an image evaluation shares: the settings of its pipeline calls and the samples drawn."""

    pipeline: object
    device: torch.device
    num_steps: int
    guidance_scale: float
    seed: int
    labels: torch.Tensor  # [num_samples]: image j has class j % num_classes
    batches: list[range]


@dataclass
class ImageReference:
    """The real images of an evaluation and their classifier statistics."""

    pixels: torch.Tensor
    labels: torch.Tensor | None
    statistics: FeatureStatistics
    source: str
    statistics_path: Path | None


def _check_inception(inception_weights) -> None:
    if inception_weights is None:
        return
    if not Path(inception_weights).is_file():
        raise OSError(f"Inception weights file not found: {inception_weights}")
    if importlib.util.find_spec("torch_fidelity") is None:
        raise ImportError("Inception FID needs the optional package torch-fidelity (and a torchvision matching "
                          "your torch): pip install torch-fidelity")


def _image_reference(classifier, reference, reference_labels, reference_statistics, cache_dir, batch_size,
                     device) -> ImageReference:
    """The real images (default: the Fashion-MNIST test split at the classifier's size, with its labels) and their
    statistics (given, or computed and cached in `cache_dir`)."""
    source = "given pixels"
    if reference is None:
        reference, reference_labels = fashion_mnist_pixels("test", image_size=classifier.config.image_size)
        source = "Fashion-MNIST test split"
    classifier.check_pixels(reference)
    statistics_path = None
    if reference_statistics is None:
        reference_statistics, statistics_path = cached_reference_statistics(
            classifier, reference, cache_dir, batch_size, device)
    return ImageReference(reference, reference_labels, reference_statistics, source, statistics_path)


def sample_row(sampling: ImageSampling, row: QualityRow, bar=None) -> tuple[torch.Tensor, dict]:
    """Draw every image of `sampling` under `row`, batch by batch, timing each pipeline call.

    Returns the images `[num_samples, C, H, W]` in `[-1, 1]` (CPU) and the row's cost fields: `step_widths`,
    `num_full_passes`, `gflops_per_image` (mean) and `seconds_per_image` (total wall clock / images).
    """
    pixels, total_gflops, seconds, output = [], 0.0, 0.0, None
    for batch in sampling.batches:
        generators = seeded_generators(sampling.device, sampling.seed + batch.start, len(batch))
        output, elapsed = timed_call(
            sampling.device, sampling.pipeline, sampling.labels[batch.start : batch.stop].tolist(),
            num_inference_steps=row.steps(sampling.num_steps), guidance_scale=sampling.guidance_scale,
            generator=generators, output_type="pt", use_cache=row.use_cache, width_schedule=row.schedule_list())
        seconds += elapsed
        pixels.append((output.images.float() * 2 - 1).cpu())  # [B, C, H, W] in [-1, 1]
        total_gflops += output.gflops_per_image * len(batch)
        if bar is not None:
            bar.update()
    num_samples = sampling.labels.shape[0]
    return torch.cat(pixels), {"step_widths": output.widths, "num_full_passes": int(sum(output.full_passes)),
                               "gflops_per_image": total_gflops / num_samples, "seconds_per_image": seconds / num_samples}


def _add_baseline_ratios(row_results: list[dict]) -> dict:
    """Add `flops_ratio`, `fid_relative_difference` and `accuracy_difference_points` against the baseline row to
    every row result; return the baseline."""
    baseline = baseline_result(row_results)
    for result in row_results:
        result["flops_ratio"] = baseline["gflops_per_image"] / result["gflops_per_image"]
        result["fid_relative_difference"] = (
            (result["classifier_fid"] - baseline["classifier_fid"]) / baseline["classifier_fid"]
            if baseline["classifier_fid"] > 0 else None)
        result["accuracy_difference_points"] = 100.0 * (result["class_accuracy"] - baseline["class_accuracy"])
    return baseline


def _image_settings(pipeline, classifier, sampling: ImageSampling, reference: ImageReference, samples_per_class: int,
                    num_classes: int, batch_size: int) -> dict:
    return {
        "pipeline": pipeline.name_or_path,
        "classifier": getattr(classifier, "name_or_path", None),
        "samples_per_class": samples_per_class,
        "num_classes": num_classes,
        "num_samples": int(sampling.labels.shape[0]),
        **decode_settings(pipeline, sampling.num_steps, sampling.guidance_scale),
        "batch_size": batch_size,
        "seed": sampling.seed,
        "seeding": "image j has class j % num_classes and a torch.Generator seeded seed + j, in every row",
        "timing": "wall clock of the row's pipeline calls (sampling + tokenizer decode), excluding scoring, "
                  "after one untimed warm-up image",
        "gflops": "analytic transformer FLOPs (2 x multiply-adds), both guidance branches, tokenizer excluded",
        "reference": {"source": reference.source, "num_images": int(reference.pixels.shape[0]),
                      "statistics_file": None if reference.statistics_path is None else str(reference.statistics_path)},
    }


@torch.no_grad()
def evaluate_pipeline(
    pipeline,
    classifier: MGNTFeatureClassifier | str | os.PathLike | None = None,
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
        classifier: the feature classifier ([`check_classifier_fits`] the pipeline), or its folder; default the
            shipped `fashion-mnist-classifier`.
        rows: [`QualityRow`]s or row names; default [`default_rows`]. A row with its own `num_inference_steps`
            runs at that count (and its result records it).
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
        cache_dir: where the reference statistics and the tokenizer's reconstruction scores are cached (see
            [`cached_tokenizer_reconstruction`]); None computes both at every call.
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
    check_positive_int("samples_per_class", samples_per_class)
    check_positive_int("batch_size", batch_size)
    check_non_negative_int("seed", seed)
    check_non_negative_int("grid_images_per_class", grid_images_per_class)
    num_steps = check_num_inference_steps(pipeline, num_inference_steps)
    guidance_scale = resolve_guidance_scale(pipeline, guidance_scale)
    classifier = load_classifier(classifier)
    check_classifier_fits(pipeline, classifier)
    rows = resolve_rows(pipeline, rows, num_steps)
    _check_inception(inception_weights)

    device = place_on_device(device, pipeline, classifier)
    num_classes = pipeline.transformer.config.num_classes
    reference = _image_reference(classifier, reference, reference_labels, reference_statistics, cache_dir,
                                 batch_size, device)
    num_samples = num_classes * samples_per_class
    sampling = ImageSampling(pipeline, device, num_steps, guidance_scale, seed, torch.arange(num_samples) % num_classes,
                             batches(num_samples, batch_size))

    # One untimed image first: the first call pays for lazy initialisation (allocator, kernels, threads).
    pipeline([0], num_inference_steps=num_steps, guidance_scale=guidance_scale, output_type="pt",
             generator=seeded_generators(device, seed, 1)[0])

    row_results = []
    bar = tqdm(total=len(rows) * len(sampling.batches), desc="sampling", unit="batch", disable=not progress,
               mininterval=5)
    for row in rows:
        bar.set_postfix_str(row.name)
        pixels, cost = sample_row(sampling, row, bar)
        result = {**row_summary(row, num_steps), **cost,
                  **evaluate_samples(classifier, pixels, sampling.labels, reference.statistics, batch_size, device)}
        if inception_weights is not None:
            result["inception_fid"] = inception_fid(pixels, reference.pixels, inception_weights, batch_size, device)
        if sample_grid_dir is not None and grid_images_per_class:
            grid_path = Path(sample_grid_dir) / f"{row.name}.png"
            write_sample_grid(pixels, num_classes, min(grid_images_per_class, samples_per_class),
                              pipeline.transformer.config.id2label or {}, grid_path)
            result["sample_grid"] = str(grid_path)
        row_results.append(result)
    bar.close()
    baseline = _add_baseline_ratios(row_results)

    tokenizer = cached_tokenizer_reconstruction(pipeline.vqvae, classifier, reference.pixels, reference.statistics,
                                                reference.labels, cache_dir, batch_size, device, progress)
    subset = real_subset_indices(reference.labels, num_classes, samples_per_class, reference.pixels.shape[0])
    real_images = evaluate_samples(classifier, reference.pixels[subset],
                                   None if reference.labels is None else reference.labels[subset],
                                   reference.statistics, batch_size, device)
    return {
        "settings": _image_settings(pipeline, classifier, sampling, reference, samples_per_class, num_classes,
                                    batch_size),
        **measured_on(device),
        "baseline": baseline["name"],
        "rows": row_results,
        "tokenizer": tokenizer,
        "real_images": real_images,
    }


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _results_header(results: dict) -> list[str]:
    settings = results["settings"]
    return [
        "# Sample quality against compute",
        "",
        f"Pipeline `{settings['pipeline']}`, classifier `{settings['classifier']}`; "
        f"{settings['num_samples']} samples per row ({settings['samples_per_class']} per class), "
        f"{settings['num_inference_steps']} steps, guidance {settings['guidance_scale']:g} "
        f"({settings['guidance_schedule']}), seed {settings['seed']}, batch {settings['batch_size']}. "
        f"Reference: {settings['reference']['source']} ({settings['reference']['num_images']} images).",
        f"{format_machine(results)}.",
        "",
        "Schedules are `fraction x steps` segments of the hidden size. cFID: Fréchet distance in the classifier's "
        "feature space (lower is better); acc: class accuracy of the samples under the classifier. Ratios are "
        f"against `{results['baseline']}`: FLOPs ratio = baseline GFLOPs / row GFLOPs; cFID rel = (row - baseline) "
        "/ baseline; acc diff in percentage points. Seconds per image: wall clock of sampling and decoding.",
        "",
    ]


def _row_cells(row: dict, with_inception: bool, num_inference_steps: int) -> list[str]:
    relative = row["fid_relative_difference"]
    schedule = format_schedule(row["width_schedule"], row.get("num_inference_steps", num_inference_steps))
    cells = [
        f"`{row['name']}`", schedule,
        "yes" if row["use_cache"] else "no",
        f"{row['gflops_per_image']:.3f}", f"{row['flops_ratio']:.2f}x", f"{row['seconds_per_image']:.4f}",
        f"{row['classifier_fid']:.3f}", "n/a" if relative is None else f"{100 * relative:+.1f}%",
        _percent(row["class_accuracy"]), f"{row['accuracy_difference_points']:+.1f}",
    ]
    if with_inception:
        cells.append(f"{row['inception_fid']:.2f}" if "inception_fid" in row else "")
    return cells


def format_results_table(results: dict) -> str:
    """The results of [`evaluate_pipeline`] as a markdown document: settings, the row table, the tokenizer's
    reconstruction and the real-image floor."""
    with_inception = any("inception_fid" in row for row in results["rows"])
    lines = _results_header(results)
    header = ["row", "schedule", "cache", "GFLOPs/img", "FLOPs ratio", "s/img", "cFID", "cFID rel", "acc %",
              "acc diff (pts)"]
    if with_inception:
        header.append("Inception FID")
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(header) - 3)) + "|"]
    num_steps = results["settings"]["num_inference_steps"]
    lines += ["| " + " | ".join(_row_cells(row, with_inception, num_steps)) + " |" for row in results["rows"]]
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


def _plot_panel(axis, results: dict, key: str, scale: float, label: str) -> None:
    rows = results["rows"]
    for row in rows:
        x, y = row["gflops_per_image"], row[key] * scale
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


def plot_quality_vs_gflops(results: dict, path: str | os.PathLike) -> None:
    """PNG with two panels against GFLOPs per image: classifier FID, and class accuracy (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError("the quality plot needs matplotlib: pip install matplotlib (or mgnt_hf[plot])") from error
    figure, (fid_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot_panel(fid_axis, results, "classifier_fid", 1.0, "classifier FID (lower is better)")
    _plot_panel(accuracy_axis, results, "class_accuracy", 100.0, "class accuracy % (higher is better)")
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
    return write_result_files(results, output_dir, {"markdown": RESULTS_MARKDOWN, "json": RESULTS_JSON,
                                                    "plot": RESULTS_PLOT if plot else None},
                              format_results_table, plot_quality_vs_gflops)
