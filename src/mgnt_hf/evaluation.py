"""Sample-quality metrics: FID in a Fashion-MNIST classifier's feature space, class accuracy, optional Inception FID.

MaGNeTS trades compute for quality; these metrics measure the quality side on data we have offline.

The feature network is [`MGNTFeatureClassifier`], a small CNN trained on Fashion-MNIST by
`training/train_classifier.py` and shipped in `pipelines/fashion-mnist-classifier/`. Its
penultimate activations (`config.feature_size`, 128 by default) play the role Inception's pool
features play in standard FID; its logits give the class accuracy of class-conditional samples.

Pixels everywhere are `torch.float32` tensors `[B, C, H, W]` in `[-1, 1]` (what the project's VQ
tokenizer decodes), at exactly the classifier's `image_size` (32 for Fashion-MNIST: the 28x28
images padded by 2 on each side, as the tokenizer sees them). Other layouts go through
[`pixels_from_images`] (PIL images, numpy `uint8` `[B, H, W(, C)]`, or numpy float `[B, H, W, C]`
in `[0, 1]` as a diffusers pipeline returns for `output_type="np"`), and 28x28 pixels through
[`pad_pixels`]. The classifier refuses other sizes instead of resizing them silently.

Typical use, evaluating generated samples against the real test split:

```python
>>> from mgnt_hf.evaluation import (MGNTFeatureClassifier, fashion_mnist_pixels,
...                                 reference_statistics, evaluate_samples)
>>> classifier = MGNTFeatureClassifier.from_pretrained("pipelines/fashion-mnist-classifier")
>>> real_pixels, real_labels = fashion_mnist_pixels("test")            # [10000, 1, 32, 32], [10000]
>>> reference = reference_statistics(classifier, real_pixels)          # FeatureStatistics
>>> reference.save("fashion_mnist_test_stats.npz")                     # reuse across runs
>>> scores = evaluate_samples(classifier, generated_pixels, intended_labels, reference)
>>> scores["classifier_fid"], scores["class_accuracy"]
```

`classifier_fid` and `class_accuracy` compute one number each; `evaluate_samples` computes both
from one pass. For samples produced batch by batch, feed [`FeatureStatisticsAccumulator`] with
`classifier.features(...)` and call [`frechet_distance`] on its result.

Fréchet distance: `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})`, in float64 with
unbiased (`N - 1`) covariances, as pytorch-fid / torch-fidelity compute it. The trace of the matrix
square root is taken as `sum(sqrt(eig(S_a^{1/2} S_b S_a^{1/2})))`: that matrix is symmetric positive
semi-definite and has the same eigenvalues as `S_a S_b`, so two symmetric eigendecompositions
(`numpy.linalg.eigh`) replace the general, non-symmetric `scipy.linalg.sqrtm`, need no SciPy, and
never produce complex parts; eigenvalues that round to slightly below zero are clipped to zero.
Numbers from this feature space are comparable with each other, not with Inception FIDs in papers.

Standard Inception FID ([`inception_fid`]) needs the optional `torch-fidelity` package (and the
torchvision build that matches your torch) and a local copy of its Inception weights file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .configuration_feature_classifier import MGNTFeatureClassifierConfig  # noqa: F401 (re-exported)
from .data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, read_fashion_mnist
from .modeling_feature_classifier import MGNTFeatureClassifier  # noqa: F401 (re-exported)

FASHION_MNIST_LABELS = FASHION_MNIST_CLASSES


# ---------------------------------------------------------------------------------------------
# Pixel conversions
# ---------------------------------------------------------------------------------------------


def pad_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Pad `[B, C, h, w]` pixels in `[-1, 1]` to `[B, C, size, size]` with the background value -1, centred.

    Fashion-MNIST's 28x28 images become the 32x32 images the tokenizer and the classifier see.
    """
    if pixels.ndim != 4:
        raise ValueError(f"pixels must be [B, C, H, W], got shape {tuple(pixels.shape)}")
    height, width = pixels.shape[-2:]
    if height > size or width > size or (size - height) % 2 or (size - width) % 2:
        raise ValueError(
            f"cannot centre-pad {height}x{width} pixels to {size}x{size}: each side must be at most {size} "
            f"and differ from it by an even number"
        )
    pad_h, pad_w = (size - height) // 2, (size - width) // 2
    return F.pad(pixels, (pad_w, pad_w, pad_h, pad_h), value=-1.0)


