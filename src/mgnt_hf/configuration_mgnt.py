"""MGNT (MaGNeTS nested transformer) configuration."""

from __future__ import annotations

import math
import numbers

from transformers import PretrainedConfig

# How far `fraction * hidden_size` may be from an integer and still name that width (float fractions such as
# 0.125 or 1/3 of a hidden size divisible by 3 are not exact).
WIDTH_FRACTION_TOLERANCE = 1e-6
# "joint": a table per (h, w) position (+ one per latent frame); "factorized": row + column (+ frame) tables.
POSITION_EMBEDDING_TYPES = ("joint", "factorized")


class MGNTConfig(PretrainedConfig):
    r"""
    Configuration of [`MGNTTransformer`], the bidirectional masked-token transformer of MaGNeTS whose
    leading slices along the model dimension are themselves complete, smaller transformers.

    Args:
        codebook_size (`int`, defaults to 1024):
            Number of codes of the VQ tokenizer. Token ids are in `[0, codebook_size)`; the id
            `codebook_size` is the mask token.
        num_classes (`int`, *optional*):
            Number of class labels. The class table has `num_classes + 1` rows; the last row is the
            null class used for classifier-free guidance. Default: the number of `id2label` names when they are
            given, else 1000.
        token_grid (`tuple[int, ...]`, defaults to `(16, 16)`):
            Shape of the token grid: `(h, w)` for images, `(t, h, w)` for video.
        position_embedding_type (`str`, defaults to `"joint"`):
            How the learned position embedding of grid token `(t, i, j)` is built. `"joint"`: one table row per
            spatial position `(i, j)` (`position_embeddings`, `[h * w, D]`), plus a row per latent frame `t`
            for video (`temporal_position_embeddings`, `[t, D]`). `"factorized"`: the sum of a row, a column and
            (video) a frame table (`row_position_embeddings` `[h, D]`, `column_position_embeddings` `[w, D]`,
            `temporal_position_embeddings`): fewer parameters, and every position shares what is learnt of its
            row and column. Checkpoints saved before this field existed are `"joint"`.
        hidden_size (`int`, defaults to 768):
            Width `D` of the full model.
        num_hidden_layers (`int`, defaults to 12):
            Number of transformer layers (shared by every nested width).
        num_attention_heads (`int`, defaults to 16):
            Heads of the full model. `head_dim = hidden_size / num_attention_heads` is the same at
            every width; the model of width `w` uses the first `w / head_dim` heads.
        intermediate_size (`int`, defaults to 3072):
            MLP units of the full model; the model of width `w` uses `intermediate_size * w / hidden_size`.
        nested_widths (`tuple[int, ...]`, defaults to `(96, 192, 384, 768)`):
            Widths of the nested sub-models, ascending, the last equal to `hidden_size`, each a
            multiple of `head_dim`.
        class_dropout_prob (`float`, defaults to 0.1):
            Probability of replacing the class label by the null class during training.
        hidden_dropout_prob (`float`, defaults to 0.0):
            Dropout on the residual branches during training.
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of weights and embeddings.
        id2label (`dict[int, str]`, *optional*):
            Class names, used by the pipeline to accept labels by name (`LABEL_<i>` when not given).
            transformers' `num_labels` is always `num_classes`: a constructor given both with different values
            raises `ValueError`; assigning `config.num_labels = n` (or `from_pretrained(..., num_labels=n)`) sets
            `num_classes = n` too, with placeholder names when the count changes (the class table then has another
            size: load the weights with `ignore_mismatched_sizes=True` to fine-tune on new classes).

    Example:

    ```python
    >>> from mgnt_hf import MGNTConfig, MGNTTransformer
    >>> config = MGNTConfig(hidden_size=256, num_attention_heads=8, intermediate_size=1024,
    ...                     num_hidden_layers=4, nested_widths=(32, 64, 128, 256))
    >>> model = MGNTTransformer(config)
    ```
    """

    model_type = "mgnt"

    codebook_size: int = 1024
    num_classes: int | None = None
    token_grid: tuple[int, ...] | list[int] = (16, 16)
    position_embedding_type: str = "joint"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 16
    intermediate_size: int = 3072
    nested_widths: tuple[int, ...] | list[int] | None = (96, 192, 384, 768)
    class_dropout_prob: float = 0.1
    hidden_dropout_prob: float = 0.0
    layer_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if self.num_classes is None:
            self.num_classes = len(self.id2label) if self.id2label else 1000
        # JSON gives lists back; the config always holds tuples.
        self.token_grid = tuple(int(size) for size in self.token_grid)
        if self.nested_widths is None:
            self.nested_widths = (self.hidden_size,)
        self.nested_widths = tuple(int(width) for width in self.nested_widths)
        self._validate_mgnt_fields()
        self._check_num_labels(kwargs.get("num_labels"))
        if self.id2label is None:
            # transformers would otherwise default to two placeholder labels; name every class instead.
            self.id2label = {index: f"LABEL_{index}" for index in range(self.num_classes)}
            self.label2id = {name: index for index, name in self.id2label.items()}
        super().__post_init__(**kwargs)

    def _check_num_labels(self, num_labels: int | None) -> None:
        if num_labels is not None and num_labels != self.num_classes:
            raise ValueError(
                f"MGNTConfig.num_labels ({num_labels}) must equal num_classes ({self.num_classes}): the labels are the "
                "class labels; set num_classes (and id2label) instead"
            )

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        # `from_pretrained(..., num_labels=n)` is transformers' way of asking for another label set: it overrides
        # the stored class count (and the stored names when their number no longer fits) instead of conflicting.
        num_labels = kwargs.get("num_labels")
        if num_labels is not None and "num_classes" not in kwargs and num_labels != config_dict.get("num_classes"):
            kwargs = {key: value for key, value in kwargs.items() if key != "num_labels"}
            config_dict = {key: value for key, value in config_dict.items() if key not in ("id2label", "label2id")}
            config_dict["num_classes"] = num_labels
        return super().from_dict(config_dict, **kwargs)

    @property
    def num_labels(self) -> int | None:
        """The number of class labels, `num_classes` (transformers' name for it); setting it sets `num_classes`."""
        return PretrainedConfig.num_labels.fget(self)

    @num_labels.setter
    def num_labels(self, num_labels: int) -> None:
        # transformers' idiom for a new label set (`config.num_labels = n`, `from_pretrained(..., num_labels=n)`)
        # resizes the class table: keep the two names of the one count together.
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"MGNTConfig.num_labels must be a positive integer, got {num_labels!r}")
        self.num_classes = num_labels
        PretrainedConfig.num_labels.fset(self, num_labels)

    def _validate_mgnt_fields(self):
        for name in ("codebook_size", "num_classes", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MGNTConfig.{name} must be a positive integer, got {value!r}")
        if len(self.token_grid) not in (2, 3) or any(size < 1 for size in self.token_grid):
            raise ValueError(
                f"MGNTConfig.token_grid must have 2 (h, w) or 3 (t, h, w) positive entries, got {self.token_grid!r}"
            )
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(f"MGNTConfig.position_embedding_type must be one of {list(POSITION_EMBEDDING_TYPES)}, "
                             f"got {self.position_embedding_type!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"MGNTConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        head_dim = self.hidden_size // self.num_attention_heads
        widths = self.nested_widths
        if not widths or list(widths) != sorted(set(widths)):
            raise ValueError(f"MGNTConfig.nested_widths must be strictly ascending and non-empty, got {widths!r}")
        if widths[-1] != self.hidden_size:
            raise ValueError(
                f"MGNTConfig.nested_widths must end with hidden_size ({self.hidden_size}), got {widths!r}"
            )
        for width in widths:
            if width < head_dim or width % head_dim:
                raise ValueError(
                    f"MGNTConfig.nested_widths entry {width} is not a positive multiple of head_dim ({head_dim}); "
                    f"allowed: {[head_dim * k for k in range(1, self.num_attention_heads + 1)]}"
                )
            if (self.intermediate_size * width) % self.hidden_size:
                raise ValueError(
                    f"MGNTConfig.nested_widths entry {width} gives a fractional MLP size "
                    f"(intermediate_size * {width} / hidden_size = {self.intermediate_size * width / self.hidden_size})"
                )
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"MGNTConfig.layer_norm_eps must be a finite number > 0 (it keeps LayerNorm from dividing "
                             f"by zero), got {eps!r}")
        if not 0.0 <= float(self.class_dropout_prob) < 1.0:
            raise ValueError(f"MGNTConfig.class_dropout_prob must be in [0, 1), got {self.class_dropout_prob!r}")
        if not 0.0 <= float(self.hidden_dropout_prob) < 1.0:
            raise ValueError(f"MGNTConfig.hidden_dropout_prob must be in [0, 1), got {self.hidden_dropout_prob!r}")
        if self.id2label is not None and len(self.id2label) != self.num_classes:
            raise ValueError(
                f"MGNTConfig.id2label has {len(self.id2label)} entries but num_classes is {self.num_classes}"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_grid_tokens(self) -> int:
        return math.prod(self.token_grid)

    @property
    def mask_token_id(self) -> int:
        return self.codebook_size

    @property
    def null_class_id(self) -> int:
        return self.num_classes

    def intermediate_size_at(self, width: int) -> int:
        """MLP units of the nested model of width `width`."""
        return self.intermediate_size * width // self.hidden_size

    def heads_at(self, width: int) -> int:
        """Attention heads of the nested model of width `width`."""
        return width // self.head_dim

    def width_at(self, fraction: float) -> int:
        """The nested width (channels) of width fraction `fraction` of `hidden_size`.

        `fraction * hidden_size` must be within `WIDTH_FRACTION_TOLERANCE` of one of `nested_widths`, else
        `ValueError` (its message lists the allowed fractions).
        """
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not math.isfinite(fraction):
            raise ValueError(f"width fraction must be a finite number, got {fraction!r}")
        width = fraction * self.hidden_size
        if abs(width - round(width)) > WIDTH_FRACTION_TOLERANCE or round(width) not in self.nested_widths:
            raise ValueError(
                f"width fraction {fraction} gives width {width:g} for hidden_size {self.hidden_size}, which is not "
                f"one of nested_widths {list(self.nested_widths)}; allowed fractions: "
                f"{[nested / self.hidden_size for nested in self.nested_widths]}"
            )
        return round(width)

    def fraction_of(self, width: int) -> float:
        """The width fraction `width / hidden_size` of nested width `width` (`ValueError` if it is not nested)."""
        if width is None:
            raise ValueError(f"width None is not one of nested_widths {list(self.nested_widths)}")
        return self.check_width(width) / self.hidden_size

    def check_width(self, width: int | None) -> int:
        """Return `width` (the full width for `None`), or raise `ValueError` if it is not nested."""
        if width is None:
            return self.hidden_size
        if isinstance(width, bool) or not isinstance(width, int) or width not in self.nested_widths:
            raise ValueError(f"width {width!r} is not one of nested_widths {list(self.nested_widths)}")
        return width

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MGNTConfig":
        """An ImageNet-256-shaped preset (see `PRESETS`: `S`, `B`, `L`, `XL`) with nested widths D/8, D/4, D/2, D.

        16x16 tokens, 1024 codes, 1000 classes; any field is overridden by keyword. The nested widths follow an
        overridden `hidden_size` unless `nested_widths` is given too.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown transformer preset {name!r}; allowed: {sorted(PRESETS)}")
        fields = dict(codebook_size=1024, num_classes=1000, token_grid=(16, 16), **PRESETS[name])
        hidden_size = overrides.get("hidden_size", fields["hidden_size"])
        fields["nested_widths"] = tuple(hidden_size // k for k in (8, 4, 2, 1))
        return cls(**{**fields, **overrides})


PRESETS = {
    # ImageNet-256-shaped presets (16x16 tokens, 1024 codes, 1000 classes), 4 nested widths D/8..D.
    "S": dict(hidden_size=512, num_hidden_layers=8, num_attention_heads=8, intermediate_size=2048),
    "B": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=16, intermediate_size=3072),
    "L": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "XL": dict(hidden_size=1280, num_hidden_layers=28, num_attention_heads=16, intermediate_size=5120),
}

