"""Video quality against compute: sample an `MGNTVideoPipeline` under several rows and score the videos.

The video counterpart of `mgnt_hf.evaluation.image`, with the same rows (`maskgit`, `default`, `default+cache`,
`width-<w>`, ... or [`QualityRow`]s: see `mgnt_hf.evaluation.rows`), measured on two tasks:

**Class-conditional generation.** `videos_per_class x num_classes` videos per row; video `j` has class
`j % num_classes` and its own generator seeded `seed + j` in every row (common random numbers: rows differ by
their schedule, not their noise). Every frame goes through a per-frame [`MGNTFeatureClassifier`] (for Moving
Fashion-MNIST: the shipped `moving-fashion-mnist-frame-classifier`, trained by `training/train_classifier.py
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
  (no padding) and over channels. See `mgnt_hf.evaluation.ssim`.
- `psnr_per_frame` / `ssim_per_frame`: the same, per predicted frame index (how quality decays with distance
  from the context).

Reference rows are computed once: for generation, the real videos and the same videos through the tokenizer
(`tokenizer_reconstruction_videos`: whether its frames stay recognisable, the ceiling of every row); for
prediction, `tokenizer_reconstruction` (encode -> decode of the whole real video, the best the pipeline can do
through its tokenizer) and `copy_last_frame` (every predicted frame is the last context frame: the trivial
baseline a model must beat).

[`video_tokenizer_reconstruction`] scores a video tokenizer on its own (no transformer): PSNR, SSIM, and the
frame classifier's accuracy on reconstructed against real frames (`mgnt evaluate-tokenizer`).

**FVD** (Fréchet Video Distance, Unterthiner et al. 2018) is computed only when `i3d_torchscript` names a
TorchScript I3D file; otherwise it is `None` and the results say why. See `mgnt_hf.evaluation.i3d_features` for
the exact input convention assumed.

**Cost.** `gflops_per_video` (the pipeline's analytic transformer FLOPs, both guidance branches) and
`seconds_per_video` (median over pipeline calls of the call's wall clock divided by its videos; CUDA
synchronised; one untimed warm-up call first), for generation and for prediction.

**Frontier.** Per task, the Pareto front of each quality measure against `gflops_per_video` over the evaluated
rows (cFID and frame accuracy for generation, PSNR and SSIM for prediction), and the fair comparison of the row
`pipe(...)` runs by default (`default+cache`, or `default` when the scheduler's cache is off) on the first
measure: against every MaskGIT row (any step count) and every single-width row within 1.25x its GFLOPs
(`mgnt_hf.evaluation.frontier`). Rows named as in the image frontier (`maskgit-4`, `width-64-6+cache`, ...)
make it the video frontier.

```python
>>> from mgnt_hf import MGNTFeatureClassifier, MGNTVideoPipeline, shipped
>>> from mgnt_hf.evaluation import load_video_arrays, evaluate_video_pipeline, write_video_results
>>> pipe = MGNTVideoPipeline.from_pretrained(shipped("mgnt-moving-fashion-mnist"))
>>> classifier = MGNTFeatureClassifier.from_pretrained(shipped("moving-fashion-mnist-frame-classifier"))
>>> videos, labels = load_video_arrays("data/moving-fashion-mnist", split="test")  # uint8 [N, T, H, W, C], [N]
>>> results = evaluate_video_pipeline(pipe, classifier, videos, labels, rows=["maskgit", "default+cache"],
...                                   videos_per_class=10, num_prediction_videos=100)
>>> write_video_results(results, "video-quality")     # results.md, results.json
```

`mgnt evaluate-video` and `benchmarks/video_quality.py` are its command line (`mgnt_hf.cli`).
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..modeling_feature_classifier import MGNTFeatureClassifier
from ..resources import DEFAULT_FRAME_CLASSIFIER
from ..utils.checks import check_non_negative_int, check_positive_int
from ..visualization import write_sample_strip
from .data import load_classifier, real_subset_indices, videos_to_tensor
from .frontier import fair_comparison, pareto_front, row_family
from .metrics import (
    PSNR_CAP_DB,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW_SIZE,
    FeatureStatistics,
    FeatureStatisticsAccumulator,
    classify_video_frames,
    frechet_distance,
    i3d_features,
    load_i3d,
    prediction_scores,
    video_classifier_scores,
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
)

RESULTS_MARKDOWN = "results.md"
RESULTS_JSON = "results.json"
PREDICTION_LABELS = ("given", "none")
# Per task, the quality measures of the Pareto fronts as (key, higher is better); the fair comparison uses the first.
FRONTIER_MEASURES = {"generation": (("classifier_fid", False), ("frame_accuracy", True)),
                     "prediction": (("psnr", True), ("ssim", True))}
FVD_NOT_COMPUTED = ("not computed: pass i3d_torchscript (a TorchScript I3D such as StyleGAN-V's i3d_torchscript.pt) "
                    "to report FVD")


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _check_clips_and_labels(vq_config, real_videos, real_labels, num_classes: int,
                            classes: str = "") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real videos `[N >= 2, T, H, W, C]` at the tokenizer's clip shape -> float `[N, T, C, H, W]` in [0, 1];
    labels -> int64 `[N]` ids in `[0, num_classes)` or None (`classes` names those classes in the error)."""
    expected = (vq_config.num_frames, *vq_config.resolution, vq_config.num_channels)
    shape = tuple(getattr(real_videos, "shape", ()))
    if len(shape) != 5 or shape[1:] != expected or shape[0] < 2:
        raise ValueError(f"real_videos must be [N >= 2, {', '.join(map(str, expected))}] (N, T, H, W, C: the "
                         f"tokenizer's clips), got {list(shape) if shape else type(real_videos).__name__}")
    videos = videos_to_tensor(real_videos)
    if real_labels is None:
        return videos, None
    labels = torch.as_tensor(np.asarray(real_labels))
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (shape[0],):
        raise ValueError(f"real_labels must be {shape[0]} integer class ids [N], got dtype {labels.dtype}, shape "
                         f"{tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"real_labels must lie in [0, {num_classes}){classes}, got values in [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    return videos, labels.long()


def _check_real_videos(pipeline, real_videos, real_labels) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Real videos and labels of the pipeline's tokenizer clips and transformer classes ([`_check_clips_and_labels`])."""
    return _check_clips_and_labels(pipeline.vqvae.config, real_videos, real_labels,
                                   pipeline.transformer.config.num_classes)


def _check_context_frames(pipeline, context_frames) -> int:
    config = pipeline.vqvae.config
    step, num_frames = config.temporal_downsample_factor, config.num_frames
    allowed = list(range(step, num_frames, step))
    if isinstance(context_frames, bool) or not isinstance(context_frames, int) or context_frames not in allowed:
        raise ValueError(f"context_frames must be a multiple of the tokenizer's temporal_downsample_factor {step} "
                         f"below its {num_frames} frames, one of {allowed}; got {context_frames!r}")
    return context_frames


def _check_video_pipeline(pipeline, classifier) -> None:
    if pipeline.vqvae is None or not pipeline.vqvae.config.is_video or len(pipeline.transformer.config.token_grid) != 3:
        raise ValueError("evaluate_video_pipeline needs an MGNTVideoPipeline with its video tokenizer "
                         "(vqvae.config.num_frames set, a (t, h, w) token grid)")
    check_classifier_fits(pipeline, classifier)


def _check_counts(videos_per_class, num_prediction_videos, batch_size, classifier_batch_size, seed,
                  sample_videos) -> None:
    check_non_negative_int("videos_per_class", videos_per_class)
    check_non_negative_int("num_prediction_videos", num_prediction_videos)
    if videos_per_class == 0 and num_prediction_videos == 0:
        raise ValueError("videos_per_class and num_prediction_videos are both 0: nothing to evaluate")
    check_positive_int("batch_size", batch_size)
    check_positive_int("classifier_batch_size", classifier_batch_size)
    check_non_negative_int("seed", seed)
    check_non_negative_int("sample_videos", sample_videos)


def _check_prediction(pipeline, real: torch.Tensor, real_labels, num_prediction_videos: int, context_frames,
                      prediction_labels: str) -> None:
    if not num_prediction_videos:
        return
    _check_context_frames(pipeline, context_frames)
    if num_prediction_videos > real.shape[0]:
        raise ValueError(f"num_prediction_videos ({num_prediction_videos}) exceeds the {real.shape[0]} real videos")
    if prediction_labels == "given" and real_labels is None:
        raise ValueError("prediction_labels='given' needs real_labels; pass them or prediction_labels='none'")


# ---------------------------------------------------------------------------------------------
# The two tasks
# ---------------------------------------------------------------------------------------------


@dataclass
class VideoTasks:
    """What every row of a video evaluation shares: the settings of its pipeline calls, the generation task (the
    intended labels) and the prediction task (real context frames, their continuation, their labels)."""

    pipeline: object
    device: torch.device
    num_steps: int
    guidance_scale: float
    seed: int
    batch_size: int
    generation_labels: torch.Tensor  # [G]: video j has class j % num_classes
    context: torch.Tensor  # [P, Tc, C, H, W] in [0, 1]
    truth: torch.Tensor  # [P, T - Tc, C, H, W] in [0, 1]
    context_labels: torch.Tensor | None  # [P], or None: the null class and no guidance

    @property
    def num_generated(self) -> int:
        return int(self.generation_labels.shape[0])

    @property
    def num_predicted(self) -> int:
        return int(self.context.shape[0])

    @property
    def context_frames(self) -> int:
        return int(self.context.shape[1])


def generate_batch(tasks: VideoTasks, row: QualityRow, batch: range):
    """The pipeline output of generation videos `batch` under `row` (video j: its label, a generator seeded seed + j)."""
    return tasks.pipeline(tasks.generation_labels[batch.start : batch.stop].tolist(),
                          num_inference_steps=row.steps(tasks.num_steps), guidance_scale=tasks.guidance_scale,
                          generator=seeded_generators(tasks.device, tasks.seed + batch.start, len(batch)),
                          output_type="pt", use_cache=row.use_cache, width_schedule=row.schedule_list())


def predict_batch(tasks: VideoTasks, row: QualityRow, batch: range):
    """The pipeline output continuing real videos `batch` from their context frames under `row`."""
    labels = None if tasks.context_labels is None else tasks.context_labels[batch.start : batch.stop].tolist()
    return tasks.pipeline(labels, context_frames=tasks.context[batch.start : batch.stop],
                          num_inference_steps=row.steps(tasks.num_steps),
                          guidance_scale=None if labels is None else tasks.guidance_scale,
                          generator=seeded_generators(tasks.device, tasks.seed + batch.start, len(batch)),
                          output_type="pt", use_cache=row.use_cache, width_schedule=row.schedule_list())


def timed_calls(tasks: VideoTasks, row: QualityRow, count: int, call) -> tuple[torch.Tensor, dict]:
    """Run `call(tasks, row, batch) -> pipeline output` ([`generate_batch`] or [`predict_batch`]) for the `count`
    videos in batches, timing each call.

    Returns the frames `[count, T, C, H, W]` (CPU) and `{"gflops_per_video", "seconds_per_video", "step_widths",
    "num_full_passes"}`; seconds are the median over calls of (call seconds / its videos)."""
    frames, total_gflops, seconds, output = [], 0.0, [], None
    for batch in batches(count, tasks.batch_size):
        output, elapsed = timed_call(tasks.device, call, tasks, row, batch)
        seconds.append(elapsed / len(batch))
        frames.append(output.frames.float().cpu())
        total_gflops += output.gflops_per_video * len(batch)
    frames = torch.cat(frames)
    return frames, {"gflops_per_video": total_gflops / frames.shape[0], "seconds_per_video": statistics.median(seconds),
                    "step_widths": output.widths, "num_full_passes": int(sum(output.full_passes))}


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


@dataclass
class VideoReference:
    """The real videos of an evaluation: every frame's classifier features and predictions, their statistics
    (the per-frame FID reference) and, with a detector, the videos' I3D features."""

    videos: torch.Tensor  # [N, T, C, H, W] in [0, 1]
    labels: torch.Tensor | None
    features: torch.Tensor  # [N * T, feature_size]
    predictions: torch.Tensor  # [N, T]
    statistics: FeatureStatistics
    i3d: torch.Tensor | None  # [N, D]


def _video_reference(classifier, detector, real: torch.Tensor, real_labels, classifier_batch_size: int,
                     device) -> VideoReference:
    features, predictions = classify_video_frames(classifier, real, classifier_batch_size, device)
    accumulator = FeatureStatisticsAccumulator()
    accumulator.update(features)
    i3d = None if detector is None else i3d_features(detector, real, device=device)
    return VideoReference(real, real_labels, features, predictions, accumulator.compute(), i3d)


def _fvd(detector, frames: torch.Tensor, real_i3d: torch.Tensor | None, device) -> float | None:
    return None if detector is None else frechet_distance(i3d_features(detector, frames, device=device), real_i3d)


def _strip_label(labels: torch.Tensor, index: int, id2label: dict) -> str:
    return f"{int(labels[index])}: {id2label.get(int(labels[index]), '')}"


def _generation_result(tasks: VideoTasks, row: QualityRow, classifier, detector, reference: VideoReference,
                       classifier_batch_size: int, sample_dir, sample_videos: int) -> dict:
    frames, cost = timed_calls(tasks, row, tasks.num_generated, generate_batch)
    features, predictions = classify_video_frames(classifier, frames, classifier_batch_size, tasks.device)
    result = {**cost, **video_classifier_scores(features, predictions, frames, tasks.generation_labels,
                                                reference.statistics, classifier.config.num_labels)}
    result["fvd"] = _fvd(detector, frames, reference.i3d, tasks.device)
    if sample_dir is not None and sample_videos:
        shown = range(min(sample_videos, tasks.num_generated))
        id2label = tasks.pipeline.transformer.config.id2label or {}
        path = Path(sample_dir) / f"{row.name}-generation.png"
        write_sample_strip([frames[index] for index in shown],
                           [_strip_label(tasks.generation_labels, index, id2label) for index in shown], path)
        result["sample_strip"] = str(path)
    return result


def _prediction_result(tasks: VideoTasks, row: QualityRow, detector, reference: VideoReference, sample_dir,
                       sample_videos: int) -> dict:
    frames, cost = timed_calls(tasks, row, tasks.num_predicted, predict_batch)
    result = {**cost, **prediction_scores(frames[:, tasks.context_frames:], tasks.truth)}
    result["fvd"] = _fvd(detector, frames, None if reference.i3d is None else reference.i3d[:tasks.num_predicted],
                         tasks.device)
    if sample_dir is not None and sample_videos:
        shown = range(min(sample_videos, tasks.num_predicted))
        path = Path(sample_dir) / f"{row.name}-prediction.png"
        write_sample_strip([video for index in shown for video in (reference.videos[index], frames[index])],
                           [name for index in shown for name in (f"real {index}", f"predicted {index}")], path)
        result["sample_strip"] = str(path)
    return result


def _add_flops_ratios(row_results: list[dict]) -> dict:
    """Add `flops_ratio` (baseline GFLOPs / row GFLOPs) to every task of every row; return the baseline row."""
    baseline = baseline_result(row_results)
    for result in row_results:
        for task in ("generation", "prediction"):
            if result[task] is not None:
                result[task]["flops_ratio"] = baseline[task]["gflops_per_video"] / result[task]["gflops_per_video"]
    return baseline


def video_frontier(row_results: list[dict], default_row: str) -> dict:
    """Per evaluated task: `pareto_fronts` (each [`FRONTIER_MEASURES`] key -> the row names on its front against
    `gflops_per_video`, cheapest first) and, when `default_row` and a MaskGIT row were evaluated,
    `fair_comparison` of `default_row` on the task's first measure ([`fair_comparison`])."""
    frontier = {}
    for task, measures in FRONTIER_MEASURES.items():
        rows = [{"name": row["name"], **row[task]} for row in row_results if row[task] is not None]
        if not rows:
            continue
        entry = {"pareto_fronts": {key: pareto_front(rows, key, "gflops_per_video", higher_is_better)
                                   for key, higher_is_better in measures}}
        names = {row["name"] for row in rows}
        if default_row in names and any(row_family(name) == "maskgit" for name in names):
            key, higher_is_better = measures[0]
            entry["fair_comparison"] = fair_comparison(rows, default_row, quality_key=key,
                                                       cost_key="gflops_per_video", higher_is_better=higher_is_better)
        frontier[task] = entry
    return frontier


def _check_tokenizer_videos(vqvae, classifier, real_videos, real_labels) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`ValueError` unless `vqvae` is a video tokenizer, the classifier takes its frames, and the real videos
    (`[N >= 2, T, H, W, C]` at its clip shape) and labels (`[N]` ids of the classifier's classes) fit."""
    config = getattr(vqvae, "config", None)
    if config is None or not getattr(config, "is_video", False):
        raise ValueError("video_tokenizer_reconstruction needs a video MGNTVQModel (config.num_frames set); for an "
                         "image tokenizer use mgnt_hf.evaluation.tokenizer_reconstruction")
    classifier_shape = (classifier.config.num_channels, classifier.config.image_size, classifier.config.image_size)
    if classifier_shape != (config.num_channels, *config.resolution):
        raise ValueError(f"the tokenizer's frames are {[config.num_channels, *config.resolution]} (channels, height, "
                         f"width) but the classifier takes {list(classifier_shape)}")
    return _check_clips_and_labels(config, real_videos, real_labels, classifier.config.num_labels,
                                   " (the classifier's classes)")


@torch.no_grad()
def reconstruct_videos(vqvae, videos: torch.Tensor, batch_size: int = 16, device=None,
                       progress: bool = False) -> torch.Tensor:
    """Encode -> decode `videos` `float [N, T, C, H, W]` in [0, 1] through a video tokenizer, batch by batch:
    the reconstructions in the same layout and range, on the CPU."""
    check_positive_int("batch_size", batch_size)
    device = torch.device(device) if device is not None else vqvae.device
    reconstructions = []
    for batch in tqdm(batches(videos.shape[0], batch_size), desc="tokenizer reconstruction", disable=not progress,
                      mininterval=5):
        clip = videos[batch.start : batch.stop].to(device).permute(0, 2, 1, 3, 4) * 2 - 1  # [B, C, T, H, W]
        decoded = vqvae.decode(vqvae.encode(clip.to(vqvae.dtype))).float()  # [B, C, T, H, W] in [-1, 1]
        reconstructions.append((decoded / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4).cpu())
    return torch.cat(reconstructions)


@torch.no_grad()
def video_tokenizer_reconstruction(
    vqvae,
    classifier: MGNTFeatureClassifier | str | os.PathLike | None,
    real_videos,
    real_labels=None,
    batch_size: int = 16,
    classifier_batch_size: int = 500,
    device=None,
    progress: bool = False,
) -> dict:
    """How well a video tokenizer alone reproduces real videos, and whether its frames stay recognisable.

    Every video of `real_videos` goes encode -> decode; reconstructions and originals are compared pixel by pixel
    and both go through the per-frame classifier.

    Args:
        vqvae: a video `MGNTVQModel` (`config.num_frames` set).
        classifier: the per-frame feature classifier or its folder (None: the shipped
            `moving-fashion-mnist-frame-classifier`); it must take the tokenizer's frames.
        real_videos: `[N, T, H, W, C]`, uint8 or float in [0, 1], at the tokenizer's clip shape
            ([`load_video_arrays`]).
        real_labels: `[N]` class ids, or None (then the accuracies are None).
        batch_size: videos per tokenizer call; classifier_batch_size: frames per classifier call.
        device: where to run (default: the tokenizer's device).

    Returns:
        A JSON-ready dict, pixels in [0, 1]: `mse` and `psnr_db` (`10 log10(1 / mse)` of the mean squared error
        over every pixel: the figure `train_tokenizer.py` reports, which uses [-1, 1] pixels and peak 2, the same
        dB), `psnr` and `ssim` (per-frame means, as the prediction table of [`evaluate_video_pipeline`]),
        `classifier_fid` (reconstructed frames against the real frames), `frame_accuracy` / `video_accuracy` of
        the reconstructions and `real_frame_accuracy` / `real_video_accuracy` of the originals,
        `frame_accuracy_gap` (real minus reconstructed, in accuracy points: 0-100 scale), `label_consistency`,
        `frame_difference` (and `real_frame_difference`), `num_videos`, `num_frames`.
    """
    classifier = load_classifier(classifier, DEFAULT_FRAME_CLASSIFIER)
    real, labels = _check_tokenizer_videos(vqvae, classifier, real_videos, real_labels)
    check_positive_int("classifier_batch_size", classifier_batch_size)
    device = torch.device(device) if device is not None else vqvae.device
    vqvae.to(device)
    classifier.to(device)
    reconstructions = reconstruct_videos(vqvae, real, batch_size, device, progress)
    mse = float(((reconstructions.double() - real.double()) ** 2).mean())
    pixel_scores = prediction_scores(reconstructions, real)
    real_features, real_predictions = classify_video_frames(classifier, real, classifier_batch_size, device)
    features, predictions = classify_video_frames(classifier, reconstructions, classifier_batch_size, device)
    num_labels = classifier.config.num_labels
    real_scores = video_classifier_scores(real_features, real_predictions, real, labels, real_features, num_labels)
    scores = video_classifier_scores(features, predictions, reconstructions, labels, real_features, num_labels)
    gap = None if labels is None else 100 * (real_scores["frame_accuracy"] - scores["frame_accuracy"])
    return {
        "mse": mse,
        "psnr_db": PSNR_CAP_DB if mse <= 1e-10 else 10 * float(np.log10(1 / mse)),
        "psnr": pixel_scores["psnr"],
        "ssim": pixel_scores["ssim"],
        "classifier_fid": scores["classifier_fid"],
        "frame_accuracy": scores["frame_accuracy"],
        "video_accuracy": scores["video_accuracy"],
        "real_frame_accuracy": real_scores["frame_accuracy"],
        "real_video_accuracy": real_scores["video_accuracy"],
        "frame_accuracy_gap": gap,
        "label_consistency": scores["label_consistency"],
        "frame_difference": scores["frame_difference"],
        "real_frame_difference": real_scores["frame_difference"],
        "num_videos": scores["num_videos"],
        "num_frames": scores["num_frames"],
    }


def format_video_tokenizer_results(results: dict, name: str = "tokenizer") -> str:
    """[`video_tokenizer_reconstruction`]'s results as a one-row markdown table."""
    def percent(value):
        return "n/a" if value is None else f"{100 * value:.1f}"

    gap = "n/a" if results["frame_accuracy_gap"] is None else f"{results['frame_accuracy_gap']:.1f}"
    return "\n".join([
        f"Tokenizer reconstruction of {results['num_videos']} real videos ({results['num_frames']} frames), "
        "pixels in [0, 1].",
        "",
        "| tokenizer | PSNR (mean MSE) dB | PSNR per frame dB | SSIM | cFID | frame acc % | real frame acc % "
        "| gap (points) | video acc % | frame diff (real) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        f"| {name} | {results['psnr_db']:.2f} | {results['psnr']:.2f} | {results['ssim']:.4f} | "
        f"{results['classifier_fid']:.3f} | {percent(results['frame_accuracy'])} | "
        f"{percent(results['real_frame_accuracy'])} | {gap} | {percent(results['video_accuracy'])} | "
        f"{results['frame_difference']:.4f} ({results['real_frame_difference']:.4f}) |",
    ])


def _references(tasks: VideoTasks, reference: VideoReference, classifier, detector, num_classes: int,
                num_labels: int, videos_per_class: int, classifier_batch_size: int) -> dict:
    """The reference rows: the generation scores of the real videos (videos_per_class per class) and of their
    tokenizer reconstructions, and the prediction scores of the tokenizer's reconstruction and of copying the last
    context frame."""
    references = {"real_videos": None, "tokenizer_reconstruction_videos": None, "tokenizer_reconstruction": None,
                  "copy_last_frame": None}
    real = reference.videos
    if tasks.num_generated:
        subset = real_subset_indices(reference.labels, num_classes, videos_per_class, real.shape[0])
        subset_labels = None if reference.labels is None else reference.labels[subset]
        references["real_videos"] = video_classifier_scores(
            reference.features.view(real.shape[0], real.shape[1], -1)[subset].flatten(0, 1),
            reference.predictions[subset], real[subset], subset_labels, reference.statistics, num_labels)
        references["real_videos"]["fvd"] = None if detector is None else \
            frechet_distance(reference.i3d[subset], reference.i3d)
        # The same real videos through the tokenizer: the ceiling the generation rows can reach.
        reconstructed = reconstruct_videos(tasks.pipeline.vqvae, real[subset], tasks.batch_size, tasks.device)
        features, predictions = classify_video_frames(classifier, reconstructed, classifier_batch_size, tasks.device)
        references["tokenizer_reconstruction_videos"] = video_classifier_scores(
            features, predictions, reconstructed, subset_labels, reference.statistics, num_labels)
        references["tokenizer_reconstruction_videos"]["fvd"] = _fvd(detector, reconstructed, reference.i3d,
                                                                    tasks.device)
    if tasks.num_predicted:
        reconstructions = reconstruct_videos(tasks.pipeline.vqvae, real[: tasks.num_predicted], tasks.batch_size,
                                             tasks.device)
        references["tokenizer_reconstruction"] = prediction_scores(reconstructions[:, tasks.context_frames:],
                                                                   tasks.truth)
        references["copy_last_frame"] = prediction_scores(tasks.context[:, -1:].expand_as(tasks.truth), tasks.truth)
    return references


def _video_settings(tasks: VideoTasks, classifier, real: torch.Tensor, num_classes: int, videos_per_class: int,
                    prediction_labels: str, i3d_torchscript) -> dict:
    fvd_note = FVD_NOT_COMPUTED if i3d_torchscript is None else \
        f"I3D features from {os.fspath(i3d_torchscript)} (see mgnt_hf.evaluation.i3d_features)"
    return {
        "pipeline": tasks.pipeline.name_or_path,
        "classifier": getattr(classifier, "name_or_path", None),
        "num_real_videos": int(real.shape[0]),
        "frames_per_video": int(real.shape[1]),
        "videos_per_class": videos_per_class,
        "num_classes": num_classes,
        "num_generated_videos": tasks.num_generated,
        "context_frames": tasks.context_frames if tasks.num_predicted else None,
        "num_prediction_videos": tasks.num_predicted,
        "prediction_labels": prediction_labels,
        **decode_settings(tasks.pipeline, tasks.num_steps, tasks.guidance_scale),
        "batch_size": tasks.batch_size,
        "seed": tasks.seed,
        "seeding": "generated video j has class j % num_classes and a generator seeded seed + j; predicted "
                   "video i (real video i's continuation) a generator seeded seed + i; the same in every row",
        "timing": "median over pipeline calls of (call wall clock / its videos): sampling + tokenizer encode of "
                  "the context + decode, excluding scoring, after one untimed warm-up call per task",
        "gflops": "analytic transformer FLOPs (2 x multiply-adds), both guidance branches, tokenizer excluded",
        "psnr": f"per frame, pixels in [0, 1], capped at {PSNR_CAP_DB:g} dB; mean over predicted frames",
        "ssim": f"per frame, {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} Gaussian window sigma {SSIM_SIGMA}, "
                f"K1 {SSIM_K1}, K2 {SSIM_K2}, valid window positions; mean over predicted frames",
        "fvd": fvd_note,
    }


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def _video_tasks(pipeline, device, real: torch.Tensor, real_labels, num_steps: int, guidance_scale: float,
                 seed: int, batch_size: int, videos_per_class: int, context_frames: int, num_prediction_videos: int,
                 prediction_labels: str) -> VideoTasks:
    num_classes = pipeline.transformer.config.num_classes
    num_generated = num_classes * videos_per_class
    context_frames = context_frames if num_prediction_videos else 0
    context_labels = None if prediction_labels == "none" or not num_prediction_videos \
        else real_labels[:num_prediction_videos]
    return VideoTasks(pipeline, device, num_steps, guidance_scale, seed, batch_size,
                      generation_labels=torch.arange(num_generated) % num_classes,
                      context=real[:num_prediction_videos, :context_frames],
                      truth=real[:num_prediction_videos, context_frames:], context_labels=context_labels)


@torch.no_grad()
def evaluate_video_pipeline(
    pipeline,
    classifier: MGNTFeatureClassifier | str | os.PathLike | None,
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
        classifier: the per-frame feature classifier, or its folder (None: the shipped
            `moving-fashion-mnist-frame-classifier`); its input must be the tokenizer's frames
            ([`check_classifier_fits`]) and its labels the transformer's classes.
        real_videos: real videos `[N, T, H, W, C]`, uint8 or float in [0, 1], at the tokenizer's clip shape
            (`num_frames`, `resolution`, `num_channels`); e.g. [`load_video_arrays`] of the test split. Every frame
            is the per-frame FID reference; the first `num_prediction_videos` are the prediction task.
        real_labels: `[N]` class ids of `real_videos`, or None (then no real accuracies, and
            `prediction_labels` must be `"none"`).
        rows: [`QualityRow`]s or row names ([`parse_row`]); default [`default_rows`]. A row with its own
            `num_inference_steps` runs at that count (and its result records it).
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
        `tokenizer_reconstruction_videos`: the same scores of those real videos after encode -> decode, the
        ceiling of the generation rows; `tokenizer_reconstruction` and `copy_last_frame`: prediction scores of
        the two reference predictors).
        `generation`: `gflops_per_video`, `seconds_per_video`, `flops_ratio`, `step_widths`, `num_full_passes`,
        `classifier_fid`, `frame_accuracy`, `video_accuracy`, `label_consistency`, `frame_difference`,
        `num_videos`, `num_frames`, `fvd`. `prediction`: the same cost fields, `psnr`, `ssim`, `psnr_per_frame`,
        `ssim_per_frame`, `num_videos`, `fvd` (predicted whole videos against the same real videos).
        `frontier`: [`video_frontier`] of the rows, the default row being `default+cache` (or `default` when
        the scheduler's cache is off).
    """
    classifier = load_classifier(classifier, DEFAULT_FRAME_CLASSIFIER)
    _check_video_pipeline(pipeline, classifier)
    _check_counts(videos_per_class, num_prediction_videos, batch_size, classifier_batch_size, seed, sample_videos)
    num_steps = check_num_inference_steps(pipeline, num_inference_steps)
    guidance_scale = resolve_guidance_scale(pipeline, guidance_scale)
    if prediction_labels not in PREDICTION_LABELS:
        raise ValueError(f"prediction_labels must be one of {list(PREDICTION_LABELS)}, got {prediction_labels!r}")
    real, real_labels = _check_real_videos(pipeline, real_videos, real_labels)
    _check_prediction(pipeline, real, real_labels, num_prediction_videos, context_frames, prediction_labels)
    rows = resolve_rows(pipeline, rows, num_steps)
    detector = None if i3d_torchscript is None else load_i3d(i3d_torchscript, device)

    device = place_on_device(device, pipeline, classifier)
    if detector is not None:
        detector.to(device)
    reference = _video_reference(classifier, detector, real, real_labels, classifier_batch_size, device)
    tasks = _video_tasks(pipeline, device, real, real_labels, num_steps, guidance_scale, seed, batch_size,
                         videos_per_class, context_frames, num_prediction_videos, prediction_labels)

    # One untimed call per task first: the first call pays for lazy initialisation (allocator, kernels, threads).
    if tasks.num_generated:
        generate_batch(tasks, rows[0], range(1))
    if tasks.num_predicted:
        predict_batch(tasks, rows[0], range(1))

    row_results = []
    for row in tqdm(rows, desc="rows", disable=not progress):
        result = {**row_summary(row, num_steps), "generation": None, "prediction": None}
        if tasks.num_generated:
            result["generation"] = _generation_result(tasks, row, classifier, detector, reference,
                                                      classifier_batch_size, sample_dir, sample_videos)
        if tasks.num_predicted:
            result["prediction"] = _prediction_result(tasks, row, detector, reference, sample_dir, sample_videos)
        row_results.append(result)
    baseline = _add_flops_ratios(row_results)
    num_classes = pipeline.transformer.config.num_classes
    default_row = "default+cache" if pipeline.scheduler.config.use_cache else "default"  # what pipe(...) runs
    return {
        "settings": _video_settings(tasks, classifier, real, num_classes, videos_per_class, prediction_labels,
                                    i3d_torchscript),
        **measured_on(device),
        "baseline": baseline["name"],
        "rows": row_results,
        "frontier": video_frontier(row_results, default_row),
        "references": _references(tasks, reference, classifier, detector, num_classes,
                                  classifier.config.num_labels, videos_per_class, classifier_batch_size),
    }


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def _number(value, digits: int = 3, scale: float = 1.0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _cost_cells(row: dict, scores: dict, num_inference_steps: int) -> list[str]:
    schedule = format_schedule(row["width_schedule"], row.get("num_inference_steps", num_inference_steps))
    return [f"`{row['name']}`", schedule, "yes" if row["use_cache"] else "no",
            f"{scores['gflops_per_video']:.3f}", f"{scores['flops_ratio']:.2f}x", f"{scores['seconds_per_video']:.4f}"]


def _generation_cells(scores: dict) -> list[str]:
    return [_number(scores["classifier_fid"]), _number(scores["frame_accuracy"], 1, 100),
            _number(scores["video_accuracy"], 1, 100), _number(scores["label_consistency"]),
            _number(scores["frame_difference"], 4), _number(scores["fvd"], 2)]


def _video_results_header(results: dict) -> list[str]:
    settings = results["settings"]
    return [
        "# Video quality against compute",
        "",
        f"Pipeline `{settings['pipeline']}`, frame classifier `{settings['classifier']}`; "
        f"{settings['num_real_videos']} real videos of {settings['frames_per_video']} frames; "
        f"{settings['num_inference_steps']} steps, guidance {settings['guidance_scale']:g} "
        f"({settings['guidance_schedule']}), seed {settings['seed']}, batch {settings['batch_size']}.",
        f"{format_machine(results)}. FVD: {settings['fvd']}.",
        "",
        f"GFLOPs: analytic transformer FLOPs per video, both guidance branches. FLOPs ratio = `{results['baseline']}` "
        "GFLOPs / row GFLOPs. s/video: median over pipeline calls.",
        "",
    ]


FRONTIER_LABELS = {"classifier_fid": ("cFID", 3), "frame_accuracy": ("frame accuracy", 3), "psnr": ("PSNR", 2),
                   "ssim": ("SSIM", 4)}


def _frontier_lines(results: dict, task: str) -> list[str]:
    """The task's Pareto fronts and fair comparison in words (results files older than the frontier have none)."""
    entry = results.get("frontier", {}).get(task)
    if entry is None:
        return []
    fronts = "; ".join(f"{FRONTIER_LABELS[key][0]}: " + ", ".join(f"`{name}`" for name in names)
                       for key, names in entry["pareto_fronts"].items())
    lines = [f"Pareto fronts against GFLOPs/video (rows no other row beats on both, cheapest first): {fronts}.", ""]
    fair = entry.get("fair_comparison")
    if fair is not None:
        key = next(key for key in FRONTIER_LABELS if key in fair)
        label, digits = FRONTIER_LABELS[key]
        verdict = "beats" if fair["beats_every_competitor"] else "does not beat"
        lines += [f"Fair comparison: `{fair['row']}` ({fair['gflops_per_video']:.3f} GFLOPs, {label} "
                  f"{fair[key]:.{digits}f}) {verdict} every MaskGIT row (any step count) and every single-width "
                  f"row within {fair['compute_margin']:g}x its GFLOPs; the best of those is "
                  f"`{fair['best_competitor']}` ({label} {fair['best_competitor_' + key]:.{digits}f} at "
                  f"{fair['best_competitor_gflops_per_video']:.3f} GFLOPs).", ""]
    return lines


def _generation_table(results: dict) -> list[str]:
    settings = results["settings"]
    lines = [
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
    for row in results["rows"]:
        lines.append("| " + " | ".join([*_cost_cells(row, row["generation"], settings["num_inference_steps"]),
                                        *_generation_cells(row["generation"])]) + " |")
    real = results["references"]["real_videos"]
    lines.append("| " + " | ".join([f"real videos ({real['num_videos']})", "", "", "", "", "",
                                    *_generation_cells(real)]) + " |")
    reconstructed = results["references"].get("tokenizer_reconstruction_videos")  # absent in older results files
    if reconstructed is not None:
        lines.append("| " + " | ".join([f"the same real videos through the tokenizer ({reconstructed['num_videos']})",
                                        "", "", "", "", "", *_generation_cells(reconstructed)]) + " |")
    return [*lines, "", *_frontier_lines(results, "generation")]


def _prediction_table(results: dict) -> list[str]:
    settings, references = results["settings"], results["references"]
    lines = [
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
    for row in results["rows"]:
        scores = row["prediction"]
        cells = [*_cost_cells(row, scores, settings["num_inference_steps"]), _number(scores["psnr"], 2),
                 _number(scores["ssim"], 4), _number(scores["fvd"], 2)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, key in (("tokenizer reconstruction", "tokenizer_reconstruction"), ("copy last frame", "copy_last_frame")):
        scores = references[key]
        lines.append(f"| {name} | | | | | | {_number(scores['psnr'], 2)} | {_number(scores['ssim'], 4)} | |")
    return [*lines, "", *_frontier_lines(results, "prediction")]


def format_video_results_table(results: dict) -> str:
    """The results of [`evaluate_video_pipeline`] as a markdown document: settings, a generation table and a
    prediction table (each with its reference rows)."""
    lines = _video_results_header(results)
    if results["settings"]["num_generated_videos"]:
        lines += _generation_table(results)
    if results["settings"]["num_prediction_videos"]:
        lines += _prediction_table(results)
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
