"""Evaluation metrics (`mgnt_hf.evaluation.metrics`): the Fréchet distance and feature statistics, classifier FID
and class accuracy over sample sets, Inception FID's checks; PSNR and SSIM, temporal consistency and FVD of
videos."""

import importlib.util

import numpy as np
import pytest
import torch

from evaluation_helpers import NUM_FRAMES, SIZE, make_frame_classifier, moving_squares, save_tiny_i3d, tiny_classifier
from mgnt_hf.evaluation import (
    PSNR_CAP_DB,
    FeatureStatistics,
    FeatureStatisticsAccumulator,
    class_accuracy,
    classifier_fid,
    classifier_outputs,
    classify_video_frames,
    evaluate_samples,
    frame_difference,
    frechet_distance,
    frechet_distance_from_statistics,
    frechet_video_distance,
    i3d_features,
    inception_fid,
    label_consistency,
    load_i3d,
    majority_labels,
    prediction_scores,
    psnr,
    reference_statistics,
    ssim,
    video_classifier_scores,
)


def random_features(num_samples, dim, seed):
    generator = np.random.default_rng(seed)
    mixing = generator.normal(size=(dim, dim))
    return generator.normal(size=(num_samples, dim)) @ mixing + generator.normal(size=dim)


# --- Fréchet distance -----------------------------------------------------------------------


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = random_features(400, 12, seed=0)
    assert frechet_distance(features, features) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_to_a_shifted_copy_is_the_squared_mean_shift():
    features = random_features(400, 12, seed=1)
    shift = np.linspace(-2.0, 3.0, 12)
    # Equal covariances: the trace terms cancel exactly and only |shift|^2 remains.
    assert frechet_distance(features, features + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_distance_is_symmetric():
    features_a, features_b = random_features(300, 10, seed=2), 0.5 * random_features(200, 10, seed=3)
    distance = frechet_distance(features_a, features_b)
    assert distance > 1.0
    assert frechet_distance(features_b, features_a) == pytest.approx(distance, rel=1e-10)


def test_frechet_distance_of_diagonal_gaussians_has_the_closed_form():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    std_a, std_b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([2.0, 0.5, 0.5, 1.0])
    stats_a = FeatureStatistics(mean_a, np.diag(std_a**2), num_samples=100)
    stats_b = FeatureStatistics(mean_b, np.diag(std_b**2), num_samples=100)
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    assert frechet_distance_from_statistics(stats_a, stats_b) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_full_covariances():
    linalg = pytest.importorskip("scipy.linalg")
    stats_a = FeatureStatistics.from_features(random_features(500, 8, seed=4))
    stats_b = FeatureStatistics.from_features(random_features(300, 8, seed=5))
    covariance_sqrt = linalg.sqrtm(stats_a.covariance @ stats_b.covariance).real
    expected = (
        np.sum((stats_a.mean - stats_b.mean) ** 2)
        + np.trace(stats_a.covariance) + np.trace(stats_b.covariance) - 2 * np.trace(covariance_sqrt)
    )
    assert frechet_distance(stats_a, stats_b) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_accepts_torch_features_and_statistics_alike():
    features_a, features_b = random_features(200, 6, seed=6), random_features(150, 6, seed=7)
    from_numpy = frechet_distance(features_a, features_b)
    assert frechet_distance(torch.from_numpy(features_a).float(), features_b) == pytest.approx(from_numpy, rel=1e-5)
    assert frechet_distance(FeatureStatistics.from_features(features_a), features_b) == from_numpy


@pytest.mark.parametrize(
    "features_a, features_b",
    [
        (np.zeros((10, 3)), np.zeros((10, 4))),  # feature sizes differ
        (np.zeros(10), np.zeros((10, 1))),  # not [N, D]
        (np.zeros((1, 3)), np.zeros((10, 3))),  # one sample has no covariance
        (np.full((5, 3), np.nan), np.zeros((5, 3))),
    ],
)
def test_frechet_distance_rejects_bad_features(features_a, features_b):
    with pytest.raises(ValueError):
        frechet_distance(features_a, features_b)


def test_streaming_accumulator_equals_statistics_of_all_features():
    features = random_features(257, 9, seed=8) * 100.0 + 1e4  # a large offset tests the centred update
    accumulator = FeatureStatisticsAccumulator()
    for start, stop in [(0, 1), (1, 64), (64, 200), (200, 257)]:
        accumulator.update(features[start:stop])
    streamed, direct = accumulator.compute(), FeatureStatistics.from_features(features)
    assert streamed.num_samples == 257
    np.testing.assert_allclose(streamed.mean, direct.mean, rtol=1e-13)
    np.testing.assert_allclose(streamed.covariance, direct.covariance, rtol=1e-9, atol=1e-9)


def test_feature_statistics_save_load_round_trip(tmp_path):
    stats = FeatureStatistics.from_features(random_features(50, 5, seed=9))
    stats.save(tmp_path / "stats.npz")
    loaded = FeatureStatistics.load(tmp_path / "stats.npz")
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.covariance, stats.covariance)
    assert loaded.num_samples == 50
    with pytest.raises(OSError):
        FeatureStatistics.load(tmp_path / "missing.npz")


