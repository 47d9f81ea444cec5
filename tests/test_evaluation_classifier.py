"""The feature classifier (`MGNTFeatureClassifierConfig`, `MGNTFeatureClassifier`): config, shapes, input checks,
saving and loading, and the shipped Fashion-MNIST and Moving Fashion-MNIST frame classifiers."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

from evaluation_helpers import HAVE_FASHION_MNIST, REPO, SHIPPED_CLASSIFIER, SHIPPED_FRAME_CLASSIFIER, tiny_classifier
from mgnt_hf import MGNTFeatureClassifier, MGNTFeatureClassifierConfig
from mgnt_hf.data import FASHION_MNIST_DIR, read_fashion_mnist
from mgnt_hf.evaluation import (
    FASHION_MNIST_LABELS,
    class_accuracy,
    classify_video_frames,
    fashion_mnist_pixels,
    pad_pixels,
    pixels_from_images,
    videos_to_tensor,
)
from mgnt_hf.moving_fashion_mnist import moving_fashion_mnist_video

FIXTURE = REPO / "tests" / "fixtures" / "fashion_mnist_test_first64.npz"


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
