"""Sample-quality metrics: feature statistics and the Fréchet distance, classifier FID and class accuracy (images
and video frames), optional Inception FID, PSNR and SSIM of predicted frames, temporal consistency, FVD.

MaGNeTS trades compute for quality; these metrics measure the quality side on data we have offline.

**Classifier FID.** The feature network is an [`MGNTFeatureClassifier`] (`mgnt_hf.modeling_feature_classifier`):
its penultimate activations (`config.feature_size`, 128 by default) play the role Inception's pool features play
in standard FID; its logits give the class accuracy of class-conditional samples. Pixels are `torch.float32`
tensors `[B, C, H, W]` in `[-1, 1]` at exactly the classifier's `image_size` (see `mgnt_hf.evaluation.data`).

```python
>>> from mgnt_hf.evaluation import (MGNTFeatureClassifier, fashion_mnist_pixels,
...                                 reference_statistics, evaluate_samples)
>>> from mgnt_hf import shipped
>>> classifier = MGNTFeatureClassifier.from_pretrained(shipped("fashion-mnist-classifier"))
>>> real_pixels, real_labels = fashion_mnist_pixels("test")            # [10000, 1, 32, 32], [10000]
>>> reference = reference_statistics(classifier, real_pixels)          # FeatureStatistics
>>> reference.save("fashion_mnist_test_stats.npz")                     # reuse across runs
>>> scores = evaluate_samples(classifier, generated_pixels, intended_labels, reference)
>>> scores["classifier_fid"], scores["class_accuracy"]
```

`classifier_fid` and `class_accuracy` compute one number each; `evaluate_samples` computes both from one pass.
For samples produced batch by batch, feed [`FeatureStatisticsAccumulator`] with `classifier.features(...)` and
call [`frechet_distance`] on its result. [`cached_reference_statistics`] keeps the statistics of a reference set
on disk, keyed by the classifier's weights and the images.

**Fréchet distance**: `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^{1/2})`, in float64 with unbiased
(`N - 1`) covariances, as pytorch-fid / torch-fidelity compute it. The trace of the matrix square root is taken
as `sum(sqrt(eig(S_a^{1/2} S_b S_a^{1/2})))`: that matrix is symmetric positive semi-definite and has the same
eigenvalues as `S_a S_b`, so two symmetric eigendecompositions (`numpy.linalg.eigh`) replace the general,
non-symmetric `scipy.linalg.sqrtm`, need no SciPy, and never produce complex parts; eigenvalues that round to
slightly below zero are clipped to zero. Numbers from this feature space are comparable with each other, not
with Inception FIDs in papers.

Standard Inception FID ([`inception_fid`]) needs the optional `torch-fidelity` package (and the torchvision build
that matches your torch) and a local copy of its Inception weights file.

**Video metrics** take videos `float [N, T, C, H, W]` in `[0, 1]`:

- per-frame classifier FID, frame and video accuracy ([`classify_video_frames`], [`video_classifier_scores`]);
- temporal consistency: [`label_consistency`] (the share of a video's frames predicted as its majority class) and
  [`frame_difference`] (mean |frame t+1 - frame t|);
- [`psnr`] per frame (`10 log10(1 / MSE)`, capped at `PSNR_CAP_DB` so identical frames give 100 dB, not
  infinity) and [`ssim`] per frame (the Gaussian-window SSIM of Wang et al. 2004 as scikit-image computes it),
  both summarised by [`prediction_scores`];
- FVD (Unterthiner et al. 2018) through a TorchScript I3D: [`load_i3d`], [`i3d_features`] (the input convention
  assumed), [`frechet_video_distance`].
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..modeling_feature_classifier import MGNTFeatureClassifier
from ..utils.checks import check_positive_int

# PSNR of a frame whose mean squared error is at most 1e-10 (pixels in [0, 1]): identical frames score this
# instead of infinity, so averages and JSON stay finite.
PSNR_CAP_DB = 100.0
# SSIM as Wang et al. (2004) and scikit-image's `structural_similarity(gaussian_weights=True)`.
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# The I3D of StyleGAN-V's FVD takes 224x224 frames.
I3D_RESOLUTION = 224


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
    check_positive_int("batch_size", batch_size)
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
) -> dict:
    """Classifier FID and class accuracy of class-conditional samples from one pass over them.

    Args:
        labels: the intended class ids `[N]`, or None (unlabelled images: `class_accuracy` is then None).

    Returns:
        `{"classifier_fid": float, "class_accuracy": float or None, "num_samples": int}`.
    """
    classifier.check_pixels(pixels)
    if labels is not None:
        labels = _check_labels(labels, pixels.shape[0], classifier.config.num_labels)
    reference = _reference_to_statistics(classifier, reference, batch_size, device)
    features, logits = classifier_outputs(classifier, pixels, batch_size, device)
    return {
        "classifier_fid": frechet_distance(features, reference),
        "class_accuracy": None if labels is None else float((logits.argmax(dim=-1) == labels).double().mean()),
        "num_samples": int(pixels.shape[0]),
    }


# ---------------------------------------------------------------------------------------------
# Reference statistics kept on disk
# ---------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/mgnt_hf` (or `~/.cache/mgnt_hf`): where reference statistics are kept."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mgnt_hf"


def reference_statistics_key(classifier: MGNTFeatureClassifier, pixels: torch.Tensor) -> str:
    """SHA-256 of the classifier's weights and buffers (BatchNorm statistics shape the features too) and of the
    reference pixels: a cached statistics file is reused only for the same network and the same images."""
    digest = hashlib.sha256()
    for name, tensor in sorted(classifier.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    pixels = pixels.detach().to("cpu", torch.float32).contiguous()
    digest.update(str(tuple(pixels.shape)).encode())
    digest.update(pixels.numpy().tobytes())
    return digest.hexdigest()


def cached_reference_statistics(
    classifier: MGNTFeatureClassifier,
    pixels: torch.Tensor,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 500,
    device=None,
) -> tuple[FeatureStatistics, Path | None]:
    """Classifier-feature statistics of the real `pixels` `[N, C, H, W]` in `[-1, 1]`, read from
    `cache_dir/reference-<key>.npz` when present (key: [`reference_statistics_key`]), else computed and written
    there. `cache_dir=None` computes without caching. Returns `(statistics, path or None)`."""
    if cache_dir is None:
        return reference_statistics(classifier, pixels, batch_size, device), None
    path = Path(cache_dir) / f"reference-{reference_statistics_key(classifier, pixels)[:24]}.npz"
    if path.is_file():
        return FeatureStatistics.load(path), path
    statistics = reference_statistics(classifier, pixels, batch_size, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.{os.getpid()}.partial.npz")  # another run may write the same key
    statistics.save(partial)
    os.replace(partial, path)
    return statistics, path


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
    check_positive_int("batch_size", batch_size)
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


# ---------------------------------------------------------------------------------------------
# Frame metrics: PSNR, SSIM
# ---------------------------------------------------------------------------------------------


def _check_pair(predicted: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if not isinstance(predicted, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"{what} takes two torch tensors [..., C, H, W], got {type(predicted).__name__} and "
                         f"{type(target).__name__}")
    if predicted.shape != target.shape or predicted.ndim < 3:
        raise ValueError(f"{what} needs two tensors of one shape [..., C, H, W], got {tuple(predicted.shape)} and "
                         f"{tuple(target.shape)}")


def psnr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB of each frame, pixels in [0, 1] (peak 1).

    Args:
        predicted, target: `[..., C, H, W]` of one shape.

    Returns:
        float64 `[...]`: `10 log10(1 / MSE)` per frame, capped at `PSNR_CAP_DB` (MSE <= 1e-10, e.g. identical
        frames).
    """
    _check_pair(predicted, target, "psnr")
    mse = ((predicted.double() - target.double()) ** 2).mean(dim=(-3, -2, -1))
    return 10 * torch.log10(1 / mse.clamp_min(10 ** (-PSNR_CAP_DB / 10)))


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """float64 `[size]` normalised 1-D Gaussian; the 2-D window is its outer product with itself."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    return line / line.sum()


def _gaussian_blur(images: torch.Tensor, line: torch.Tensor) -> torch.Tensor:
    """Local Gaussian means of `[B, 1, H, W]` images at every window position inside them ("valid"): the 2-D
    window `line x line` applied as two 1-D passes, columns then rows."""
    return F.conv2d(F.conv2d(images, line.view(1, 1, -1, 1)), line.view(1, 1, 1, -1))


def ssim(predicted: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, chunk_size: int = 256) -> torch.Tensor:
    """Structural similarity of each frame (Wang et al. 2004), pixels in `[0, data_range]`.

    Local means, variances and covariance are Gaussian-weighted over an 11x11 window (sigma 1.5; population,
    not sample, statistics); `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2` with `L = data_range`. The SSIM map is taken
    at every window position that fits inside the frame (a "valid" convolution: no padding) and averaged, then
    averaged over channels. This is scikit-image's `structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)`, which filters with edge padding and then crops the
    5 border pixels its padding touched.

    Args:
        predicted, target: `[..., C, H, W]` of one shape, with `H, W >= 11`.
        chunk_size: frames (times channels) filtered at once, bounding the memory of the float64 filtering.

    Returns:
        float64 `[...]`: SSIM in `[-1, 1]` per frame (1 for identical frames).
    """
    _check_pair(predicted, target, "ssim")
    height, width = predicted.shape[-2:]
    if min(height, width) < SSIM_WINDOW_SIZE:
        raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW_SIZE}x{SSIM_WINDOW_SIZE} pixels (its "
                         f"window), got {height}x{width}")
    leading = predicted.shape[:-2]  # [..., C]
    line = gaussian_window().to(predicted.device)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    means = []
    predicted, target = predicted.reshape(-1, 1, height, width), target.reshape(-1, 1, height, width)
    for start in range(0, predicted.shape[0], chunk_size):
        x = predicted[start : start + chunk_size].double()
        y = target[start : start + chunk_size].double()
        mean_x, mean_y = _gaussian_blur(x, line), _gaussian_blur(y, line)
        variance_x = _gaussian_blur(x * x, line) - mean_x**2
        variance_y = _gaussian_blur(y * y, line) - mean_y**2
        covariance = _gaussian_blur(x * y, line) - mean_x * mean_y
        ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
            (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2))
        means.append(ssim_map.mean(dim=(-3, -2, -1)))
    return torch.cat(means).reshape(leading).mean(dim=-1)


def prediction_scores(predicted: torch.Tensor, target: torch.Tensor) -> dict:
    """PSNR and SSIM of predicted frames against the truth, both `[N, T', C, H, W]` in [0, 1].

    Returns:
        `{"psnr", "ssim"}` (means over videos and frames), `{"psnr_per_frame", "ssim_per_frame"}` (lists of
        `T'`, means over videos) and `num_videos`.
    """
    if predicted.ndim != 5:
        raise ValueError(f"prediction_scores takes videos [N, T, C, H, W], got {tuple(predicted.shape)}")
    frame_psnr, frame_ssim = psnr(predicted, target), ssim(predicted, target)  # [N, T']
    return {"psnr": float(frame_psnr.mean()), "ssim": float(frame_ssim.mean()),
            "psnr_per_frame": frame_psnr.mean(dim=0).tolist(), "ssim_per_frame": frame_ssim.mean(dim=0).tolist(),
            "num_videos": int(predicted.shape[0])}


# ---------------------------------------------------------------------------------------------
# Temporal consistency
# ---------------------------------------------------------------------------------------------


def frame_difference(videos: torch.Tensor) -> float:
    """Mean absolute difference between consecutive frames of `[N, T, C, H, W]` videos in [0, 1] (T >= 2):
    averaged over pixels, the `T - 1` frame pairs and the videos. 0 for static videos."""
    if not isinstance(videos, torch.Tensor) or videos.ndim != 5 or videos.shape[1] < 2:
        raise ValueError(f"frame_difference takes videos [N, T >= 2, C, H, W], got "
                         f"{getattr(videos, 'shape', type(videos).__name__)}")
    return float((videos[:, 1:].double() - videos[:, :-1].double()).abs().mean())


def majority_labels(frame_predictions: torch.Tensor, num_labels: int) -> torch.Tensor:
    """The most frequent class among each video's frame predictions `[N, T]` -> `[N]`; ties go to the smallest id."""
    counts = F.one_hot(frame_predictions.long(), num_labels).sum(dim=1)  # [N, num_labels]
    return counts.argmax(dim=-1)  # argmax returns the first maximum


