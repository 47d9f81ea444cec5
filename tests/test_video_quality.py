"""Video quality evaluation (`mgnt_hf.video_quality`, `benchmarks/video_quality.py`) and the Moving Fashion-MNIST
mode of `training/train_classifier.py`, on tiny random models and constructed videos."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_video_transformer, make_tiny_video_vqvae
from mgnt_hf import MGNTScheduler, MGNTVideoPipeline
from mgnt_hf.data import FASHION_MNIST_DIR, read_fashion_mnist
from mgnt_hf.evaluation import FeatureStatistics, MGNTFeatureClassifier, MGNTFeatureClassifierConfig
from mgnt_hf.evaluation import (
    PSNR_CAP_DB,
    classify_video_frames,
    frame_difference,
    frames_to_pixels,
    frechet_video_distance,
    i3d_features,
    label_consistency,
    load_i3d,
    load_video_arrays,
    majority_labels,
    prediction_scores,
    psnr,
    ssim,
    video_classifier_scores,
    videos_to_tensor,
)
from mgnt_hf.video_quality import evaluate_video_pipeline, format_video_results_table, write_video_results
from mgnt_hf.moving_fashion_mnist import moving_fashion_mnist_video

REPO = Path(__file__).resolve().parents[1]
SHIPPED_FRAME_CLASSIFIER = REPO / "pipelines" / "moving-fashion-mnist-frame-classifier"
HAVE_FASHION_MNIST = (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").is_file()
CLASSES = ["T-shirt/top", "Trouser", "Ankle boot"]
# The tiny video pipeline: 4-frame 16x16 grayscale clips, temporal downsampling 2 -> context of 2 frames.
NUM_FRAMES, SIZE, CONTEXT_FRAMES = 4, 16, 2


def make_pipeline() -> MGNTVideoPipeline:
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(), MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_classifier(seed: int = 0) -> MGNTFeatureClassifier:
    """Takes the tiny pipeline's 16x16 grayscale frames; BatchNorm statistics randomised so that features depend
    on them, as a trained classifier's do."""
    torch.manual_seed(seed)
    classifier = MGNTFeatureClassifier(MGNTFeatureClassifierConfig(
        num_channels=1, image_size=SIZE, conv_channels=(4, 8), feature_size=8, id2label=dict(enumerate(CLASSES))))
    for module in classifier.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return classifier.eval()


