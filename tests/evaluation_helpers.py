"""Tiny random models and constructed data shared by the evaluation tests (`tests/test_evaluation_*.py`)."""

from pathlib import Path

import numpy as np
import torch

from conftest import make_tiny_transformer, make_tiny_video_transformer, make_tiny_video_vqvae, make_tiny_vqvae
from mgnt_hf import MGNTFeatureClassifier, MGNTFeatureClassifierConfig, MGNTPipeline, MGNTScheduler, MGNTVideoPipeline
from mgnt_hf.data import FASHION_MNIST_DIR

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CLASSIFIER = REPO / "pipelines" / "fashion-mnist-classifier"
SHIPPED_FRAME_CLASSIFIER = REPO / "pipelines" / "moving-fashion-mnist-frame-classifier"
HAVE_FASHION_MNIST = (Path(FASHION_MNIST_DIR) / "t10k-images-idx3-ubyte.gz").is_file()

# The tiny video pipeline: 4-frame 16x16 grayscale clips, temporal downsampling 2 -> context of 2 frames.
VIDEO_CLASSES = ["T-shirt/top", "Trouser", "Ankle boot"]
NUM_FRAMES, SIZE, CONTEXT_FRAMES = 4, 16, 2


def tiny_classifier(seed=0, **overrides) -> MGNTFeatureClassifier:
    """A 1-channel 16x16 classifier of the 10 Fashion-MNIST classes, in eval mode."""
    torch.manual_seed(seed)
    fields = dict(conv_channels=(4, 8), feature_size=16, image_size=16)
    fields.update(overrides)
    return MGNTFeatureClassifier(MGNTFeatureClassifierConfig(**fields)).eval()


def _randomise_batch_norm(classifier: MGNTFeatureClassifier) -> MGNTFeatureClassifier:
    """BatchNorm running statistics randomised so that the features depend on them, as a trained classifier's do."""
    for module in classifier.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return classifier.eval()


# ---------------------------------------------------------------- images


def make_image_pipeline() -> MGNTPipeline:
    pipe = MGNTPipeline(transformer=make_tiny_transformer(), vqvae=make_tiny_vqvae(), scheduler=MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_image_classifier(seed: int = 0, num_labels: int = 3) -> MGNTFeatureClassifier:
    """Takes the tiny image pipeline's 16x16 RGB images."""
    torch.manual_seed(seed)
    id2label = dict(enumerate(["T-shirt/top", "Trouser", "Ankle boot", "Bag"][:num_labels]))
    classifier = MGNTFeatureClassifier(MGNTFeatureClassifierConfig(
        num_channels=3, image_size=16, conv_channels=(4, 8), feature_size=8, id2label=id2label))
    return _randomise_batch_norm(classifier)


def make_reference(num_images: int = 48, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 16x16 RGB "real" images in [-1, 1] and their labels `n % 3`."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(num_images, 3, 16, 16, generator=generator) * 2 - 1
    return pixels, torch.arange(num_images) % 3


# ---------------------------------------------------------------- videos


def make_video_pipeline() -> MGNTVideoPipeline:
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(), MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_frame_classifier(seed: int = 0, image_size: int = SIZE) -> MGNTFeatureClassifier:
    """Takes the tiny video pipeline's 16x16 grayscale frames."""
    torch.manual_seed(seed)
    classifier = MGNTFeatureClassifier(MGNTFeatureClassifierConfig(
        num_channels=1, image_size=image_size, conv_channels=(4, 8), feature_size=8,
        id2label=dict(enumerate(VIDEO_CLASSES))))
    return _randomise_batch_norm(classifier)


def moving_squares(num_videos: int = 12, num_frames: int = NUM_FRAMES, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[N, T, size, size, 1]`: a bright 4x4 square moving right, its row set by the class `n % 3`."""
    videos = np.zeros((num_videos, num_frames, size, size, 1), dtype=np.uint8)
    labels = np.arange(num_videos) % 3
    for index, label in enumerate(labels):
        for frame in range(num_frames):
            column = (index + 2 * frame) % (size - 4)
            videos[index, frame, label * 5 : label * 5 + 4, column : column + 4] = 255
    return videos, labels


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


def save_tiny_i3d(folder: Path) -> Path:
    """A scripted [`TinyI3D`] (fixed seed) saved as a TorchScript file in `folder`."""
    torch.manual_seed(0)
    path = folder / "tiny_i3d.pt"
    torch.jit.save(torch.jit.script(TinyI3D()), str(path))
    return path


def save_moving_squares_dataset(root: Path) -> Path:
    """The moving squares as a Moving Fashion-MNIST-like `DatasetDict` saved at `root` (Array3D uint8 `video`,
    ClassLabel `label`): 12 training videos, the first 6 of them as the test split."""
    import datasets

    videos, labels = moving_squares(12)
    features = datasets.Features({"video": datasets.Array3D(shape=(NUM_FRAMES, SIZE, SIZE), dtype="uint8"),
                                  "label": datasets.ClassLabel(names=VIDEO_CLASSES)})
    split = datasets.Dataset.from_dict({"video": list(videos[..., 0]), "label": labels.tolist()}, features=features)
    datasets.DatasetDict({"train": split, "test": split.select(range(6))}).save_to_disk(str(root))
    return root
