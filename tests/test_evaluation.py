"""Evaluation metrics (Fréchet distance, class accuracy) and the Fashion-MNIST feature classifier."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel

from mgnt_hf.data import read_fashion_mnist
from mgnt_hf.evaluation import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_LABELS,
    FeatureStatistics,
    FeatureStatisticsAccumulator,
    MGNTFeatureClassifier,
    MGNTFeatureClassifierConfig,
    class_accuracy,
    classifier_fid,
    classifier_outputs,
    evaluate_samples,
    fashion_mnist_pixels,
    frechet_distance,
    frechet_distance_from_statistics,
    inception_fid,
    pad_pixels,
    pixels_from_images,
    reference_statistics,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CLASSIFIER = REPO / "pipelines" / "fashion-mnist-classifier"
FIXTURE = REPO / "tests" / "fixtures" / "fashion_mnist_test_first64.npz"
HAVE_FASHION_MNIST = (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").is_file()


def tiny_classifier(seed=0, **overrides) -> MGNTFeatureClassifier:
    torch.manual_seed(seed)
    fields = dict(conv_channels=(4, 8), feature_size=16, image_size=16)
    fields.update(overrides)
    return MGNTFeatureClassifier(MGNTFeatureClassifierConfig(**fields)).eval()


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


# --- data helpers -----------------------------------------------------------------------------


def test_fashion_mnist_pixels_rejects_unknown_split():
    with pytest.raises(ValueError, match="validation"):
        fashion_mnist_pixels("validation")


def test_pixels_from_images_maps_uint8_and_unit_floats_to_minus_one_one():
    uint8 = np.array([[[0, 255], [51, 204]]], dtype=np.uint8)  # [1, 2, 2]
    expected = torch.tensor([[[[-1.0, 1.0], [-0.6, 0.6]]]])
    torch.testing.assert_close(pixels_from_images(uint8), expected)
    torch.testing.assert_close(pixels_from_images(uint8[..., None].astype(np.float32) / 255.0), expected)
    torch.testing.assert_close(pixels_from_images([Image.fromarray(uint8[0])]), expected)
    rgb = pixels_from_images(np.zeros((2, 5, 5, 3), dtype=np.uint8))
    assert rgb.shape == (2, 3, 5, 5) and rgb.dtype == torch.float32


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(1, 1, 4, 4),  # already pixels
        np.full((1, 4, 4, 1), 1.5, dtype=np.float32),  # outside [0, 1]
        np.zeros((1, 4, 4), dtype=np.float32),  # float without a channel axis
        np.zeros((1, 4, 4), dtype=np.int32),
        [],
    ],
)
def test_pixels_from_images_rejects_other_inputs(images):
    with pytest.raises(ValueError):
        pixels_from_images(images)


def test_pad_pixels_centres_the_image_on_background():
    pixels = torch.rand(2, 1, 28, 28) * 2 - 1
    padded = pad_pixels(pixels, 32)
    assert padded.shape == (2, 1, 32, 32)
    torch.testing.assert_close(padded[:, :, 2:30, 2:30], pixels, rtol=0, atol=0)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (padded[:, :, border] == -1).all()
    with pytest.raises(ValueError):
        pad_pixels(pixels, 31)  # odd difference cannot be centred
    with pytest.raises(ValueError):
        pad_pixels(pixels, 16)


# --- the classifier ---------------------------------------------------------------------------


def test_config_defaults_to_fashion_mnist_labels_and_round_trips_json(tmp_path):
    config = MGNTFeatureClassifierConfig()
    assert config.num_labels == 10
    assert [config.id2label[index] for index in range(10)] == list(FASHION_MNIST_LABELS)
    assert config.label2id["Ankle boot"] == 9
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MGNTFeatureClassifierConfig)
    assert loaded.conv_channels == (32, 64, 128) and loaded.id2label == config.id2label


@pytest.mark.parametrize(
    "fields",
    [dict(image_size=20), dict(conv_channels=()), dict(feature_size=0), dict(dropout_prob=1.0), dict(num_channels=1.5)],
)
def test_config_rejects_bad_fields(fields):
    with pytest.raises(ValueError):
        MGNTFeatureClassifierConfig(**fields)


def test_classifier_gives_logits_and_features_of_the_documented_shapes():
    model = tiny_classifier()
    pixels = torch.rand(5, 1, 16, 16) * 2 - 1
    output = model(pixels, labels=torch.tensor([0, 1, 2, 3, 9]))
    assert output.logits.shape == (5, 10)
    assert output.features.shape == (5, 16)
    assert (output.features >= 0).all()  # post-ReLU activations
    assert output.loss.shape == ()
    torch.testing.assert_close(model.features(pixels), output.features, rtol=0, atol=0)


@pytest.mark.parametrize(
    "pixels",
    [
        torch.zeros(2, 1, 14, 14),  # smaller than image_size: must be padded explicitly
        torch.zeros(2, 3, 16, 16),  # wrong channel count
        torch.zeros(1, 16, 16),  # no batch axis
        torch.zeros(0, 1, 16, 16),  # empty batch
        torch.zeros(2, 1, 16, 16, dtype=torch.uint8),  # not float pixels
        np.zeros((2, 1, 16, 16), dtype=np.float32),  # not a tensor
    ],
)
def test_classifier_rejects_other_inputs(pixels):
    with pytest.raises(ValueError):
        tiny_classifier()(pixels)


def test_small_input_error_points_to_pad_pixels():
    with pytest.raises(ValueError, match="pad_pixels"):
        tiny_classifier().features(torch.zeros(1, 1, 12, 12))


def test_save_and_load_give_identical_logits(tmp_path):
    model = tiny_classifier(seed=3)
    # Give BatchNorm non-trivial running statistics so that they must survive the round trip.
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 1, 16, 16) * 2 - 1)
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not any(path.suffix in (".bin", ".pt", ".pth") for path in tmp_path.iterdir())
    pixels = torch.rand(4, 1, 16, 16) * 2 - 1
    for loaded in (MGNTFeatureClassifier.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert isinstance(loaded, MGNTFeatureClassifier)
        loaded.eval()
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits, rtol=0, atol=0)


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


# --- the shipped classifier -------------------------------------------------------------------


def test_shipped_classifier_classifies_real_test_images_offline():
    classifier = MGNTFeatureClassifier.from_pretrained(SHIPPED_CLASSIFIER, local_files_only=True)
    fixture = np.load(FIXTURE, allow_pickle=False)
    pixels = pad_pixels(pixels_from_images(fixture["images"]), classifier.config.image_size)
    labels = torch.from_numpy(fixture["labels"].astype(np.int64))
    # The full test split gives >= 92% (see the next test); 64 images leave room for sampling noise.
    assert class_accuracy(classifier, pixels, labels) >= 0.9


def test_shipped_classifier_card_reports_the_measured_accuracy():
    results = json.loads((SHIPPED_CLASSIFIER / "training_results.json").read_text())
    assert results["test_accuracy"] >= 0.92 and results["num_test_images"] == 10000
    assert f"{100 * results['test_accuracy']:.2f}%" in (SHIPPED_CLASSIFIER / "README.md").read_text()
    assert (SHIPPED_CLASSIFIER / "model.safetensors").stat().st_size < 5 * 2**20


@pytest.mark.skipif(not HAVE_FASHION_MNIST, reason=f"Fashion-MNIST IDX files not in {FASHION_MNIST_DIR}")
def test_shipped_classifier_reaches_its_recorded_test_accuracy():
    classifier = MGNTFeatureClassifier.from_pretrained(SHIPPED_CLASSIFIER, local_files_only=True)
    pixels, labels = fashion_mnist_pixels("test")
    recorded = json.loads((SHIPPED_CLASSIFIER / "training_results.json").read_text())["test_accuracy"]
    # Thread counts change float rounding; at most a couple of borderline images may flip.
    assert class_accuracy(classifier, pixels, labels, batch_size=1000) == pytest.approx(recorded, abs=2e-4)


@pytest.mark.skipif(not HAVE_FASHION_MNIST, reason=f"Fashion-MNIST IDX files not in {FASHION_MNIST_DIR}")
def test_fixture_is_the_start_of_the_test_split():
    images, labels = read_fashion_mnist("test")
    fixture = np.load(FIXTURE, allow_pickle=False)
    np.testing.assert_array_equal(fixture["images"], images[:64])
    np.testing.assert_array_equal(fixture["labels"], labels[:64])