def pixels_from_images(images) -> torch.Tensor:
    """Convert images to the classifier's pixel layout: `float32 [B, C, H, W]` in `[-1, 1]`.

    Accepts:
        - a list of PIL images (mode `L` gives 1 channel, `RGB` 3 channels);
        - a numpy `uint8` array `[B, H, W]` or `[B, H, W, C]` with values in `[0, 255]`;
        - a numpy float array `[B, H, W, C]` with values in `[0, 1]` (diffusers' `output_type="np"`).
    Torch tensors are taken to be pixels already and are refused here, to keep the two layouts apart.
    """
    if isinstance(images, torch.Tensor):
        raise ValueError(
            "pixels_from_images converts PIL images or numpy arrays; a torch tensor is expected to be "
            "float [B, C, H, W] pixels in [-1, 1] already and can be passed to the classifier as it is"
        )
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("pixels_from_images got an empty list")
        images = np.stack([np.asarray(image) for image in images])
    if not isinstance(images, np.ndarray):
        raise ValueError(f"pixels_from_images accepts a list of PIL images or a numpy array, got {type(images).__name__}")
    if images.dtype == np.uint8:
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4:
            raise ValueError(f"uint8 images must be [B, H, W] or [B, H, W, C], got shape {images.shape}")
        array = images.astype(np.float32) / 255.0
    elif np.issubdtype(images.dtype, np.floating):
        if images.ndim != 4:
            raise ValueError(f"float images must be [B, H, W, C] in [0, 1], got shape {images.shape}")
        if images.size and (images.min() < 0.0 or images.max() > 1.0):
            raise ValueError(
                f"float images must lie in [0, 1], got values in [{images.min()}, {images.max()}]"
            )
        array = images.astype(np.float32)
    else:
        raise ValueError(f"images must be uint8 in [0, 255] or float in [0, 1], got dtype {images.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    return pixels * 2.0 - 1.0


def fashion_mnist_pixels(
    split: str = "test", data_dir: str | os.PathLike = FASHION_MNIST_DIR, image_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST as classifier input: pixels `float32 [N, 1, image_size, image_size]` in `[-1, 1]`
    (28x28 centre-padded with background) and labels `int64 [N]`."""
    images, labels = read_fashion_mnist(split, os.fspath(data_dir))
    pixels = pad_pixels(pixels_from_images(images), image_size)
    return pixels, torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Feature statistics and the Fréchet distance
# ---------------------------------------------------------------------------------------------


def _as_float64_features(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be a non-empty [N, D] array, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or infinite values")
    return features


@dataclass
class FeatureStatistics:
    """Mean `[D]` and unbiased covariance `[D, D]` (float64) of `num_samples` feature vectors."""

    mean: np.ndarray
    covariance: np.ndarray
    num_samples: int

    def __post_init__(self):
        self.mean = np.asarray(self.mean, dtype=np.float64)
        self.covariance = np.asarray(self.covariance, dtype=np.float64)
        dim = self.mean.shape[0] if self.mean.ndim == 1 else None
        if dim is None or self.covariance.shape != (dim, dim):
            raise ValueError(
                f"FeatureStatistics needs mean [D] and covariance [D, D], got {self.mean.shape} and {self.covariance.shape}"
            )

    @classmethod
    def from_features(cls, features) -> FeatureStatistics:
        """Statistics of `features` `[N, D]` (torch or numpy), N >= 2."""
        features = _as_float64_features(features)
        if features.shape[0] < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {features.shape[0]}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1), features.shape[0])

    def save(self, path: str | os.PathLike) -> None:
        """Write to a `.npz` file (plain arrays, no pickle)."""
        np.savez(path, mean=self.mean, covariance=self.covariance, num_samples=np.int64(self.num_samples))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FeatureStatistics:
        if not Path(path).is_file():
            raise OSError(f"feature statistics file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["covariance"], int(data["num_samples"]))


class FeatureStatisticsAccumulator:
    """Streaming mean and covariance of feature batches `[B, D]`, in float64.

    Batches are merged with Chan et al.'s pairwise update (centred sums of squares, not raw second
    moments), so the result equals [`FeatureStatistics.from_features`] on the concatenation up to
    rounding, without keeping the features.
    """

    def __init__(self):
        self.num_samples = 0
        self._mean = None
        self._centred_squares = None  # sum over samples of (x - mean)(x - mean)^T

    def update(self, features) -> None:
        features = _as_float64_features(features)
        batch_size = features.shape[0]
        batch_mean = features.mean(axis=0)
        centred = features - batch_mean
        batch_squares = centred.T @ centred
        if self._mean is None:
            self._mean, self._centred_squares, self.num_samples = batch_mean, batch_squares, batch_size
            return
        if features.shape[1] != self._mean.shape[0]:
            raise ValueError(f"feature size changed from {self._mean.shape[0]} to {features.shape[1]}")
        total = self.num_samples + batch_size
        delta = batch_mean - self._mean
        self._centred_squares = self._centred_squares + batch_squares + np.outer(delta, delta) * (self.num_samples * batch_size / total)
        self._mean = self._mean + delta * (batch_size / total)
        self.num_samples = total

    def compute(self) -> FeatureStatistics:
        if self.num_samples < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.num_samples}")
        return FeatureStatistics(self._mean.copy(), self._centred_squares / (self.num_samples - 1), self.num_samples)


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance_from_statistics(stats_a: FeatureStatistics, stats_b: FeatureStatistics) -> float:
    """Fréchet distance between the Gaussians `N(mean_a, cov_a)` and `N(mean_b, cov_b)` (see module docstring)."""
    if stats_a.mean.shape != stats_b.mean.shape:
        raise ValueError(f"feature sizes differ: {stats_a.mean.shape[0]} and {stats_b.mean.shape[0]}")
    sqrt_a = _symmetric_sqrt(stats_a.covariance)
    product = sqrt_a @ stats_b.covariance @ sqrt_a  # same eigenvalues as cov_a @ cov_b, but symmetric PSD
    trace_sqrt_product = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    mean_term = float(np.sum((stats_a.mean - stats_b.mean) ** 2))
    distance = mean_term + np.trace(stats_a.covariance) + np.trace(stats_b.covariance) - 2.0 * trace_sqrt_product
    # The true value is >= 0; rounding can leave a tiny negative number for identical sets.
    return float(max(distance, 0.0))


def frechet_distance(features_a, features_b) -> float:
    """Fréchet distance between two feature sets.

    Args:
        features_a, features_b: each a `[N, D]` feature array (torch or numpy, N >= 2; the sets may
            differ in N) or a [`FeatureStatistics`].
    """
    stats = [
        value if isinstance(value, FeatureStatistics) else FeatureStatistics.from_features(value)
        for value in (features_a, features_b)
    ]
    return frechet_distance_from_statistics(*stats)


# ---------------------------------------------------------------------------------------------
# Running the classifier over sample sets
# ---------------------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


@torch.no_grad()
def classifier_outputs(
    classifier: MGNTFeatureClassifier,
    pixels: torch.Tensor,
    batch_size: int = 500,
    device: str | torch.device | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and logits of `pixels` in batches, in eval mode.

    Args:
        classifier: the feature classifier; with `device` given it is moved there (in place).
        pixels: `float [N, C, H, W]` in `[-1, 1]` at the classifier's size, on any device.
        batch_size: images per forward pass.
        device: where to run; defaults to the classifier's device.

    Returns:
        `(features, logits)`: `float32 [N, feature_size]` and `float32 [N, num_labels]`, on the CPU.
    """
    _check_batch_size(batch_size)
    classifier.check_pixels(pixels)
    if device is not None:
        classifier.to(device)
    device = classifier.device
    was_training = classifier.training
    classifier.eval()
    features, logits = [], []
    try:
        for start in range(0, pixels.shape[0], batch_size):
            output = classifier(pixels[start : start + batch_size].to(device))
            features.append(output.features.float().cpu())
            logits.append(output.logits.float().cpu())
    finally:
        classifier.train(was_training)
    return torch.cat(features), torch.cat(logits)


def reference_statistics(
    classifier: MGNTFeatureClassifier, pixels: torch.Tensor, batch_size: int = 500, device=None
) -> FeatureStatistics:
    """Classifier-feature statistics of real images `[N, C, H, W]` in `[-1, 1]` (e.g. [`fashion_mnist_pixels`]`("test")`)."""
    features, _ = classifier_outputs(classifier, pixels, batch_size, device)
    return FeatureStatistics.from_features(features)


def _check_labels(labels, num_samples: int, num_labels: int) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.shape != (num_samples,):
        raise ValueError(f"labels must be {num_samples} integer class ids [N], got dtype {labels.dtype}, shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_labels):
        raise ValueError(f"labels must lie in [0, {num_labels}), got values in [{int(labels.min())}, {int(labels.max())}]")
    return labels.long().cpu()


def _reference_to_statistics(classifier, reference, batch_size, device) -> FeatureStatistics:
    if isinstance(reference, FeatureStatistics):
        return reference
    if isinstance(reference, torch.Tensor):
        return reference_statistics(classifier, reference, batch_size, device)
    raise ValueError(f"reference must be FeatureStatistics or a pixel tensor [N, C, H, W], got {type(reference).__name__}")


def classifier_fid(
    classifier: MGNTFeatureClassifier,
    pixels: torch.Tensor,
    reference: FeatureStatistics | torch.Tensor,
    batch_size: int = 500,
    device=None,
) -> float:
    """Fréchet distance between the classifier features of `pixels` `[N, C, H, W]` and `reference`
    (precomputed [`FeatureStatistics`], or real pixels to compute them from)."""
    reference = _reference_to_statistics(classifier, reference, batch_size, device)
    features, _ = classifier_outputs(classifier, pixels, batch_size, device)
    return frechet_distance(features, reference)


def class_accuracy(
    classifier: MGNTFeatureClassifier, pixels: torch.Tensor, labels, batch_size: int = 500, device=None
) -> float:
    """Fraction of `pixels` `[N, C, H, W]` whose predicted class equals the intended `labels` `[N]`."""
    classifier.check_pixels(pixels)
    labels = _check_labels(labels, pixels.shape[0], classifier.config.num_labels)
    _, logits = classifier_outputs(classifier, pixels, batch_size, device)
    return float((logits.argmax(dim=-1) == labels).double().mean())


def evaluate_samples(
    classifier: MGNTFeatureClassifier,
    pixels: torch.Tensor,
    labels,
    reference: FeatureStatistics | torch.Tensor,
    batch_size: int = 500,
    device=None,
) -> dict[str, float]:
    """Classifier FID and class accuracy of class-conditional samples from one pass over them.

    Returns:
        `{"classifier_fid": float, "class_accuracy": float, "num_samples": int}`.
    """
    classifier.check_pixels(pixels)
    labels = _check_labels(labels, pixels.shape[0], classifier.config.num_labels)
    reference = _reference_to_statistics(classifier, reference, batch_size, device)
    features, logits = classifier_outputs(classifier, pixels, batch_size, device)
    return {
        "classifier_fid": frechet_distance(features, reference),
        "class_accuracy": float((logits.argmax(dim=-1) == labels).double().mean()),
        "num_samples": int(pixels.shape[0]),
    }


# ---------------------------------------------------------------------------------------------
# Optional: standard Inception FID through torch-fidelity
# ---------------------------------------------------------------------------------------------


def _pixels_to_uint8_rgb(pixels: torch.Tensor) -> torch.Tensor:
    if not isinstance(pixels, torch.Tensor) or pixels.ndim != 4 or pixels.shape[1] not in (1, 3) or pixels.shape[0] == 0:
        raise ValueError(f"pixels must be a tensor [B, 1 or 3, H, W] in [-1, 1], got {getattr(pixels, 'shape', type(pixels))}")
    uint8 = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return uint8.expand(-1, 3, -1, -1) if uint8.shape[1] == 1 else uint8


@torch.no_grad()
def inception_fid(
    pixels: torch.Tensor,
    reference_pixels: torch.Tensor,
    inception_weights: str | os.PathLike,
    batch_size: int = 100,
    device: str | torch.device = "cpu",
) -> float:
    """Standard FID (Inception-v3 pool features, 2048-d) between two pixel sets `[N, 1 or 3, H, W]` in `[-1, 1]`.

    Uses torch-fidelity's TF-ported Inception (`inception-v3-compat`) with the weights file at
    `inception_weights` (torch-fidelity's `weights-inception-2015-12-05-6726825d.pth`; nothing is
    downloaded). Pixels are quantised to uint8, grey images repeated to RGB, and resized to 299x299
    inside the network, as torch-fidelity does. That weights file is a pickle, loaded by
    torch-fidelity: only pass a file you trust.

    Needs the optional extra: `pip install torch-fidelity` (it requires torchvision built for your torch).
    """
    _check_batch_size(batch_size)
    weights = Path(inception_weights)
    if not weights.is_file():
        raise OSError(f"Inception weights file not found: {weights}")
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as error:
        raise ImportError(
            "inception_fid needs the optional package torch-fidelity (and a torchvision matching your torch): "
            "pip install 'mgnt_hf[inception]' or pip install torch-fidelity"
        ) from error
    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(weights)
    ).to(device)
    stats = []
    for images in (pixels, reference_pixels):
        images = _pixels_to_uint8_rgb(images)
        accumulator = FeatureStatisticsAccumulator()
        for start in range(0, images.shape[0], batch_size):
            (features,) = extractor(images[start : start + batch_size].to(device))
            accumulator.update(features)
        stats.append(accumulator.compute())
    return frechet_distance_from_statistics(*stats)