def moving_squares(num_videos: int = 12, num_frames: int = NUM_FRAMES, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[N, T, size, size, 1]`: a bright 4x4 square moving right, its row set by the class `n % 3`."""
    videos = np.zeros((num_videos, num_frames, size, size, 1), dtype=np.uint8)
    labels = np.arange(num_videos) % 3
    for index, label in enumerate(labels):
        for frame in range(num_frames):
            column = (index + 2 * frame) % (size - 4)
            videos[index, frame, label * 5 : label * 5 + 4, column : column + 4] = 255
    return videos, labels


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    videos, labels = moving_squares()
    return evaluate_video_pipeline(
        make_pipeline(), make_classifier(), videos, labels, rows=["maskgit", "default+cache"], videos_per_class=2,
        batch_size=4, seed=1, context_frames=CONTEXT_FRAMES, num_prediction_videos=4, device="cpu",
        sample_dir=tmp_path_factory.mktemp("samples"), progress=False)


def rows_by_name(results) -> dict:
    return {row["name"]: row for row in results["rows"]}


# ---------------------------------------------------------------- PSNR and SSIM


def test_psnr_of_a_known_error_and_its_cap_for_identical_frames():
    target = torch.zeros(2, 3, 1, 8, 8, dtype=torch.float64)
    values = psnr(target + 0.1, target)  # MSE 0.01
    assert values.shape == (2, 3) and torch.allclose(values, torch.full((2, 3), 20.0, dtype=torch.float64))
    assert psnr(target, target).tolist() == [[PSNR_CAP_DB] * 3] * 2


def test_ssim_of_identical_frames_is_one():
    frames = torch.rand(2, 3, 2, 16, 13, generator=torch.Generator().manual_seed(0))
    assert ssim(frames, frames).shape == (2, 3)
    assert torch.allclose(ssim(frames, frames), torch.ones(2, 3, dtype=torch.float64), atol=1e-12)


def test_ssim_of_constant_frames_is_the_luminance_term():
    # No variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01)^2.
    a, b, c1 = 0.3, 0.7, 0.01**2
    value = ssim(torch.full((1, 1, 12, 12), a, dtype=torch.float64), torch.full((1, 1, 12, 12), b, dtype=torch.float64))
    assert float(value) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM as scikit-image computes it (gaussian_weights, sigma 1.5, truncate 3.5, population statistics): scipy
    filtering of the whole image, then the 5-pixel border cropped. An implementation independent of conv2d."""
    from scipy.ndimage import gaussian_filter

    def blur(image):
        return gaussian_filter(image, sigma=1.5, truncate=3.5, mode="reflect")

    mean_x, mean_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mean_x**2, blur(y * y) - mean_y**2, blur(x * y) - mean_x * mean_y
    c1, c2 = 0.01**2, 0.03**2
    ssim_map = (2 * mean_x * mean_y + c1) * (2 * cov + c2) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map[5:-5, 5:-5].mean())


def test_ssim_matches_a_gaussian_filter_implementation():
    generator = np.random.default_rng(0)
    x = generator.random((24, 19))
    y = np.clip(x + 0.2 * generator.standard_normal((24, 19)), 0, 1)
    expected = reference_ssim(x, y)
    assert 0.2 < expected < 0.95
    assert float(ssim(torch.from_numpy(y)[None], torch.from_numpy(x)[None])) == pytest.approx(expected, abs=1e-10)


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    generator = np.random.default_rng(1)
    x = generator.random((20, 20, 3))
    y = np.clip(x + 0.1 * generator.standard_normal((20, 20, 3)), 0, 1)
    expected = metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                             data_range=1.0, channel_axis=-1)
    ours = ssim(torch.from_numpy(x).permute(2, 0, 1), torch.from_numpy(y).permute(2, 0, 1))
    assert float(ours) == pytest.approx(expected, abs=1e-8)


def test_ssim_does_not_depend_on_the_chunk_size():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 5, 3, 12, 14, generator=generator), torch.rand(2, 5, 3, 12, 14, generator=generator)
    assert torch.allclose(ssim(x, y, chunk_size=4), ssim(x, y), rtol=0, atol=1e-14)


@pytest.mark.parametrize("shapes, message", [
    (((1, 1, 10, 16), (1, 1, 10, 16)), "at least 11x11"),
    (((1, 1, 16, 16), (1, 1, 16, 15)), "one shape"),
])
def test_ssim_refuses_small_or_mismatched_frames(shapes, message):
    with pytest.raises(ValueError, match=message):
        ssim(torch.zeros(shapes[0]), torch.zeros(shapes[1]))


def test_prediction_scores_average_frames_and_videos():
    truth = torch.zeros(2, 3, 1, 12, 12)
    predicted = truth.clone()
    predicted[0, 1] += 0.1  # one frame at 20 dB, five identical ones at the cap
    scores = prediction_scores(predicted, truth)
    assert scores["psnr"] == pytest.approx((5 * PSNR_CAP_DB + 20.0) / 6)
    assert scores["psnr_per_frame"] == pytest.approx([PSNR_CAP_DB, (PSNR_CAP_DB + 20) / 2, PSNR_CAP_DB])
    assert scores["num_videos"] == 2 and len(scores["ssim_per_frame"]) == 3


# ---------------------------------------------------------------- temporal consistency


def test_frame_difference_of_static_and_alternating_videos():
    static = torch.rand(3, 1, 1, 8, 8).expand(3, 5, 1, 8, 8)
    assert frame_difference(static) == 0.0
    alternating = torch.zeros(1, 4, 1, 8, 8)
    alternating[:, 1::2] = 1.0
    assert frame_difference(alternating) == 1.0
    half = alternating.clone()
    half[..., :4] = 0.0  # only half of the pixels change
    assert frame_difference(half) == 0.5


def test_label_consistency_uses_the_majority_and_breaks_ties_to_the_smallest_class():
    predictions = torch.tensor([[1, 1, 1, 1], [2, 0, 2, 0], [2, 1, 2, 2]])
    assert majority_labels(predictions, 3).tolist() == [1, 0, 2]
    assert label_consistency(predictions, 3) == pytest.approx((1 + 0.5 + 0.75) / 3)


def test_static_videos_are_perfectly_consistent_under_the_classifier():
    videos, _ = moving_squares(6)
    static = torch.from_numpy(videos[:, :1]).float().div(255).permute(0, 1, 4, 2, 3).expand(-1, NUM_FRAMES, -1, -1,
                                                                                           -1)
    _, predictions = classify_video_frames(make_classifier(), static)
    assert predictions.shape == (6, NUM_FRAMES)
    assert label_consistency(predictions, 3) == 1.0 and frame_difference(static) == 0.0


def test_per_frame_fid_of_a_set_against_its_own_frames_is_zero():
    videos, labels = moving_squares()
    real = torch.from_numpy(videos).float().div(255).permute(0, 1, 4, 2, 3)
    features, predictions = classify_video_frames(make_classifier(), real, batch_size=7)
    assert features.shape == (12 * NUM_FRAMES, 8)
    scores = video_classifier_scores(features, predictions, real, torch.from_numpy(labels),
                                     FeatureStatistics.from_features(features), 3)
    assert scores["classifier_fid"] == pytest.approx(0.0, abs=1e-8)
    assert scores["num_frames"] == 12 * NUM_FRAMES and 0 <= scores["frame_accuracy"] <= 1


def test_frames_to_pixels_flattens_leading_dimensions_into_classifier_pixels():
    frames = np.zeros((2, 3, 5, 4, 1), dtype=np.uint8)
    frames[1, 2, 0, 0, 0] = 255
    pixels = frames_to_pixels(frames)
    assert pixels.shape == (6, 1, 5, 4) and pixels.dtype == torch.float32
    assert pixels[5, 0, 0, 0] == 1.0 and pixels.min() == -1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frames_to_pixels(np.full((1, 4, 4, 1), 1.5, dtype=np.float32))


# ---------------------------------------------------------------- FVD


class TinyI3D(torch.nn.Module):
    """Stands in for StyleGAN-V's TorchScript I3D: same call signature, refuses any other input layout; features
    are a strided conv3d's pooled activations followed by each frame's mean pixel."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, kernel_size=(2, 16, 16), stride=(1, 16, 16))

    def forward(self, x: torch.Tensor, rescale: bool = True, resize: bool = True,
                return_features: bool = False) -> torch.Tensor:
        if rescale or resize or not return_features:
            raise RuntimeError("expected rescale=False, resize=False, return_features=True")
        if x.dim() != 5 or x.shape[1] != 3 or x.shape[3] != 224 or x.shape[4] != 224:
            raise RuntimeError("expected [B, 3, T, 224, 224]")
        pooled = torch.relu(self.conv(x)).mean(dim=(2, 3, 4))  # [B, 6]
        return torch.cat([pooled, x.mean(dim=(1, 3, 4))], dim=1)  # [B, 6 + T]


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("i3d") / "tiny_i3d.pt"
    torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def test_i3d_features_get_rgb_224_clips_in_minus_one_to_one(i3d_file):
    detector = load_i3d(i3d_file)
    videos = torch.full((3, NUM_FRAMES, 1, SIZE, SIZE), 0.75)  # grayscale, becomes RGB
    features = i3d_features(detector, videos, batch_size=2)
    assert features.shape == (3, 6 + NUM_FRAMES) and features.dtype == torch.float64
    assert torch.allclose(features[:, 6:], torch.full((3, NUM_FRAMES), 0.5, dtype=torch.float64), atol=1e-6)


def test_fvd_of_a_set_with_itself_is_zero_and_of_different_sets_positive(i3d_file):
    detector = load_i3d(i3d_file)
    videos, _ = moving_squares()
    real = torch.from_numpy(videos).float().div(255).permute(0, 1, 4, 2, 3)
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    assert frechet_video_distance(detector, real, real) == pytest.approx(0.0, abs=1e-8)
    assert frechet_video_distance(detector, real, noise) > 1e-3


def test_a_missing_i3d_file_is_an_os_error(tmp_path):
    with pytest.raises(OSError, match="I3D"):
        load_i3d(tmp_path / "missing.pt")


# ---------------------------------------------------------------- the whole evaluation


def finite_numbers(value) -> list:
    """Every number in a nested results structure."""
    if isinstance(value, dict):
        return [number for item in value.values() for number in finite_numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in finite_numbers(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


GENERATION_FIELDS = {"gflops_per_video", "seconds_per_video", "flops_ratio", "step_widths", "num_full_passes",
                     "classifier_fid", "frame_accuracy", "video_accuracy", "label_consistency", "frame_difference",
                     "num_videos", "num_frames", "fvd", "sample_strip"}
PREDICTION_FIELDS = {"gflops_per_video", "seconds_per_video", "flops_ratio", "step_widths", "num_full_passes",
                     "psnr", "ssim", "psnr_per_frame", "ssim_per_frame", "num_videos", "fvd", "sample_strip"}


def test_every_row_has_every_field_with_finite_numbers(results):
    assert [row["name"] for row in results["rows"]] == ["maskgit", "default+cache"]
    for row in results["rows"]:
        assert set(row["generation"]) == GENERATION_FIELDS
        assert set(row["prediction"]) == PREDICTION_FIELDS
        assert row["generation"]["num_videos"] == 6 and row["generation"]["num_frames"] == 6 * NUM_FRAMES
        assert row["prediction"]["num_videos"] == 4
        assert len(row["prediction"]["psnr_per_frame"]) == NUM_FRAMES - CONTEXT_FRAMES
        assert row["generation"]["fvd"] is None and row["prediction"]["fvd"] is None
        assert row["generation"]["seconds_per_video"] > 0 and row["prediction"]["seconds_per_video"] > 0
    assert all(math.isfinite(number) for number in finite_numbers(results))
    assert "i3d_torchscript" in results["settings"]["fvd"]


def test_maskgit_costs_more_than_the_cached_magnets_schedule(results):
    rows = rows_by_name(results)
    for task in ("generation", "prediction"):
        assert rows["maskgit"][task]["gflops_per_video"] > rows["default+cache"][task]["gflops_per_video"]
        assert rows["maskgit"][task]["flops_ratio"] == 1.0 and rows["default+cache"][task]["flops_ratio"] > 1
        assert rows["maskgit"][task]["num_full_passes"] == 12 and rows["maskgit"][task]["step_widths"] == [64] * 12
    # Without the cache every step runs the whole grid, context included; with it the context's tokens run only in
    # full passes, so prediction costs less than generation.
    assert rows["maskgit"]["prediction"]["gflops_per_video"] == rows["maskgit"]["generation"]["gflops_per_video"]
    cached = rows["default+cache"]
    assert cached["prediction"]["gflops_per_video"] < cached["generation"]["gflops_per_video"]


def test_references_are_reported(results):
    references = results["references"]
    real = references["real_videos"]
    assert real["num_videos"] == 6 and real["label_consistency"] <= 1 and real["frame_difference"] > 0
    for name in ("tokenizer_reconstruction", "copy_last_frame"):
        assert references[name]["num_videos"] == 4 and -1 <= references[name]["ssim"] <= 1
    # The squares move: copying the last given frame is not the truth.
    assert references["copy_last_frame"]["psnr"] < PSNR_CAP_DB


def test_copying_the_last_frame_of_static_videos_is_exact():
    videos, labels = moving_squares()
    static = np.repeat(videos[:, :1], NUM_FRAMES, axis=1)
    results = evaluate_video_pipeline(make_pipeline(), make_classifier(), static, labels, rows=["default"],
                                      videos_per_class=0, num_prediction_videos=3, context_frames=CONTEXT_FRAMES,
                                      device="cpu", progress=False)
    copy = results["references"]["copy_last_frame"]
    assert copy["psnr"] == PSNR_CAP_DB and copy["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert results["rows"][0]["generation"] is None and results["references"]["real_videos"] is None


def test_fvd_is_reported_with_an_i3d_file(i3d_file):
    videos, labels = moving_squares(6)
    results = evaluate_video_pipeline(make_pipeline(), make_classifier(), videos, labels, rows=["default+cache"],
                                      videos_per_class=1, num_prediction_videos=3, context_frames=CONTEXT_FRAMES,
                                      prediction_labels="none", device="cpu", i3d_torchscript=i3d_file,
                                      progress=False)
    row = results["rows"][0]
    assert row["generation"]["fvd"] > 0 and row["prediction"]["fvd"] > 0
    assert math.isfinite(results["references"]["real_videos"]["fvd"])
    assert str(i3d_file) in results["settings"]["fvd"]


def test_results_files_and_sample_strips(results, tmp_path):
    paths = write_video_results(results, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"][1]["name"] == "default+cache"
    markdown = paths["markdown"].read_text()
    assert markdown == format_video_results_table(results)
    for text in ("`maskgit`", "`default+cache`", "real videos (6)", "tokenizer reconstruction", "copy last frame"):
        assert text in markdown
    strip = Image.open(rows_by_name(results)["maskgit"]["prediction"]["sample_strip"])
    # 4 videos x (real, predicted) rows of 16 px frames upscaled 4x with 2 px gaps.
    assert strip.height == 8 * (4 * SIZE + 2)
    assert Path(rows_by_name(results)["default+cache"]["generation"]["sample_strip"]).is_file()


BAD_ARGUMENTS = [
    (dict(prediction_labels="maybe"), r"\['given', 'none'\]"),
    (dict(context_frames=3), r"one of \[2\]"),
    (dict(context_frames=2.0), r"one of \[2\]; got 2.0"),
    (dict(rows=["fastest"]), "allowed: maskgit"),
    (dict(videos_per_class=-1), "videos_per_class"),
    (dict(videos_per_class=0, num_prediction_videos=0), "nothing to evaluate"),
    (dict(num_prediction_videos=13), "exceeds the 12 real videos"),
    (dict(real_labels=None), "prediction_labels='given' needs real_labels"),
    (dict(real_videos=np.zeros((12, 3, SIZE, SIZE, 1), dtype=np.uint8)), r"\[N >= 2, 4, 16, 16, 1\]"),
    (dict(real_labels=np.arange(12) + 1), r"\[0, 3\)"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
]


@pytest.mark.parametrize("overrides, message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_what_is_allowed(overrides, message):
    videos, labels = moving_squares()
    arguments = dict(real_videos=videos, real_labels=labels, rows=["default"], videos_per_class=1,
                     num_prediction_videos=2, context_frames=CONTEXT_FRAMES, device="cpu", progress=False)
    arguments.update(overrides)
    with pytest.raises(ValueError, match=message):
        evaluate_video_pipeline(make_pipeline(), make_classifier(), **arguments)


def test_a_classifier_of_another_frame_size_is_refused():
    videos, labels = moving_squares()
    torch.manual_seed(0)
    classifier = MGNTFeatureClassifier(MGNTFeatureClassifierConfig(
        num_channels=1, image_size=32, conv_channels=(4, 8), feature_size=8, id2label=dict(enumerate(CLASSES))))
    with pytest.raises(ValueError, match="classifier"):
        evaluate_video_pipeline(make_pipeline(), classifier, videos, labels, rows=["default"], progress=False)


# ---------------------------------------------------------------- data, training and the command line


@pytest.fixture(scope="module")
def saved_videos(tmp_path_factory):
    """The moving squares as a Moving Fashion-MNIST-like DatasetDict (Array3D uint8 video, ClassLabel label)."""
    root = tmp_path_factory.mktemp("videos") / "data"
    videos, labels = moving_squares(12)
    features = datasets.Features({"video": datasets.Array3D(shape=(NUM_FRAMES, SIZE, SIZE), dtype="uint8"),
                                  "label": datasets.ClassLabel(names=CLASSES)})
    split = datasets.Dataset.from_dict({"video": list(videos[..., 0]), "label": labels.tolist()}, features=features)
    datasets.DatasetDict({"train": split, "test": split.select(range(6))}).save_to_disk(str(root))
    return root


def test_load_video_arrays_gives_uint8_videos_and_labels(saved_videos):
    videos, labels = load_video_arrays(str(saved_videos), "test", chunk_size=4)
    expected, expected_labels = moving_squares(6)
    assert videos.dtype == np.uint8 and videos.shape == (6, NUM_FRAMES, SIZE, SIZE, 1)
    np.testing.assert_array_equal(videos, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    assert load_video_arrays(str(saved_videos), "train", limit=5)[0].shape[0] == 5


def run_script(script: str, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(REPO / script), *arguments], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=300)


def test_train_classifier_trains_a_frame_classifier_on_moving_videos(saved_videos, tmp_path):
    output = tmp_path / "classifier"
    result = run_script("training/train_classifier.py", "--moving-fashion-mnist", str(saved_videos),
                        "--output-dir", str(output), "--limit-train", "9", "--frames-per-video", "2",
                        "--epochs", "1", "--batch-size", "6", "--conv-channels", "4", "8", "--num-threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((output / "training_results.json").read_text())
    assert recorded["num_train_videos"] == 9 and recorded["num_train_images"] == 18
    assert recorded["train_frame_indices"] == [0, NUM_FRAMES - 1]
    assert recorded["num_test_videos"] == 6 and recorded["num_test_images"] == 6 * NUM_FRAMES
    assert f"{100 * recorded['test_accuracy']:.2f}%" in (output / "README.md").read_text()
    classifier = MGNTFeatureClassifier.from_pretrained(output)
    assert classifier.config.image_size == SIZE and classifier.config.num_channels == 1
    assert classifier.config.conv_channels == (4, 8)


def test_train_classifier_refuses_more_frames_than_the_videos_have(saved_videos, tmp_path):
    result = run_script("training/train_classifier.py", "--moving-fashion-mnist", str(saved_videos),
                        "--output-dir", str(tmp_path / "c"), "--frames-per-video", "5", "--epochs", "1")
    assert result.returncode != 0 and "--frames-per-video must be in [1, 4]" in result.stderr


def test_the_benchmark_script_writes_results(saved_videos, tmp_path):
    pipeline_dir, classifier_dir, output = tmp_path / "pipe", tmp_path / "classifier", tmp_path / "out"
    make_pipeline().save_pretrained(pipeline_dir)
    make_classifier().save_pretrained(classifier_dir)
    result = run_script("benchmarks/video_quality.py", "--pipeline", str(pipeline_dir), "--classifier",
                        str(classifier_dir), "--dataset", str(saved_videos), "--split", "test", "--rows", "maskgit",
                        "default+cache", "--videos-per-class", "1", "--context-frames", "2",
                        "--num-prediction-videos", "2", "--threads", "1", "--device", "cpu", "--output-dir",
                        str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((output / "results.json").read_text())
    assert [row["name"] for row in recorded["rows"]] == ["maskgit", "default+cache"]
    assert recorded["settings"]["real_videos"]["dataset"] == str(saved_videos)
    assert (output / "results.md").read_text() in result.stdout
    assert (output / "samples" / "maskgit-prediction.png").is_file()


def test_the_benchmark_script_reports_bad_arguments_in_one_line(saved_videos, tmp_path):
    pipeline_dir, classifier_dir = tmp_path / "pipe", tmp_path / "classifier"
    make_pipeline().save_pretrained(pipeline_dir)
    make_classifier().save_pretrained(classifier_dir)
    result = run_script("benchmarks/video_quality.py", "--pipeline", str(pipeline_dir), "--classifier",
                        str(classifier_dir), "--dataset", str(saved_videos), "--context-frames", "3",
                        "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "video_quality: error: context_frames must be a multiple of the tokenizer's temporal_downsample_factor 2 "
        "below its 4 frames, one of [2]; got 3")


# ---------------------------------------------------------------- the shipped frame classifier


def test_shipped_frame_classifier_card_reports_the_measured_accuracy():
    recorded = json.loads((SHIPPED_FRAME_CLASSIFIER / "training_results.json").read_text())
    assert recorded["dataset"] == "moving-fashion-mnist" and recorded["num_test_images"] == 16000
    assert recorded["test_accuracy"] >= 0.8
    assert f"{100 * recorded['test_accuracy']:.2f}%" in (SHIPPED_FRAME_CLASSIFIER / "README.md").read_text()
    assert (SHIPPED_FRAME_CLASSIFIER / "model.safetensors").stat().st_size < 3 * 2**20


@pytest.mark.skipif(not HAVE_FASHION_MNIST, reason=f"Fashion-MNIST IDX files not in {FASHION_MNIST_DIR}")
def test_shipped_frame_classifier_recognises_the_first_test_videos():
    # Video i of a split is a function of (seed, split, i): these are the saved test split's first 24 videos.
    images, labels = read_fashion_mnist("test")
    rows = [moving_fashion_mnist_video(images, labels, seed=0, split="test", index=index) for index in range(24)]
    videos = videos_to_tensor(np.stack([row["video"] for row in rows])[..., None])  # [24, 16, 1, 64, 64]
    classifier = MGNTFeatureClassifier.from_pretrained(SHIPPED_FRAME_CLASSIFIER, local_files_only=True)
    _, predictions = classify_video_frames(classifier, videos)
    truth = torch.tensor([row["label"] for row in rows])
    # 85% of all 16,000 test frames; 24 videos leave room for sampling noise.
    assert float((predictions == truth[:, None]).double().mean()) >= 0.65
