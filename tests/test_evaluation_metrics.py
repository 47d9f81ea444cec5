"""Evaluation metrics (`mgnt_hf.evaluation.metrics`): the Fréchet distance and feature statistics, classifier FID
and class accuracy over sample sets, Inception FID's checks."""

import importlib.util

import numpy as np
import pytest
import torch

from evaluation_helpers import tiny_classifier
from mgnt_hf.evaluation import (
    FeatureStatistics,
    FeatureStatisticsAccumulator,
    class_accuracy,
    classifier_fid,
    classifier_outputs,
    evaluate_samples,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_fid,
    reference_statistics,
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


def test_inception_fid_checks_the_weights_file_and_names_the_missing_extra(tmp_path):
    pixels = torch.zeros(2, 1, 16, 16)
    with pytest.raises(OSError, match="weights"):
        inception_fid(pixels, pixels, tmp_path / "missing.pth")
    if importlib.util.find_spec("torch_fidelity") is not None:
        pytest.skip("torch-fidelity is installed; only the error path without it is tested here")
    (tmp_path / "weights.pth").write_bytes(b"unused")
    with pytest.raises(ImportError, match="torch-fidelity"):
        inception_fid(pixels, pixels, tmp_path / "weights.pth")
