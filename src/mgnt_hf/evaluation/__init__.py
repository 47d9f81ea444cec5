"""Evaluation of MaGNeTS pipelines: sample quality against compute, per way of decoding.

- `metrics`: feature statistics and the Fréchet distance, classifier FID and class accuracy, Inception FID,
  PSNR/SSIM, temporal consistency, FVD.
- `rows`: [`QualityRow`] (a width schedule, the cache on or off, optionally its own step count), row names,
  and what both runners share (seeded generators, timing, decode settings).
- `image`: [`evaluate_pipeline`], the image runner, and its results (markdown table, JSON, plot).
- `video`: [`evaluate_video_pipeline`], the video runner (generation and frame prediction), and its results.
- `data`: real images and videos in the metrics' layouts, and finding the feature classifier.
- `frontier`: [`evaluate_frontier`], every decode a user could pick (MaskGIT step counts, single widths, MaGNeTS
  schedules) against GFLOPs, with the Pareto front.
- `conditioning`: [`class_label_probe`], how much the transformer uses its class label (masked-token
  cross-entropy on real tokens under every label), without sampling.
- `schedule_search`: [`search_schedules`], the best width schedule within each GFLOPs budget, and
  [`write_budget_schedules`], which stores the table a pipeline's `max_gflops_per_image` reads.

The feature classifier itself is `mgnt_hf.MGNTFeatureClassifier` (`modeling_feature_classifier.py`); pictures of
samples are drawn by `mgnt_hf.visualization`; `mgnt evaluate` / `mgnt evaluate-video` (`mgnt_hf.cli`) are the
command line. What is measured, and why, is described in `docs/design.md`, section "Evaluation".

```python
>>> from mgnt_hf import MGNTPipeline, shipped
>>> from mgnt_hf.evaluation import QualityRow, evaluate_pipeline, format_results_table
>>> pipe = MGNTPipeline.from_pretrained(shipped("mgnt-fashion-mnist"))
>>> rows = ["maskgit", "default+cache", QualityRow("half-then-full-8", [[0.5, 4], [1.0, 4]], num_inference_steps=8)]
>>> print(format_results_table(evaluate_pipeline(pipe, rows=rows, samples_per_class=20)))
```
"""

from ..configuration_feature_classifier import MGNTFeatureClassifierConfig
from ..modeling_feature_classifier import MGNTFeatureClassifier, MGNTFeatureClassifierOutput
from ..resources import DEFAULT_CLASSIFIER, DEFAULT_FRAME_CLASSIFIER
from .conditioning import class_label_probe, format_probe_table
from .data import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    fashion_mnist_pixels,
    frames_to_pixels,
    load_classifier,
    load_reference_images,
    load_video_arrays,
    pad_pixels,
    pixels_from_images,
    real_subset_indices,
    resolve_classifier,
    videos_to_tensor,
)
from .frontier import evaluate_frontier, fair_comparison, frontier_rows, pareto_front, write_frontier
from .image import (
    cached_tokenizer_reconstruction,
    evaluate_pipeline,
    format_results_table,
    plot_quality_vs_gflops,
    sample_row,
    tokenizer_reconstruction,
    write_results,
)
from .metrics import (
    I3D_RESOLUTION,
    PSNR_CAP_DB,
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_WINDOW_SIZE,
    FeatureStatistics,
    FeatureStatisticsAccumulator,
    cached_reference_statistics,
    class_accuracy,
    classifier_fid,
    classifier_outputs,
    classify_video_frames,
    default_cache_dir,
    evaluate_samples,
    frame_difference,
    frechet_distance,
    frechet_distance_from_statistics,
    frechet_video_distance,
    gaussian_window,
    i3d_features,
    inception_fid,
    label_consistency,
    load_i3d,
    majority_labels,
    prediction_scores,
    psnr,
    reference_statistics,
    reference_statistics_key,
    ssim,
    video_classifier_scores,
)
from .rows import (
    BASELINE_ROW,
    BASELINE_STEPS,
    CACHE_SUFFIX,
    QualityRow,
    check_classifier_fits,
    check_num_inference_steps,
    decode_settings,
    default_num_inference_steps,
    default_rows,
    machine_info,
    measured_on,
    parse_row,
    resolve_rows,
    row_names_allowed,
    row_step_widths,
    seeded_generators,
    synchronize,
    timed_call,
)
from .video import (
    PREDICTION_LABELS,
    evaluate_video_pipeline,
    format_video_results_table,
    format_video_tokenizer_results,
    reconstruct_videos,
    video_tokenizer_reconstruction,
    write_video_results,
)
from .schedule_search import search_schedules, write_budget_schedules

__all__ = [
    "class_label_probe",
    "format_probe_table",
    "evaluate_frontier",
    "fair_comparison",
    "frontier_rows",
    "pareto_front",
    "write_frontier",
    "search_schedules",
    "write_budget_schedules",
    # the classifier
    "MGNTFeatureClassifier",
    "MGNTFeatureClassifierConfig",
    "MGNTFeatureClassifierOutput",
    # data
    "DEFAULT_CLASSIFIER",
    "DEFAULT_FRAME_CLASSIFIER",
    "FASHION_MNIST_DIR",
    "FASHION_MNIST_LABELS",
    "fashion_mnist_pixels",
    "frames_to_pixels",
    "load_classifier",
    "load_reference_images",
    "load_video_arrays",
    "pad_pixels",
    "pixels_from_images",
    "real_subset_indices",
    "resolve_classifier",
    "videos_to_tensor",
    # metrics
    "I3D_RESOLUTION",
    "PSNR_CAP_DB",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_WINDOW_SIZE",
    "FeatureStatistics",
    "FeatureStatisticsAccumulator",
    "cached_reference_statistics",
    "cached_tokenizer_reconstruction",
    "class_accuracy",
    "classifier_fid",
    "classifier_outputs",
    "classify_video_frames",
    "default_cache_dir",
    "evaluate_samples",
    "frame_difference",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "frechet_video_distance",
    "gaussian_window",
    "i3d_features",
    "inception_fid",
    "label_consistency",
    "load_i3d",
    "majority_labels",
    "prediction_scores",
    "psnr",
    "reference_statistics",
    "reference_statistics_key",
    "ssim",
    "video_classifier_scores",
    # rows
    "BASELINE_ROW",
    "BASELINE_STEPS",
    "CACHE_SUFFIX",
    "QualityRow",
    "check_classifier_fits",
    "check_num_inference_steps",
    "decode_settings",
    "default_num_inference_steps",
    "default_rows",
    "machine_info",
    "measured_on",
    "parse_row",
    "resolve_rows",
    "row_names_allowed",
    "row_step_widths",
    "seeded_generators",
    "synchronize",
    "timed_call",
    # runners
    "PREDICTION_LABELS",
    "evaluate_pipeline",
    "evaluate_video_pipeline",
    "format_results_table",
    "format_video_results_table",
    "format_video_tokenizer_results",
    "reconstruct_videos",
    "video_tokenizer_reconstruction",
    "plot_quality_vs_gflops",
    "sample_row",
    "tokenizer_reconstruction",
    "tokenizer_reconstruction_key",
    "write_results",
    "write_video_results",
]
