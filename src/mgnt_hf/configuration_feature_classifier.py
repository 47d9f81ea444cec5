"""Configuration of [`MGNTFeatureClassifier`] (`modeling_feature_classifier.py`), the small CNN behind the
classifier FID and class accuracy of `mgnt_hf.evaluation`."""

from __future__ import annotations

from transformers import PretrainedConfig

from .data import FASHION_MNIST_CLASSES


class MGNTFeatureClassifierConfig(PretrainedConfig):
    r"""
    Configuration of [`MGNTFeatureClassifier`], the small CNN whose features define the project's
    classifier FID and whose predictions define class accuracy.

    Args:
        num_channels (`int`, defaults to 1):
            Image channels.
        image_size (`int`, defaults to 32):
            Height and width of the input, the only size the model accepts.
        conv_channels (`tuple[int, ...]`, defaults to `(32, 64, 128)`):
            Channels of each stage. A stage is two 3x3 convolutions with BatchNorm and ReLU, then a
            2x2 max-pool, so `image_size` must be divisible by `2 ** len(conv_channels)`.
        feature_size (`int`, defaults to 128):
            Size of the penultimate (feature) layer: `Linear -> BatchNorm -> ReLU` on the flattened
            last stage. These activations are the FID features.
        dropout_prob (`float`, defaults to 0.3):
            Dropout between the features and the output layer, during training only.
        id2label (`dict[int, str]`, *optional*):
            Class names; defaults to the 10 Fashion-MNIST classes.

    Example:

    ```python
    >>> from mgnt_hf import MGNTFeatureClassifierConfig, MGNTFeatureClassifier
    >>> model = MGNTFeatureClassifier(MGNTFeatureClassifierConfig(conv_channels=(8, 16), feature_size=32))
    ```
    """

    model_type = "mgnt_feature_classifier"

    num_channels: int = 1
    image_size: int = 32
    conv_channels: tuple[int, ...] | list[int] = (32, 64, 128)
    feature_size: int = 128
    dropout_prob: float = 0.3

    def __post_init__(self, **kwargs):
        self.conv_channels = tuple(int(channels) for channels in self.conv_channels)
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(FASHION_MNIST_CLASSES))
        super().__post_init__(**kwargs)
        if self.label2id is None:
            self.label2id = {label: index for index, label in self.id2label.items()}
        self._validate_classifier_fields()

    def _validate_classifier_fields(self):
        for name in ("num_channels", "image_size", "feature_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MGNTFeatureClassifierConfig.{name} must be a positive integer, got {value!r}")
        if not self.conv_channels or any(channels < 1 for channels in self.conv_channels):
            raise ValueError(
                f"MGNTFeatureClassifierConfig.conv_channels must be non-empty positive integers, got {self.conv_channels!r}"
            )
        downsampling = 2 ** len(self.conv_channels)
        if self.image_size % downsampling:
            raise ValueError(
                f"MGNTFeatureClassifierConfig.image_size ({self.image_size}) must be divisible by "
                f"2 ** len(conv_channels) = {downsampling}"
            )
        if not 0.0 <= float(self.dropout_prob) < 1.0:
            raise ValueError(f"MGNTFeatureClassifierConfig.dropout_prob must be in [0, 1), got {self.dropout_prob!r}")
        if self.num_labels < 2:
            raise ValueError(f"MGNTFeatureClassifierConfig needs at least 2 labels, got id2label={self.id2label!r}")

