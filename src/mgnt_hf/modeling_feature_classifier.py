"""[`MGNTFeatureClassifier`]: a small CNN whose penultimate features define the classifier FID of
`mgnt_hf.evaluation` and whose logits define class accuracy.

A Fashion-MNIST one is trained by `training/train_classifier.py` and shipped in `pipelines/fashion-mnist-classifier/`
(`mgnt_hf.shipped("fashion-mnist-classifier")`); a per-frame one for Moving Fashion-MNIST videos in
`pipelines/moving-fashion-mnist-frame-classifier/`. Its input is pixels `float32 [B, C, H, W]` in `[-1, 1]` at
exactly `config.image_size`; other sizes are refused, not resized (see `mgnt_hf.evaluation.pad_pixels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_feature_classifier import MGNTFeatureClassifierConfig
from .weights import SafetensorsOnlyMixin


@dataclass
class MGNTFeatureClassifierOutput(ModelOutput):
    """Output of [`MGNTFeatureClassifier.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy against `labels`, when they are given.
        logits (`torch.FloatTensor` of shape `[B, num_labels]`):
            Class scores before softmax.
        features (`torch.FloatTensor` of shape `[B, feature_size]`):
            Penultimate activations: the feature space of the classifier FID.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    features: torch.FloatTensor | None = None


class MGNTConvStage(nn.Module):
    """Two `3x3 conv -> BatchNorm -> ReLU`, then a 2x2 max-pool: `[B, C_in, H, W] -> [B, C_out, H/2, W/2]`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(out_channels)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.norm1(self.conv1(hidden_states)))
        hidden_states = F.relu(self.norm2(self.conv2(hidden_states)))
        return F.max_pool2d(hidden_states, 2)


class MGNTFeatureClassifierPreTrainedModel(SafetensorsOnlyMixin, PreTrainedModel):
    config_class = MGNTFeatureClassifierConfig
    base_model_prefix = "classifier"
    main_input_name = "pixel_values"
    input_modalities = ("image",)

    def _init_weights(self, module):
        super()._init_weights(module)
        # The generic N(0, 0.02) init starves a ReLU CNN; He init keeps activations at unit scale.
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                init.zeros_(module.bias)


class MGNTFeatureClassifier(MGNTFeatureClassifierPreTrainedModel):
    """CNN classifier of `[B, C, image_size, image_size]` pixels in `[-1, 1]`, exposing its penultimate features.

    Layout: `len(conv_channels)` stages (see [`MGNTConvStage`]) -> flatten -> `Linear -> BatchNorm1d
    -> ReLU` (the features, `[B, feature_size]`) -> dropout -> `Linear` (the logits, `[B, num_labels]`).
    """

    def __init__(self, config: MGNTFeatureClassifierConfig):
        super().__init__(config)
        channels = (config.num_channels, *config.conv_channels)
        self.stages = nn.ModuleList(MGNTConvStage(c_in, c_out) for c_in, c_out in zip(channels[:-1], channels[1:]))
        final_size = config.image_size // 2 ** len(config.conv_channels)
        self.feature_projection = nn.Linear(channels[-1] * final_size * final_size, config.feature_size, bias=False)
        self.feature_norm = nn.BatchNorm1d(config.feature_size)
        self.dropout = nn.Dropout(config.dropout_prob)
        self.classifier = nn.Linear(config.feature_size, config.num_labels)
        self.post_init()

    def check_pixels(self, pixel_values: torch.Tensor) -> None:
        """Raise `ValueError` unless `pixel_values` is a float tensor `[B, num_channels, image_size, image_size]`."""
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be a float tensor [B, {', '.join(map(str, expected))}] in [-1, 1], got "
                f"{type(pixel_values).__name__}{'' if not isinstance(pixel_values, torch.Tensor) else ' ' + str(pixel_values.dtype)}"
            )
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected or pixel_values.shape[0] == 0:
            hint = ""
            if pixel_values.ndim == 4 and max(pixel_values.shape[-2:]) < config.image_size:
                hint = f" (smaller images: pad them with mgnt_hf.evaluation.pad_pixels(pixels, {config.image_size}))"
            raise ValueError(
                f"pixel_values must have shape [B, {', '.join(map(str, expected))}] with B >= 1, got "
                f"{tuple(pixel_values.shape)}{hint}"
            )

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Penultimate activations `[B, feature_size]` of pixels `[B, C, H, W]` in `[-1, 1]`."""
        self.check_pixels(pixel_values)
        hidden_states = pixel_values.to(self.feature_projection.weight.dtype)
        for stage in self.stages:
            hidden_states = stage(hidden_states)
        return F.relu(self.feature_norm(self.feature_projection(hidden_states.flatten(1))))

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> MGNTFeatureClassifierOutput:
        """
        Args:
            pixel_values (`torch.FloatTensor` of shape `[B, num_channels, image_size, image_size]`):
                Images in `[-1, 1]`.
            labels (`torch.LongTensor` of shape `[B]`, *optional*):
                Class ids in `[0, num_labels)`; when given, `loss` is their cross-entropy.
        """
        features = self.features(pixel_values)
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
        return MGNTFeatureClassifierOutput(loss=loss, logits=logits, features=features)


# Registered where both classes exist, so every way of importing them (a name from `mgnt_hf`, this module, a saved
# pipeline's model_index.json) lets AutoConfig/AutoModel load saved "mgnt_feature_classifier" models.
AutoConfig.register("mgnt_feature_classifier", MGNTFeatureClassifierConfig, exist_ok=True)
AutoModel.register(MGNTFeatureClassifierConfig, MGNTFeatureClassifier, exist_ok=True)
