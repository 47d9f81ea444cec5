"""Evaluation inputs (`mgnt_hf.evaluation.data`): pixels from images, padding, the Fashion-MNIST split, video
arrays from a dataset, frames as classifier pixels, finding the classifier."""

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation_helpers import NUM_FRAMES, SIZE, SHIPPED_CLASSIFIER, moving_squares, save_moving_squares_dataset
from mgnt_hf.evaluation import (
    fashion_mnist_pixels,
    frames_to_pixels,
    load_video_arrays,
    pad_pixels,
    pixels_from_images,
    resolve_classifier,
)


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


# ---------------------------------------------------------------- videos


@pytest.fixture(scope="module")
def saved_videos(tmp_path_factory):
    return save_moving_squares_dataset(tmp_path_factory.mktemp("videos") / "data")


def test_load_video_arrays_gives_uint8_videos_and_labels(saved_videos):
    videos, labels = load_video_arrays(str(saved_videos), "test", chunk_size=4)
    expected, expected_labels = moving_squares(6)
    assert videos.dtype == np.uint8 and videos.shape == (6, NUM_FRAMES, SIZE, SIZE, 1)
    np.testing.assert_array_equal(videos, expected)
    np.testing.assert_array_equal(labels, expected_labels)
    assert load_video_arrays(str(saved_videos), "train", limit=5)[0].shape[0] == 5


def test_frames_to_pixels_flattens_leading_dimensions_into_classifier_pixels():
    frames = np.zeros((2, 3, 5, 4, 1), dtype=np.uint8)
    frames[1, 2, 0, 0, 0] = 255
    pixels = frames_to_pixels(frames)
    assert pixels.shape == (6, 1, 5, 4) and pixels.dtype == torch.float32
    assert pixels[5, 0, 0, 0] == 1.0 and pixels.min() == -1.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frames_to_pixels(np.full((1, 4, 4, 1), 1.5, dtype=np.float32))


# ---------------------------------------------------------------- the classifier


def test_resolve_classifier_takes_a_folder_with_a_config_or_the_shipped_one(tmp_path):
    assert resolve_classifier(SHIPPED_CLASSIFIER) == str(SHIPPED_CLASSIFIER)
    assert resolve_classifier().endswith("fashion-mnist-classifier")
    with pytest.raises(OSError, match="no MGNTFeatureClassifier folder at .* \\(config.json is missing\\)"):
        resolve_classifier(tmp_path)
    with pytest.raises(OSError, match="'no-such-classifier' is not shipped"):
        resolve_classifier(None, default="no-such-classifier")
