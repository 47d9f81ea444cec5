"""Video quality against compute: sample an `MGNTVideoPipeline` under several width schedules and score the videos.

The video counterpart of `mgnt_hf.quality` (whose rows, classifier checks and machine info it reuses). Each *row*
is one way of decoding (`maskgit`, `default`, `default+cache`, `width-<w>`, ...: see `mgnt_hf.quality.parse_row`),
measured on two tasks:

**Class-conditional generation.** `videos_per_class x num_classes` videos per row; video `j` has class
`j % num_classes` and its own generator seeded `seed + j` in every row (common random numbers: rows differ by
their schedule, not their noise). Every frame goes through a per-frame [`MGNTFeatureClassifier`] (for Moving
Fashion-MNIST: `pipelines/moving-fashion-mnist-frame-classifier`, trained by `training/train_classifier.py
--moving-fashion-mnist`):

- `classifier_fid`: Fréchet distance between the classifier features of every generated frame and of every
  real frame (`mgnt_hf.evaluation.frechet_distance`). It scores frames, not motion.
- `frame_accuracy`: fraction of generated frames classified as the video's intended class.
- `video_accuracy`: fraction of videos whose majority frame prediction is the intended class.
- Temporal consistency, two numbers that bracket failure modes from both sides:
  `label_consistency` is the mean over videos of the fraction of frames whose predicted class equals that
  video's majority prediction (ties go to the smallest class id); 1 means the object keeps its identity in
  every frame, `1 / T` is the floor. `frame_difference` is the mean absolute difference between consecutive
  frames, pixels in [0, 1], averaged over pixels, frame pairs and videos. It has no "better" direction on its
  own: read it next to the real videos' value (`real_videos`), since static samples fall below it and
  flickering samples rise above it.

**Frame prediction.** The first `context_frames` frames of `num_prediction_videos` real videos are given (with
their labels, or with `prediction_labels="none"` the null class and no guidance); the pipeline decodes the rest.
Frames `Tc .. T-1` are compared with the ground truth, pixels in [0, 1]:

- `psnr`: per frame `10 log10(1 / MSE)` dB, averaged over frames and videos. A frame with `MSE <= 1e-10`
  counts as `PSNR_CAP_DB` (100 dB), so identical frames give 100, not infinity, and the JSON stays finite.
- `ssim`: per frame, the Gaussian-window SSIM of Wang et al. (2004) as scikit-image computes it with
  `gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1`: an 11x11 Gaussian window
  (sigma 1.5), `K1 = 0.01`, `K2 = 0.03`, the map averaged over the window positions that fit inside the frame
  (no padding) and over channels. See [`ssim`].
- `psnr_per_frame` / `ssim_per_frame`: the same, per predicted frame index (how quality decays with distance
  from the context).

Two reference rows are computed once: `tokenizer_reconstruction` (encode -> decode of the whole real video, the
best the pipeline can do through its tokenizer) and `copy_last_frame` (every predicted frame is the last
context frame: the trivial baseline a model must beat).

**FVD** (Fréchet Video Distance, Unterthiner et al. 2018) is computed only when `i3d_torchscript` names a
TorchScript I3D file; otherwise it is `None` and the results say why. See [`i3d_features`] for the exact input
convention assumed.

**Cost.** `gflops_per_video` (the pipeline's analytic transformer FLOPs, both guidance branches) and
`seconds_per_video` (median over pipeline calls of the call's wall clock divided by its videos; CUDA
synchronised; one untimed warm-up call first), for generation and for prediction.

Typical use:

```python
>>> from mgnt_hf import MGNTVideoPipeline
>>> from mgnt_hf.evaluation import MGNTFeatureClassifier
>>> from mgnt_hf.video_quality import load_video_arrays, evaluate_video_pipeline, write_video_results
>>> pipe = MGNTVideoPipeline.from_pretrained("runs/video/mgnt")
>>> classifier = MGNTFeatureClassifier.from_pretrained("pipelines/moving-fashion-mnist-frame-classifier")
>>> videos, labels = load_video_arrays("data/moving-fashion-mnist", split="test")  # uint8 [N, T, H, W, C], [N]
>>> results = evaluate_video_pipeline(pipe, classifier, videos, labels, rows=["maskgit", "default+cache"],
...                                   videos_per_class=10, num_prediction_videos=100)
>>> write_video_results(results, "video-quality")     # results.md, results.json
```

`benchmarks/video_quality.py` is the command line ([`main`]).
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .evaluation import (
    PSNR_CAP_DB,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW_SIZE,
    FeatureStatisticsAccumulator,
    MGNTFeatureClassifier,
    classify_video_frames,
    frechet_distance,
    i3d_features,
    load_i3d,
    prediction_scores,
    video_classifier_scores,
    videos_to_tensor,
)
from .evaluation import load_video_arrays
from .evaluation.rows import (
    BASELINE_ROW,
    QualityRow,
    check_classifier_fits,
    check_num_inference_steps,
    decode_settings,
    default_rows,
    machine_info,
    parse_row,
    synchronize,
)
from .evaluation import load_classifier, real_subset_indices
from .resources import DEFAULT_FRAME_CLASSIFIER, DEFAULT_VIDEO_PIPELINE
from .utils.checks import check_positive_int
from .visualization import write_sample_strip

RESULTS_MARKDOWN = "results.md"
RESULTS_JSON = "results.json"
PREDICTION_LABELS = ("given", "none")


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def _check_count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _check_real_videos(pipeline, real_videos, real_labels) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real videos -> float `[N, T, C, H, W]` in [0, 1] at the tokenizer's clip shape; labels -> int64 `[N]` or None."""
    config = pipeline.vqvae.config
    expected = (config.num_frames, *config.resolution, config.num_channels)
    shape = tuple(getattr(real_videos, "shape", ()))
    if len(shape) != 5 or shape[1:] != expected or shape[0] < 2:
        raise ValueError(f"real_videos must be [N >= 2, {', '.join(map(str, expected))}] (N, T, H, W, C: the "
                         f"tokenizer's clips), got {list(shape) if shape else type(real_videos).__name__}")
    videos = videos_to_tensor(real_videos)
    if real_labels is None:
        return videos, None
    labels = torch.as_tensor(np.asarray(real_labels))
    num_classes = pipeline.transformer.config.num_classes
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (shape[0],):
        raise ValueError(f"real_labels must be {shape[0]} integer class ids [N], got dtype {labels.dtype}, shape "
                         f"{tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"real_labels must lie in [0, {num_classes}), got values in [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    return videos, labels.long()


def _check_context_frames(pipeline, context_frames) -> int:
    config = pipeline.vqvae.config
    step, num_frames = config.temporal_downsample_factor, config.num_frames
    allowed = list(range(step, num_frames, step))
    if isinstance(context_frames, bool) or not isinstance(context_frames, int) or context_frames not in allowed:
        raise ValueError(f"context_frames must be a multiple of the tokenizer's temporal_downsample_factor {step} "
                         f"below its {num_frames} frames, one of {allowed}; got {context_frames!r}")
    return context_frames


def _timed_calls(pipeline, device, batches, call) -> tuple[torch.Tensor, dict]:
    """Run `call(batch) -> pipeline output` for each batch (a range of video indices), timing each call.

    Returns the frames `[N, T, C, H, W]` (CPU) and `{"gflops_per_video", "seconds_per_video", "step_widths",
    "num_full_passes"}`; seconds are the median over calls of (call seconds / its videos)."""
    frames, total_gflops, seconds, output = [], 0.0, [], None
    for batch in batches:
        synchronize(device)
        start = time.perf_counter()
        output = call(batch)
        synchronize(device)
        seconds.append((time.perf_counter() - start) / len(batch))
        frames.append(output.frames.float().cpu())
        total_gflops += output.gflops_per_video * len(batch)
    frames = torch.cat(frames)
    return frames, {"gflops_per_video": total_gflops / frames.shape[0], "seconds_per_video": statistics.median(seconds),
                    "step_widths": output.widths, "num_full_passes": int(sum(output.full_passes))}


@torch.no_grad()
def evaluate_video_pipeline(
    pipeline,
    classifier: MGNTFeatureClassifier,
    real_videos,
    real_labels=None,
    rows: list[QualityRow | str] | None = None,
    videos_per_class: int = 10,
    num_inference_steps: int | None = None,
    guidance_scale: float | None = None,
    batch_size: int = 16,
    seed: int = 0,
    context_frames: int = 4,
    num_prediction_videos: int = 100,
    prediction_labels: str = "given",
    device: str | torch.device | None = None,
    i3d_torchscript: str | os.PathLike | None = None,
    classifier_batch_size: int = 500,
    sample_dir: str | os.PathLike | None = None,
    sample_videos: int = 4,
    progress: bool = True,
) -> dict:
    """Sample `pipeline` under each row's width schedule and cache setting, and score generation and prediction.

    Args:
        pipeline: an `MGNTVideoPipeline` with its video tokenizer; moved to `device`, progress bars turned off.
        classifier: the per-frame feature classifier; its input must be the tokenizer's frames
            (`mgnt_hf.quality.check_classifier_fits`) and its labels the transformer's classes.
        real_videos: real videos `[N, T, H, W, C]`, uint8 or float in [0, 1], at the tokenizer's clip shape
            (`num_frames`, `resolution`, `num_channels`); e.g. [`load_video_arrays`] of the test split. Every frame
            is the per-frame FID reference; the first `num_prediction_videos` are the prediction task.
        real_labels: `[N]` class ids of `real_videos`, or None (then no real accuracies, and
            `prediction_labels` must be `"none"`).
        rows: [`QualityRow`]s or row names (`mgnt_hf.quality.parse_row`); default `mgnt_hf.quality.default_rows`.
        videos_per_class: generated videos per class and row (video `j` has class `j % num_classes` and a
            generator seeded `seed + j`); 0 skips generation.
        num_inference_steps: decoding steps of every row; default the scheduler's step count.
        guidance_scale: classifier-free guidance scale of class-conditioned calls; default the scheduler's.
        batch_size: videos per pipeline call.
        seed: generation video `j` uses `seed + j`, prediction video `i` uses `seed + i`, in every row.
        context_frames: `Tc`, the given frames of the prediction task (a multiple of the tokenizer's
            `temporal_downsample_factor`, below `num_frames`).
        num_prediction_videos: real videos whose continuation is predicted (the first ones); 0 skips prediction.
        prediction_labels: `"given"` (each video's label, with guidance) or `"none"` (the null class, no guidance).
        device: where to run; default cuda if available, else cpu.
        i3d_torchscript: a TorchScript I3D file (see [`i3d_features`] for the convention): also report FVD.
            Without it every `fvd` is None and `settings["fvd"]` says why.
        classifier_batch_size: frames per classifier forward.
        sample_dir: when given, `<row>-generation.png` and `<row>-prediction.png` strips of the first
            `sample_videos` videos are written there.
        progress: show a tqdm bar over rows.

    Returns:
        A JSON-ready dict: `settings`, `machine`, `timestamp`, `baseline` (the row the FLOPs ratios are taken
        against: `maskgit` when evaluated, else the first), `rows` (per row: `name`, `width_schedule`,
        `use_cache`, `generation` and `prediction`, each None when skipped), `references` (`real_videos`: the
        generation scores of `videos_per_class` real videos per class, the floor at this sample size;
        `tokenizer_reconstruction` and `copy_last_frame`: prediction scores of the two reference predictors).
        `generation`: `gflops_per_video`, `seconds_per_video`, `flops_ratio`, `step_widths`, `num_full_passes`,
        `classifier_fid`, `frame_accuracy`, `video_accuracy`, `label_consistency`, `frame_difference`,
        `num_videos`, `num_frames`, `fvd`. `prediction`: the same cost fields, `psnr`, `ssim`, `psnr_per_frame`,
        `ssim_per_frame`, `num_videos`, `fvd` (predicted whole videos against the same real videos).
    """
    if pipeline.vqvae is None or not pipeline.vqvae.config.is_video or len(pipeline.transformer.config.token_grid) != 3:
        raise ValueError("evaluate_video_pipeline needs an MGNTVideoPipeline with its video tokenizer "
                         "(vqvae.config.num_frames set, a (t, h, w) token grid)")
    check_classifier_fits(pipeline, classifier)
    _check_count("videos_per_class", videos_per_class)
    _check_count("num_prediction_videos", num_prediction_videos)
    if videos_per_class == 0 and num_prediction_videos == 0:
        raise ValueError("videos_per_class and num_prediction_videos are both 0: nothing to evaluate")
    check_positive_int("batch_size", batch_size)
    check_positive_int("classifier_batch_size", classifier_batch_size)
    _check_count("seed", seed)
    _check_count("sample_videos", sample_videos)
    num_steps = check_num_inference_steps(pipeline, num_inference_steps)
    guidance_scale = pipeline.scheduler.config.guidance_scale if guidance_scale is None else guidance_scale
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, numbers.Real) \
            or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}")
    if prediction_labels not in PREDICTION_LABELS:
        raise ValueError(f"prediction_labels must be one of {list(PREDICTION_LABELS)}, got {prediction_labels!r}")
    real, real_labels = _check_real_videos(pipeline, real_videos, real_labels)
    if num_prediction_videos:
        _check_context_frames(pipeline, context_frames)
        if num_prediction_videos > real.shape[0]:
            raise ValueError(f"num_prediction_videos ({num_prediction_videos}) exceeds the {real.shape[0]} real videos")
        if prediction_labels == "given" and real_labels is None:
            raise ValueError("prediction_labels='given' needs real_labels; pass them or prediction_labels='none'")
    rows = [row if isinstance(row, QualityRow) else parse_row(row, pipeline, num_steps)
            for row in (default_rows(pipeline, num_steps) if rows is None else rows)]
    names = [row.name for row in rows]
    if not rows or len(set(names)) != len(names):
        raise ValueError(f"rows must be a non-empty list of distinct rows, got {names}")
    detector = None if i3d_torchscript is None else load_i3d(i3d_torchscript, device)

    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    classifier.to(device)
    if detector is not None:
        detector.to(device)
    config = pipeline.transformer.config
    num_classes, num_labels = config.num_classes, classifier.config.num_labels
    id2label = config.id2label or {}
    generator_device = "cuda" if device.type == "cuda" else "cpu"

    def generators(indices: range) -> list[torch.Generator]:
        return [torch.Generator(generator_device).manual_seed(seed + index) for index in indices]

    def batches(count: int) -> list[range]:
        return [range(start, min(start + batch_size, count)) for start in range(0, count, batch_size)]

    # Per-frame FID reference: every real frame.
    real_features, real_predictions = classify_video_frames(classifier, real, classifier_batch_size, device)
    reference = FeatureStatisticsAccumulator()
    reference.update(real_features)
    reference = reference.compute()
    real_i3d = None if detector is None else i3d_features(detector, real, device=device)

    num_generated = num_classes * videos_per_class
    generation_labels = torch.arange(num_generated) % num_classes
    generation_batches = batches(num_generated)
    context = real[:num_prediction_videos, :context_frames]  # [P, Tc, C, H, W] in [0, 1]
    truth = real[:num_prediction_videos, context_frames:]  # [P, T - Tc, C, H, W]
    context_labels = None if prediction_labels == "none" or not num_prediction_videos \
        else real_labels[:num_prediction_videos]
    prediction_batches = batches(num_prediction_videos)

    def generate(row: QualityRow, batch: range):
        return pipeline(generation_labels[batch.start : batch.stop].tolist(), num_inference_steps=num_steps,
                        guidance_scale=guidance_scale, generator=generators(batch), output_type="pt",
                        use_cache=row.use_cache, width_schedule=row.schedule_list())

    def predict(row: QualityRow, batch: range):
        labels = None if context_labels is None else context_labels[batch.start : batch.stop].tolist()
        return pipeline(labels, context_frames=context[batch.start : batch.stop],
                        num_inference_steps=num_steps, guidance_scale=None if labels is None else guidance_scale,
                        generator=generators(batch), output_type="pt", use_cache=row.use_cache,
                        width_schedule=row.schedule_list())

    # One untimed call per task first: the first call pays for lazy initialisation (allocator, kernels, threads).
    if num_generated:
        generate(rows[0], range(1))
    if num_prediction_videos:
        predict(rows[0], range(1))

    row_results = []
    for row in tqdm(rows, desc="rows", disable=not progress):
        result = {"name": row.name, "width_schedule": row.schedule_list(), "use_cache": row.use_cache,
                  "generation": None, "prediction": None}
        if num_generated:
            frames, cost = _timed_calls(pipeline, device, generation_batches, lambda batch: generate(row, batch))
            features, predictions = classify_video_frames(classifier, frames, classifier_batch_size, device)
            result["generation"] = {**cost, **video_classifier_scores(
                features, predictions, frames, generation_labels, reference, num_labels)}
            result["generation"]["fvd"] = None if detector is None else \
                frechet_distance(i3d_features(detector, frames, device=device), real_i3d)
            if sample_dir is not None and sample_videos:
                shown = list(range(min(sample_videos, num_generated)))
                path = Path(sample_dir) / f"{row.name}-generation.png"
                write_sample_strip([frames[index] for index in shown],
                             [f"{int(generation_labels[i])}: {id2label.get(int(generation_labels[i]), '')}"
                              for i in shown], path)
                result["generation"]["sample_strip"] = str(path)
        if num_prediction_videos:
            frames, cost = _timed_calls(pipeline, device, prediction_batches, lambda batch: predict(row, batch))
            result["prediction"] = {**cost, **prediction_scores(frames[:, context_frames:], truth)}
            result["prediction"]["fvd"] = None if detector is None else \
                frechet_distance(i3d_features(detector, frames, device=device), real_i3d[:num_prediction_videos])
            if sample_dir is not None and sample_videos:
                shown = range(min(sample_videos, num_prediction_videos))
                path = Path(sample_dir) / f"{row.name}-prediction.png"
                write_sample_strip([video for index in shown for video in (real[index], frames[index])],
                             [name for index in shown for name in (f"real {index}", f"predicted {index}")], path)
                result["prediction"]["sample_strip"] = str(path)
        row_results.append(result)

    baseline = next((r for r in row_results if r["name"] == BASELINE_ROW), row_results[0])
    for result in row_results:
        for task in ("generation", "prediction"):
            if result[task] is not None:
                result[task]["flops_ratio"] = baseline[task]["gflops_per_video"] / result[task]["gflops_per_video"]

    references = {"real_videos": None, "tokenizer_reconstruction": None, "copy_last_frame": None}
    if num_generated:
        subset = real_subset_indices(real_labels, num_classes, videos_per_class, real.shape[0])
        references["real_videos"] = video_classifier_scores(
            real_features.view(real.shape[0], real.shape[1], -1)[subset].flatten(0, 1), real_predictions[subset],
            real[subset], None if real_labels is None else real_labels[subset], reference, num_labels)
        references["real_videos"]["fvd"] = None if detector is None else frechet_distance(real_i3d[subset], real_i3d)
    if num_prediction_videos:
        reconstructions = []
        for batch in prediction_batches:
            clip = real[batch.start : batch.stop].to(device).permute(0, 2, 1, 3, 4) * 2 - 1  # [B, C, T, H, W]
            decoded = pipeline.vqvae.decode(pipeline.vqvae.encode(clip)).float()  # [B, C, T, H, W] in [-1, 1]
            reconstructions.append((decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).cpu())
        reconstructions = torch.cat(reconstructions)
        references["tokenizer_reconstruction"] = prediction_scores(reconstructions[:, context_frames:], truth)
        copies = context[:, -1:].expand_as(truth)
        references["copy_last_frame"] = prediction_scores(copies, truth)

    fvd_note = (f"I3D features from {os.fspath(i3d_torchscript)} (see mgnt_hf.video_quality.i3d_features)"
                if detector is not None else "not computed: pass i3d_torchscript (a TorchScript I3D such as "
                "StyleGAN-V's i3d_torchscript.pt) to report FVD")
    return {
        "settings": {
            "pipeline": pipeline.name_or_path,
            "classifier": getattr(classifier, "name_or_path", None),
            "num_real_videos": int(real.shape[0]),
            "frames_per_video": int(real.shape[1]),
            "videos_per_class": videos_per_class,
            "num_classes": num_classes,
            "num_generated_videos": num_generated,
            "context_frames": context_frames if num_prediction_videos else None,
            "num_prediction_videos": num_prediction_videos,
            "prediction_labels": prediction_labels,
            **decode_settings(pipeline, num_steps, guidance_scale),
            "batch_size": batch_size,
            "seed": seed,
            "seeding": "generated video j has class j % num_classes and a generator seeded seed + j; predicted "
                       "video i (real video i's continuation) a generator seeded seed + i; the same in every row",
            "timing": "median over pipeline calls of (call wall clock / its videos): sampling + tokenizer encode of "
                      "the context + decode, excluding scoring, after one untimed warm-up call per task",
            "gflops": "analytic transformer FLOPs (2 x multiply-adds), both guidance branches, tokenizer excluded",
            "psnr": f"per frame, pixels in [0, 1], capped at {PSNR_CAP_DB:g} dB; mean over predicted frames",
            "ssim": f"per frame, {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} Gaussian window sigma {SSIM_SIGMA}, "
                    f"K1 {SSIM_K1}, K2 {SSIM_K2}, valid window positions; mean over predicted frames",
            "fvd": fvd_note,
        },
        "machine": machine_info(device),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "baseline": baseline["name"],
        "rows": row_results,
        "references": references,
    }


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _number(value, digits: int = 3, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _schedule(schedule: list[list]) -> str:
    return " ".join(f"{fraction:g}x{steps}" for fraction, steps in schedule)


def format_video_results_table(results: dict) -> str:
    """The results of [`evaluate_video_pipeline`] as a markdown document: settings, a generation table and a
    prediction table (each with its reference rows)."""
    settings, machine, references = results["settings"], results["machine"], results["references"]
    lines = [
        "# Video quality against compute",
        "",
        f"Pipeline `{settings['pipeline']}`, frame classifier `{settings['classifier']}`; "
        f"{settings['num_real_videos']} real videos of {settings['frames_per_video']} frames; "
        f"{settings['num_inference_steps']} steps, guidance {settings['guidance_scale']:g} "
        f"({settings['guidance_schedule']}), seed {settings['seed']}, batch {settings['batch_size']}.",
        f"Device {machine['device']}{' (' + machine['device_name'] + ')' if 'device_name' in machine else ''}, "
        f"torch {machine['torch']} with {machine['torch_num_threads']} threads, mgnt_hf {machine['mgnt_hf']}, "
        f"{results['timestamp']}. FVD: {settings['fvd']}.",
        "",
        f"GFLOPs: analytic transformer FLOPs per video, both guidance branches. FLOPs ratio = `{results['baseline']}` "
        "GFLOPs / row GFLOPs. s/video: median over pipeline calls.",
        "",
    ]
    rows = results["rows"]
    if settings["num_generated_videos"]:
        lines += [
            f"## Class-conditional generation ({settings['num_generated_videos']} videos per row, "
            f"{settings['videos_per_class']} per class)",
            "",
            "cFID: Fréchet distance of the classifier features of every frame against every real frame (lower is "
            "better). frame acc / video acc: frames / majority votes classified as the intended class. consistency: "
            "share of a video's frames predicted as its majority class. frame diff: mean |frame t+1 - frame t|, "
            "pixels in [0, 1]; compare with the real videos (lower: too static, higher: flicker).",
            "",
            "| row | schedule | cache | GFLOPs/video | FLOPs ratio | s/video | cFID | frame acc % | video acc % | "
            "consistency | frame diff | FVD |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]

        def generation_cells(scores: dict) -> list[str]:
            return [_number(scores["classifier_fid"]), _number(scores["frame_accuracy"], 1, 100),
                    _number(scores["video_accuracy"], 1, 100), _number(scores["label_consistency"]),
                    _number(scores["frame_difference"], 4), _number(scores["fvd"], 2)]

        for row in rows:
            scores = row["generation"]
            lines.append("| " + " | ".join([
                f"`{row['name']}`", _schedule(row["width_schedule"]), "yes" if row["use_cache"] else "no",
                f"{scores['gflops_per_video']:.3f}", f"{scores['flops_ratio']:.2f}x",
                f"{scores['seconds_per_video']:.4f}", *generation_cells(scores)]) + " |")
        real = references["real_videos"]
        lines.append("| " + " | ".join([f"real videos ({real['num_videos']})", "", "", "", "", "",
                                        *generation_cells(real)]) + " |")
        lines.append("")
    if settings["num_prediction_videos"]:
        lines += [
            f"## Frame prediction ({settings['num_prediction_videos']} real videos, first "
            f"{settings['context_frames']} frames given, labels {settings['prediction_labels']})",
            "",
            f"PSNR (dB, capped at {PSNR_CAP_DB:g}) and SSIM of the predicted frames against the real ones, pixels in "
            "[0, 1], mean over frames and videos (higher is better). Reference rows: the tokenizer's reconstruction "
            "of the real video (what decoding through the tokenizer allows) and copying the last given frame (the "
            "trivial baseline).",
            "",
            "| row | schedule | cache | GFLOPs/video | FLOPs ratio | s/video | PSNR | SSIM | FVD |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in rows:
            scores = row["prediction"]
            lines.append("| " + " | ".join([
                f"`{row['name']}`", _schedule(row["width_schedule"]), "yes" if row["use_cache"] else "no",
                f"{scores['gflops_per_video']:.3f}", f"{scores['flops_ratio']:.2f}x",
                f"{scores['seconds_per_video']:.4f}", _number(scores["psnr"], 2), _number(scores["ssim"], 4),
                _number(scores["fvd"], 2)]) + " |")
        for name, key in (("tokenizer reconstruction", "tokenizer_reconstruction"),
                          ("copy last frame", "copy_last_frame")):
            scores = references[key]
            lines.append(f"| {name} | | | | | | {_number(scores['psnr'], 2)} | {_number(scores['ssim'], 4)} | |")
        lines.append("")
    return "\n".join(lines)


def write_video_results(results: dict, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write `results.md` ([`format_video_results_table`]) and `results.json` to `output_dir`; return their paths
    (`markdown`, `json`). The sample strips are written during the evaluation (its `sample_dir`)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": output_dir / RESULTS_MARKDOWN, "json": output_dir / RESULTS_JSON}
    paths["markdown"].write_text(format_video_results_table(results))
    paths["json"].write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    return paths


# ---------------------------------------------------------------------------------------------
# Command line (benchmarks/video_quality.py)
# ---------------------------------------------------------------------------------------------

def add_video_evaluate_arguments(parser) -> None:
    """The options of the video evaluation command (`benchmarks/video_quality.py`) on an argparse parser."""
    parser.add_argument("--pipeline", default=None,
                        help="saved MGNTVideoPipeline folder or Hub repo id (default: the shipped "
                             "mgnt-moving-fashion-mnist)")
    parser.add_argument("--classifier", default=None,
                        help=f"per-frame MGNTFeatureClassifier folder (default: the shipped "
                             f"{DEFAULT_FRAME_CLASSIFIER})")
    parser.add_argument("--dataset", default="data/moving-fashion-mnist",
                        help="real videos: a save_to_disk folder or datasets name (default: data/moving-fashion-mnist)")
    parser.add_argument("--split", default="test", help="split of --dataset (default: test)")
    parser.add_argument("--limit-real", type=int, default=None, help="use only the first N real videos")
    parser.add_argument("--rows", nargs="+", default=None,
                        help="rows to evaluate (default: maskgit, width-<w> for each smaller nested width, default, "
                             "default+cache, reverse+cache); names: maskgit, default, reverse, width-<w>, a preset "
                             "name, each optionally with +cache")
    parser.add_argument("--videos-per-class", type=int, default=10,
                        help="generated videos per class and row; 0 skips generation (default 10)")
    parser.add_argument("--context-frames", type=int, default=4, help="given frames for prediction (default 4)")
    parser.add_argument("--num-prediction-videos", type=int, default=100,
                        help="real videos whose continuation is predicted; 0 skips prediction (default 100)")
    parser.add_argument("--prediction-labels", choices=PREDICTION_LABELS, default="given",
                        help="condition prediction on the real label (given, with guidance) or not (none)")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps of every row (default: scheduler's)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance scale; 1 = off (default: scheduler's)")
    parser.add_argument("--batch-size", type=int, default=16, help="videos per pipeline call (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="video j uses a generator seeded seed + j in every row")
    parser.add_argument("--i3d-torchscript", default=None,
                        help="TorchScript I3D (StyleGAN-V's i3d_torchscript.pt convention): also report FVD")
    parser.add_argument("--sample-videos", type=int, default=4,
                        help="videos per sample strip PNG (samples/<row>-<task>.png); 0 = none (default 4)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output-dir", default="video-quality", help="folder for the results (default: ./video-quality)")


def run_video_evaluate(args) -> int:
    """Load the pipeline, the classifier and the real videos named by `args`, evaluate, write and print the results."""
    from .cli import resolve_pipeline
    from .pipeline_mgnt_video import MGNTVideoPipeline

    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    pipe = MGNTVideoPipeline.from_pretrained(resolve_pipeline(args.pipeline, DEFAULT_VIDEO_PIPELINE))
    classifier = load_classifier(args.classifier, DEFAULT_FRAME_CLASSIFIER)
    videos, labels = load_video_arrays(args.dataset, args.split, limit=args.limit_real)
    num_frames = pipe.vqvae.config.num_frames
    if videos.shape[1] > num_frames:
        print(f"the real videos have {videos.shape[1]} frames; evaluating their first {num_frames} (the tokenizer's "
              f"clip length)")
        videos = videos[:, :num_frames]
    output_dir = Path(args.output_dir)
    results = evaluate_video_pipeline(
        pipe, classifier, videos, labels, rows=args.rows, videos_per_class=args.videos_per_class,
        num_inference_steps=args.steps, guidance_scale=args.guidance, batch_size=args.batch_size, seed=args.seed,
        context_frames=args.context_frames, num_prediction_videos=args.num_prediction_videos,
        prediction_labels=args.prediction_labels, device=args.device, i3d_torchscript=args.i3d_torchscript,
        sample_dir=output_dir / "samples", sample_videos=args.sample_videos,
    )
    results["settings"]["real_videos"] = {"dataset": args.dataset, "split": args.split, "limit": args.limit_real}
    paths = write_video_results(results, output_dir)
    print(format_video_results_table(results))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python benchmarks/video_quality.py ...`: errors a user can fix print one line and exit with status 2."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="video_quality",
        description="Sample an MGNTVideoPipeline under several width schedules with the same seeds and report, per "
                    "row, class-conditional generation (per-frame classifier FID, accuracy, temporal consistency) "
                    "and frame prediction (PSNR, SSIM) with GFLOPs and seconds per video; FVD with "
                    "--i3d-torchscript. Writes results.md, results.json and samples/ to --output-dir.")
    add_video_evaluate_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_video_evaluate(args)
    except (ValueError, OSError, ImportError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
