"""MGNT VQ tokenizer configuration."""

from __future__ import annotations

from transformers import PretrainedConfig

from .utils.checks import check_choice, check_finite_number, check_positive_int


class MGNTVQConfig(PretrainedConfig):
    r"""
    Configuration of [`MGNTVQModel`], the VQGAN-style image and video tokenizer of MaGNeTS: a
    convolutional encoder maps `[C, H, W]` pixels in `[-1, 1]` to an `[h, w]` grid of vectors, each
    replaced by its nearest codebook entry; a convolutional decoder maps the quantised grid back to pixels.

    Video mode (`num_frames` set): `[C, T, H, W]` clips -> `[t, h, w]` grids with
    `t = T / temporal_downsample_factor`. The network is factorised: the image encoder's levels run on
    every frame, then temporal levels (causal 3-tap convolutions over time, each but the last followed by
    a stride-2 causal convolution) mix and downsample time at the coarsest resolution; the decoder mirrors
    it. Causal in time means latent frame `j` depends only on frames `< (j + 1) * temporal_downsample_factor`,
    so encoding the first `K` frames alone gives exactly the first `K / temporal_downsample_factor` latent
    frames of the whole clip: frame prediction encodes its context once, consistently with training.

    The encoder has one level per entry of `channel_multipliers`; every level but the last halves the
    resolution, so the downsampling factor is `f = 2 ** (len(channel_multipliers) - 1)` and the token
    grid is `resolution // f`.

    Args:
        num_channels (`int`, defaults to 3):
            Image channels: 3 (RGB) or 1 (grayscale).
        resolution (`int` or `tuple[int, int]`, defaults to 256):
            Image size `(H, W)` the tokenizer is trained and used at (an int means square). Both sides
            must be divisible by the downsampling factor. It fixes `token_grid`, which a transformer
            trained on this tokenizer's ids must share.
        codebook_size (`int`, defaults to 1024):
            Number of codebook entries; token ids are in `[0, codebook_size)`.
        embedding_dim (`int`, defaults to 256):
            Dimension of each codebook entry (the encoder's output channels).
        base_channels (`int`, defaults to 128):
            Channels of the first encoder level; level `i` has `base_channels * channel_multipliers[i]`.
        channel_multipliers (`tuple[int, ...]`, defaults to `(1, 1, 2, 2, 4)`):
            Channel multiplier per level; `len - 1` downsamplings by 2.
        num_res_blocks (`int`, defaults to 2):
            Residual blocks per encoder level (the decoder has the same number per level).
        norm_num_groups (`int`, defaults to 32):
            Groups of every GroupNorm; must divide every level's channel count.
        commitment_weight (`float`, defaults to 0.25):
            Weight `beta` of the commitment loss `||z - sg(e)||^2` relative to the codebook loss
            `||sg(z) - e||^2` (VQ-VAE).
        normalize_codes (`bool`, defaults to `False`):
            L2-normalise encoder outputs and codebook entries before the nearest-neighbour search
            (cosine-similarity codebook, ViT-VQGAN); tends to use more of the codebook.
        restart_dead_codes (`bool`, defaults to `True`):
            In training, replace codes whose running usage falls below `dead_code_threshold` by
            randomly chosen encoder outputs of the current batch.
        usage_decay (`float`, defaults to 0.99):
            Decay of the running (exponential moving average) share of tokens assigned to each code.
        dead_code_threshold (`float`, defaults to 0.03):
            A code is dead when its running share is below `dead_code_threshold / codebook_size`, i.e.
            below this fraction of the uniform share.

        num_frames (`int`, *optional*):
            Frames per clip the tokenizer is trained at; `None` (default) makes an image tokenizer. Any
            multiple of `temporal_downsample_factor` can be encoded (fully convolutional in time too), but
            the transformer's token grid is fixed by this value.
        temporal_downsample_factor (`int`, defaults to 1):
            Frames per latent frame in video mode, a power of two dividing `num_frames` (1: no temporal
            downsampling, but the temporal blocks still mix neighbouring frames).
        num_temporal_res_blocks (`int`, defaults to 1):
            Causal temporal residual blocks per temporal level (video mode only).

    Example:

    ```python
    >>> from mgnt_hf import MGNTVQConfig, MGNTVQModel
    >>> config = MGNTVQConfig.from_preset("fashion-mnist")
    >>> config.token_grid, config.downsample_factor
    ((8, 8), 4)
    >>> model = MGNTVQModel(config)
    ```
    """

    model_type = "mgnt_vq"

    num_channels: int = 3
    resolution: int | tuple[int, int] | list[int] = 256
    codebook_size: int = 1024
    embedding_dim: int = 256
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] | list[int] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    norm_num_groups: int = 32
    commitment_weight: float = 0.25
    normalize_codes: bool = False
    restart_dead_codes: bool = True
    usage_decay: float = 0.99
    dead_code_threshold: float = 0.03
    num_frames: int | None = None
    temporal_downsample_factor: int = 1
    num_temporal_res_blocks: int = 1

    def __post_init__(self, **kwargs):
        # JSON gives lists back; the config always holds tuples.
        if isinstance(self.resolution, (list, tuple)):
            self.resolution = tuple(self.resolution)
        else:
            self.resolution = (self.resolution, self.resolution)
        self.channel_multipliers = tuple(self.channel_multipliers)
        self._validate_vq_fields()
        super().__post_init__(**kwargs)

    def _validate_vq_fields(self):
        # Integer fields are stored back as `int` (a numpy integer from a caller would not serialise to JSON).
        self.num_channels = check_choice("MGNTVQConfig.num_channels (1 grayscale, 3 RGB)",
                                         check_positive_int("MGNTVQConfig.num_channels", self.num_channels), (1, 3))
        for name in ("codebook_size", "embedding_dim", "base_channels", "num_res_blocks",
                     "norm_num_groups", "num_temporal_res_blocks"):
            setattr(self, name, check_positive_int(f"MGNTVQConfig.{name}", getattr(self, name)))
        if self.codebook_size < 2:
            raise ValueError(f"MGNTVQConfig.codebook_size must be at least 2, got {self.codebook_size}")
        if not self.channel_multipliers:
            raise ValueError("MGNTVQConfig.channel_multipliers must be a non-empty sequence of positive integers, "
                             "got ()")
        self.channel_multipliers = tuple(check_positive_int(f"MGNTVQConfig.channel_multipliers[{index}]", multiplier)
                                         for index, multiplier in enumerate(self.channel_multipliers))
        for channels in self.level_channels:
            if channels % self.norm_num_groups:
                raise ValueError(
                    f"MGNTVQConfig.norm_num_groups ({self.norm_num_groups}) must divide every level's channels "
                    f"{list(self.level_channels)} (base_channels * channel_multipliers)"
                )
        if len(self.resolution) != 2:
            raise ValueError(
                f"MGNTVQConfig.resolution must be a positive int or (H, W) of positive ints, got {self.resolution!r}"
            )
        self.resolution = tuple(check_positive_int(f"MGNTVQConfig.resolution[{index}]", size)
                                for index, size in enumerate(self.resolution))
        factor = self.downsample_factor
        if any(size % factor for size in self.resolution):
            raise ValueError(
                f"MGNTVQConfig.resolution {self.resolution} is not divisible by the downsampling factor {factor} "
                f"(2 ** (len(channel_multipliers) - 1) with channel_multipliers={self.channel_multipliers})"
            )
        check_finite_number("MGNTVQConfig.commitment_weight", self.commitment_weight, minimum=0)
        # usage_decay in (0, 1): 1 would freeze the running usage. dead_code_threshold in [0, 1): at 1 every code
        # used less than the uniform share would count as dead.
        if check_finite_number("MGNTVQConfig.usage_decay", self.usage_decay, minimum=0, maximum=1,
                               exclusive_minimum=True) == 1:
            raise ValueError(f"MGNTVQConfig.usage_decay must be in (0, 1), got {self.usage_decay!r}")
        if check_finite_number("MGNTVQConfig.dead_code_threshold", self.dead_code_threshold, minimum=0,
                               maximum=1) == 1:
            raise ValueError(f"MGNTVQConfig.dead_code_threshold must be in [0, 1), got {self.dead_code_threshold!r}")
        factor_t = self.temporal_downsample_factor = check_positive_int(
            "MGNTVQConfig.temporal_downsample_factor (a power of two)", self.temporal_downsample_factor)
        if factor_t & (factor_t - 1):
            raise ValueError(
                f"MGNTVQConfig.temporal_downsample_factor must be a power of two (1, 2, 4, ...), got {factor_t!r}")
        if self.num_frames is not None:
            self.num_frames = check_positive_int("MGNTVQConfig.num_frames (a positive multiple of "
                                                 "temporal_downsample_factor)", self.num_frames)
            if self.num_frames % factor_t:
                raise ValueError(
                    f"MGNTVQConfig.num_frames must be a positive multiple of temporal_downsample_factor ({factor_t}), "
                    f"got {self.num_frames!r}")
        elif factor_t != 1:
            raise ValueError(
                f"MGNTVQConfig.temporal_downsample_factor={factor_t} needs num_frames (video mode); "
                "image tokenizers have temporal_downsample_factor=1")

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of each encoder level, `base_channels * channel_multipliers[i]`."""
        return tuple(self.base_channels * multiplier for multiplier in self.channel_multipliers)

    @property
    def downsample_factor(self) -> int:
        """Pixels per token along each side, `f = 2 ** (len(channel_multipliers) - 1)`."""
        return 2 ** (len(self.channel_multipliers) - 1)

    @property
    def is_video(self) -> bool:
        """Whether this is a video tokenizer (`num_frames` set)."""
        return self.num_frames is not None

    @property
    def token_grid(self) -> tuple[int, ...]:
        """Token grid `(h, w) = resolution // f` of an image, or `(t, h, w)` of a `num_frames` clip in video mode."""
        spatial = tuple(size // self.downsample_factor for size in self.resolution)
        if self.is_video:
            return (self.num_frames // self.temporal_downsample_factor, *spatial)
        return spatial

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MGNTVQConfig":
        """A named configuration (see `VQ_PRESETS`), with any field overridden by keyword."""
        if name not in VQ_PRESETS:
            raise ValueError(f"unknown tokenizer preset {name!r}; allowed: {sorted(VQ_PRESETS)}")
        return cls(**{**VQ_PRESETS[name], **overrides})


VQ_PRESETS = {
    # MaskGIT's ImageNet tokenizer shape: 256px -> 16x16 tokens, 1024 codes (the config defaults).
    "imagenet-256": dict(),
    # Fashion-MNIST: 28x28 grayscale, padded to 32x32 by the data transform; f=4 -> 8x8 tokens. A small
    # network (32/64/128 channels at 32/16/8 px) with a 512-entry codebook: 64 tokens x 9 bits per image.
    # usage_decay 0.9: dead codes restart after ~35 steps, not ~350; on this data the codebook otherwise
    # settles on ~20 codes in the first steps (perplexity ~20 vs ~200 after 150 steps, measured on CPU).
    "fashion-mnist": dict(
        num_channels=1, resolution=32, codebook_size=512, embedding_dim=32, base_channels=32,
        channel_multipliers=(1, 2, 4), num_res_blocks=1, norm_num_groups=8, usage_decay=0.9,
    ),
    # Moving Fashion-MNIST (the video stand-in): 16 grayscale 64x64 frames -> 4x8x8 tokens (f=8 in space, 4 in
    # time), 512 codes. Narrow per-frame levels (16/32/64/64 channels at 64/32/16/8 px) keep CPU training
    # feasible: the per-frame convolutions at full resolution dominate the cost.
    "moving-fashion-mnist": dict(
        num_channels=1, resolution=64, codebook_size=512, embedding_dim=32, base_channels=16,
        channel_multipliers=(1, 2, 4, 4), num_res_blocks=1, norm_num_groups=8, usage_decay=0.9,
        num_frames=16, temporal_downsample_factor=4, num_temporal_res_blocks=1,
    ),
}