# --- metrics over sample sets -------------------------------------------------------------------


def test_classifier_outputs_do_not_depend_on_batch_size_and_keep_training_mode():
    model = tiny_classifier()
    model.train()
    pixels = torch.rand(11, 1, 16, 16) * 2 - 1
    features_whole, logits_whole = classifier_outputs(model, pixels, batch_size=11)
    features_batched, logits_batched = classifier_outputs(model, pixels, batch_size=3)
    torch.testing.assert_close(features_batched, features_whole)
    torch.testing.assert_close(logits_batched, logits_whole)
    assert model.training  # restored after the evaluation pass
    with pytest.raises(ValueError):
        classifier_outputs(model, pixels, batch_size=0)


def test_class_accuracy_counts_matching_predictions():
    model = tiny_classifier()
    pixels = torch.rand(12, 1, 16, 16) * 2 - 1
    predicted = classifier_outputs(model, pixels)[1].argmax(-1)
    assert class_accuracy(model, pixels, predicted) == 1.0
    assert class_accuracy(model, pixels, (predicted + 1) % 10) == 0.0
    half_wrong = predicted.clone()
    half_wrong[:6] = (half_wrong[:6] + 1) % 10
    assert class_accuracy(model, pixels, half_wrong.numpy()) == 0.5


@pytest.mark.parametrize(
    "labels",
    [torch.zeros(3, dtype=torch.long), torch.full((12,), 10), torch.full((12,), -1), torch.zeros(12)],
)
def test_class_accuracy_rejects_bad_labels(labels):
    with pytest.raises(ValueError):
        class_accuracy(tiny_classifier(), torch.zeros(12, 1, 16, 16), labels)


def test_classifier_fid_of_real_set_against_itself_is_zero_and_grows_with_distortion():
    model = tiny_classifier()
    pixels = torch.rand(64, 1, 16, 16) * 2 - 1
    reference = reference_statistics(model, pixels, batch_size=16)
    assert reference.num_samples == 64
    assert classifier_fid(model, pixels, reference) == pytest.approx(0.0, abs=1e-6)
    assert classifier_fid(model, pixels, pixels) == pytest.approx(0.0, abs=1e-6)
    assert classifier_fid(model, pixels.flip(-1).clamp(-0.2, 1.0), reference) > 1e-3


def test_evaluate_samples_matches_the_separate_metrics():
    model = tiny_classifier()
    real = torch.rand(40, 1, 16, 16) * 2 - 1
    generated = (torch.rand(30, 1, 16, 16) * 2 - 1) * 0.5
    labels = torch.arange(30) % 10
    reference = reference_statistics(model, real)
    scores = evaluate_samples(model, generated, labels, reference, batch_size=7)
    assert scores["num_samples"] == 30
    assert scores["classifier_fid"] == pytest.approx(classifier_fid(model, generated, reference), rel=1e-6)
    assert scores["class_accuracy"] == class_accuracy(model, generated, labels)


def test_evaluate_samples_without_labels_gives_the_fid_and_no_accuracy():
    model = tiny_classifier()
    real, generated = torch.rand(40, 1, 16, 16) * 2 - 1, torch.rand(30, 1, 16, 16) * 2 - 1
    reference = reference_statistics(model, real)
    scores = evaluate_samples(model, generated, None, reference)
    assert scores == {"classifier_fid": pytest.approx(classifier_fid(model, generated, reference), rel=1e-6),
                      "class_accuracy": None, "num_samples": 30}


def test_inception_fid_checks_the_weights_file_and_names_the_missing_extra(tmp_path):
    pixels = torch.zeros(2, 1, 16, 16)
    with pytest.raises(OSError, match="weights"):
        inception_fid(pixels, pixels, tmp_path / "missing.pth")
    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity is installed; only the error path without it is tested here")
    (tmp_path / "weights.pth").write_bytes(b"unused")
    with pytest.raises(ImportError, match="torch-fidelity"):
        inception_fid(pixels, pixels, tmp_path / "weights.pth")


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
    gaussian_filter = pytest.importorskip("scipy.ndimage").gaussian_filter

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
    _, predictions = classify_video_frames(make_frame_classifier(), static)
    assert predictions.shape == (6, NUM_FRAMES)
    assert label_consistency(predictions, 3) == 1.0 and frame_difference(static) == 0.0


def test_per_frame_fid_of_a_set_against_its_own_frames_is_zero():
    videos, labels = moving_squares()
    real = torch.from_numpy(videos).float().div(255).permute(0, 1, 4, 2, 3)
    features, predictions = classify_video_frames(make_frame_classifier(), real, batch_size=7)
    assert features.shape == (12 * NUM_FRAMES, 8)
    scores = video_classifier_scores(features, predictions, real, torch.from_numpy(labels),
                                     FeatureStatistics.from_features(features), 3)
    assert scores["classifier_fid"] == pytest.approx(0.0, abs=1e-8)
    assert scores["num_frames"] == 12 * NUM_FRAMES and 0 <= scores["frame_accuracy"] <= 1


# ---------------------------------------------------------------- FVD


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    return save_tiny_i3d(tmp_path_factory.mktemp("i3d"))


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