def label_consistency(frame_predictions: torch.Tensor, num_labels: int) -> float:
    """Mean over videos of the fraction of frames whose predicted class is the video's majority class
    ([`majority_labels`]); `frame_predictions` `[N, T]`. 1 when every video keeps one class, `>= 1 / T`."""
    if not isinstance(frame_predictions, torch.Tensor) or frame_predictions.ndim != 2 or 0 in frame_predictions.shape:
        raise ValueError(f"frame_predictions must be a non-empty [N, T] tensor of class ids, got "
                         f"{getattr(frame_predictions, 'shape', type(frame_predictions).__name__)}")
    majority = majority_labels(frame_predictions, num_labels)
    return float((frame_predictions == majority[:, None]).double().mean())


# ---------------------------------------------------------------------------------------------
# Classifier scores of videos
# ---------------------------------------------------------------------------------------------


def classify_video_frames(classifier: MGNTFeatureClassifier, videos: torch.Tensor, batch_size: int = 500,
                          device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Classifier features and predictions of every frame of `videos` `[N, T, C, H, W]` in [0, 1].

    Returns:
        `(features, predictions)`: float32 `[N * T, feature_size]` (video-major) and int64 `[N, T]`, on the CPU.
    """
    num_videos, num_frames = videos.shape[:2]
    features, predictions = [], []
    videos_per_batch = max(1, batch_size // num_frames)
    for start in range(0, num_videos, videos_per_batch):
        pixels = videos[start : start + videos_per_batch].flatten(0, 1) * 2 - 1  # [B * T, C, H, W] in [-1, 1]
        batch_features, logits = classifier_outputs(classifier, pixels, batch_size, device)
        features.append(batch_features)
        predictions.append(logits.argmax(dim=-1).view(-1, num_frames))
    return torch.cat(features), torch.cat(predictions)


def video_classifier_scores(features: torch.Tensor, predictions: torch.Tensor, videos: torch.Tensor,
                            labels: torch.Tensor | None, reference: FeatureStatistics, num_labels: int) -> dict:
    """Per-frame classifier FID, per-frame and per-video accuracy (None without labels), label consistency and
    frame difference of one set of videos `[N, T, C, H, W]`, from its classifier outputs
    ([`classify_video_frames`])."""
    majority = majority_labels(predictions, num_labels)
    return {
        "classifier_fid": frechet_distance(features, reference),
        "frame_accuracy": None if labels is None else float((predictions == labels[:, None]).double().mean()),
        "video_accuracy": None if labels is None else float((majority == labels).double().mean()),
        "label_consistency": label_consistency(predictions, num_labels),
        "frame_difference": frame_difference(videos),
        "num_videos": int(videos.shape[0]),
        "num_frames": int(videos.shape[0] * videos.shape[1]),
    }


# ---------------------------------------------------------------------------------------------
# FVD
# ---------------------------------------------------------------------------------------------


def load_i3d(path: str | os.PathLike, device=None) -> torch.jit.ScriptModule:
    """The TorchScript I3D of FVD (e.g. StyleGAN-V's `i3d_torchscript.pt`), in eval mode. `torch.jit.load` runs
    the file's code: only load files you trust."""
    if not Path(path).is_file():
        raise OSError(f"I3D TorchScript file not found: {os.fspath(path)}")
    return torch.jit.load(os.fspath(path), map_location=device).eval()


@torch.no_grad()
def i3d_features(detector, videos: torch.Tensor, batch_size: int = 8, device=None,
                 resolution: int = I3D_RESOLUTION) -> torch.Tensor:
    """FVD features of `videos` `[N, T, C, H, W]` in [0, 1] (C = 1 or 3) -> float64 `[N, D]` on the CPU.

    The detector is StyleGAN-V's `i3d_torchscript.pt` (a Kinetics-400 I3D), and the assumed input convention is
    that of the widely used `common_metrics_on_video_quality` code that runs it (`fvd/styleganv/fvd.py`):
    grayscale is repeated to RGB; each frame is resized (bilinear, `align_corners=False`) so that its shorter
    side is `resolution` (224) and centre-cropped to `resolution x resolution`; pixels in [0, 1] are mapped to
    [-1, 1]; the batch is laid out `[B, 3, T, 224, 224]` float32; and the detector is called as
    `detector(x, rescale=False, resize=False, return_features=True)` (its own rescaling and resizing off, as the
    input is already in [-1, 1] at 224), returning the 400-d pre-softmax features `[B, 400]`. Any TorchScript
    module with that call signature works. FVD values depend on this preprocessing: compare them only with
    numbers computed the same way.
    """
    features = []
    for start in range(0, videos.shape[0], batch_size):
        batch = videos[start : start + batch_size].to(device).float()  # [B, T, C, H, W]
        if batch.shape[2] == 1:
            batch = batch.expand(-1, -1, 3, -1, -1)
        num_videos, num_frames, channels, height, width = batch.shape
        scale = resolution / min(height, width)
        size = (max(resolution, math.ceil(height * scale)), max(resolution, math.ceil(width * scale)))
        frames = F.interpolate(batch.reshape(-1, channels, height, width), size=size, mode="bilinear",
                               align_corners=False)
        top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
        frames = frames[..., top : top + resolution, left : left + resolution]
        clips = frames.reshape(num_videos, num_frames, channels, resolution, resolution).permute(0, 2, 1, 3, 4)
        output = detector(clips.contiguous() * 2 - 1, rescale=False, resize=False, return_features=True)
        features.append(output.detach().to("cpu", torch.float64).reshape(num_videos, -1))
    return torch.cat(features)


def frechet_video_distance(detector, videos_a: torch.Tensor, videos_b: torch.Tensor | FeatureStatistics,
                           batch_size: int = 8, device=None) -> float:
    """FVD: the Fréchet distance between the I3D features ([`i3d_features`]) of two video sets `[N, T, C, H, W]` in
    [0, 1] (N >= 2 each; `videos_b` may be precomputed [`FeatureStatistics`])."""
    features_a = i3d_features(detector, videos_a, batch_size, device)
    if not isinstance(videos_b, FeatureStatistics):
        videos_b = i3d_features(detector, videos_b, batch_size, device)
    return frechet_distance(features_a, videos_b)
