"""MGNT VQ tokenizer: pixels <-> token grids (VQGAN-style, without attention).

Encoder: `conv_in`, one level per channel multiplier (`num_res_blocks` residual blocks, then a
stride-2 convolution except at the last level), a middle residual block, `GroupNorm -> SiLU ->
conv` to `embedding_dim` channels. Quantizer: nearest codebook entry per grid position (squared
Euclidean distance, or cosine with `normalize_codes`), straight-through gradients, the VQ-VAE
codebook and commitment losses, running code usage and dead-code restart. Decoder: the mirror
image, with nearest-neighbour upsampling followed by a convolution.

Pixels are `[B, C, H, W]` in `[-1, 1]`; token ids are `[B, h, w]` with `(h, w) = (H, W) // f`.

Video mode (`config.num_frames` set): pixels `[B, C, T, H, W]`, ids `[B, t, h, w]` with
`t = T / temporal_downsample_factor`. The image levels run on every frame; temporal levels at the
coarsest resolution (causal convolutions over time, stride-2 between levels) mix and downsample
time; the decoder mirrors this. Normalisation in the temporal blocks is per frame, so the whole
encoder is causal in time (see `MGNTVQConfig`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_vq import MGNTVQConfig
from .weights import SafetensorsOnlyMixin


@dataclass
class MGNTVQQuantizerOutput(ModelOutput):
    """
    Args:
        quantized (`torch.FloatTensor` `[B, D, h, w]`): codebook vectors, with straight-through gradients
            to the encoder output in training.
        token_ids (`torch.LongTensor` `[B, h, w]`): index of the chosen codebook entry per position.
        codebook_loss (`torch.FloatTensor` scalar): `mean ||sg(z) - e||^2`, moves codes towards encoder outputs.
        commitment_loss (`torch.FloatTensor` scalar): `mean ||z - sg(e)||^2`, keeps the encoder near its codes.
        perplexity (`torch.FloatTensor` scalar): `exp(entropy)` of this batch's code histogram (all
            processes together in distributed training); `codebook_size` means uniform usage.
        codes_used_fraction (`torch.FloatTensor` scalar): fraction of codes used at least once in this batch.
        num_restarted_codes (`int`): dead codes replaced by encoder outputs in this call (training only).
    """

    quantized: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codes_used_fraction: torch.FloatTensor | None = None
    num_restarted_codes: int | None = None


@dataclass
class MGNTVQModelOutput(ModelOutput):
    """
    Args:
        loss (`torch.FloatTensor` scalar): `reconstruction_loss + codebook_loss + commitment_weight *
            commitment_loss`. Training scripts may combine the terms differently (L1, adversarial).
        reconstruction (`torch.FloatTensor` `[B, C, H, W]`): decoder output, *not* clamped, so that
            losses keep their gradients; `decode` clamps to `[-1, 1]`.
        token_ids (`torch.LongTensor` `[B, h, w]`): the image's tokens.
        reconstruction_loss (`torch.FloatTensor` scalar): mean squared error to `pixel_values`.
        codebook_loss, commitment_loss, perplexity, codes_used_fraction, num_restarted_codes: see
            [`MGNTVQQuantizerOutput`].
    """

    loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    token_ids: torch.LongTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    codebook_loss: torch.FloatTensor | None = None
    commitment_loss: torch.FloatTensor | None = None
    perplexity: torch.FloatTensor | None = None
    codes_used_fraction: torch.FloatTensor | None = None
    num_restarted_codes: int | None = None


class MGNTVQResidualBlock(GradientCheckpointingLayer):
    """`x + conv(SiLU(norm(conv(SiLU(norm(x))))))`, with a 1x1 convolution on the skip path when channels change."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=1e-6)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=1e-6)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.silu(self.norm1(hidden_states)))
        residual = self.conv2(F.silu(self.norm2(residual)))
        return self.skip(hidden_states) + residual


def frames_to_batch(hidden_states: torch.Tensor) -> torch.Tensor:
    """`[B, C, T, h, w]` -> `[B*T, C, h, w]` (frame-major within each video)."""
    batch, channels, frames, height, width = hidden_states.shape
    return hidden_states.transpose(1, 2).reshape(batch * frames, channels, height, width)


def batch_to_frames(hidden_states: torch.Tensor, batch: int) -> torch.Tensor:
    """`[B*T, C, h, w]` -> `[B, C, T, h, w]` (inverse of `frames_to_batch`)."""
    _, channels, height, width = hidden_states.shape
    return hidden_states.view(batch, -1, channels, height, width).transpose(1, 2)


class MGNTVQCausalTemporalConv(nn.Module):
    """3-tap convolution over time of `[B, C, T, h, w]`, padded on the past side only: output frame `j` sees
    input frames `<= j` (stride 1) or `<= 2j + 1` (stride 2, i.e. within its own pair)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv3d(in_channels, out_channels, (3, 1, 1), stride=(stride, 1, 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(hidden_states, (0, 0, 0, 0, 3 - self.stride, 0)))


class MGNTVQTemporalResidualBlock(GradientCheckpointingLayer):
    """`x + tconv(SiLU(norm(tconv(SiLU(norm(x))))))` over `[B, C, T, h, w]` with causal temporal convolutions.

    GroupNorm runs per frame: statistics over time would let a frame see its future."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, channels, eps=1e-6)
        self.conv1 = MGNTVQCausalTemporalConv(channels, channels)
        self.norm2 = nn.GroupNorm(num_groups, channels, eps=1e-6)
        self.conv2 = MGNTVQCausalTemporalConv(channels, channels)

    @staticmethod
    def _frame_norm(norm: nn.GroupNorm, hidden_states: torch.Tensor) -> torch.Tensor:
        return batch_to_frames(norm(frames_to_batch(hidden_states)), hidden_states.shape[0])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.silu(self._frame_norm(self.norm1, hidden_states)))
        residual = self.conv2(F.silu(self._frame_norm(self.norm2, residual)))
        return hidden_states + residual


class MGNTVQTemporalEncoder(nn.Module):
    """`[B, C, T, h, w]` -> `[B, C, T / temporal_downsample_factor, h, w]`: `log2(factor) + 1` levels of causal
    temporal residual blocks, a stride-2 causal convolution between consecutive levels."""

    def __init__(self, config: MGNTVQConfig):
        super().__init__()
        channels, groups = config.level_channels[-1], config.norm_num_groups
        num_levels = config.temporal_downsample_factor.bit_length()  # log2(factor) + 1
        self.levels = nn.ModuleList(
            nn.ModuleList(MGNTVQTemporalResidualBlock(channels, groups) for _ in range(config.num_temporal_res_blocks))
            for _ in range(num_levels))
        self.downsamples = nn.ModuleList(
            MGNTVQCausalTemporalConv(channels, channels, stride=2) for _ in range(num_levels - 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                hidden_states = block(hidden_states)
            if level < len(self.downsamples):
                hidden_states = self.downsamples[level](hidden_states)
        return hidden_states


class MGNTVQTemporalDecoder(nn.Module):
    """`[B, C, t, h, w]` -> `[B, C, t * temporal_downsample_factor, h, w]`: the mirror of `MGNTVQTemporalEncoder`,
    with nearest-neighbour x2 upsampling in time followed by a causal temporal convolution between levels."""

    def __init__(self, config: MGNTVQConfig):
        super().__init__()
        channels, groups = config.level_channels[-1], config.norm_num_groups
        num_levels = config.temporal_downsample_factor.bit_length()
        self.levels = nn.ModuleList(
            nn.ModuleList(MGNTVQTemporalResidualBlock(channels, groups) for _ in range(config.num_temporal_res_blocks))
            for _ in range(num_levels))
        self.upsamples = nn.ModuleList(MGNTVQCausalTemporalConv(channels, channels) for _ in range(num_levels - 1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                hidden_states = block(hidden_states)
            if level < len(self.upsamples):
                hidden_states = self.upsamples[level](hidden_states.repeat_interleave(2, dim=2))
        return hidden_states


class MGNTVQEncoder(nn.Module):
    """`[B, C, H, W]` pixels -> `[B, embedding_dim, H/f, W/f]` continuous latents (video: `[B, C, T, H, W]` ->
    `[B, embedding_dim, T/ft, H/f, W/f]`)."""

    def __init__(self, config: MGNTVQConfig):
        super().__init__()
        channels = config.level_channels
        groups = config.norm_num_groups
        self.conv_in = nn.Conv2d(config.num_channels, channels[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        in_channels = channels[0]
        for level, out_channels in enumerate(channels):
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(MGNTVQResidualBlock(in_channels, out_channels, groups))
                in_channels = out_channels
            self.levels.append(nn.ModuleList(blocks))
            if level < len(channels) - 1:
                self.downsamples.append(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1))
        self.temporal = MGNTVQTemporalEncoder(config) if config.is_video else None
        self.mid_block = MGNTVQResidualBlock(channels[-1], channels[-1], groups)
        self.norm_out = nn.GroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[-1], config.embedding_dim, 3, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch = pixel_values.shape[0]
        video = pixel_values.dim() == 5
        hidden_states = self.conv_in(frames_to_batch(pixel_values) if video else pixel_values)
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                hidden_states = block(hidden_states)
            if level < len(self.downsamples):
                hidden_states = self.downsamples[level](hidden_states)
        if video:
            hidden_states = frames_to_batch(self.temporal(batch_to_frames(hidden_states, batch)))
        hidden_states = self.mid_block(hidden_states)
        latents = self.conv_out(F.silu(self.norm_out(hidden_states)))
        return batch_to_frames(latents, batch) if video else latents


class MGNTVQUpsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution (no checkerboard artefacts)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(hidden_states, scale_factor=2.0, mode="nearest"))


class MGNTVQDecoder(nn.Module):
    """`[B, embedding_dim, h, w]` quantised latents -> `[B, C, h*f, w*f]` pixels (unclamped); video:
    `[B, embedding_dim, t, h, w]` -> `[B, C, t*ft, h*f, w*f]`."""

    def __init__(self, config: MGNTVQConfig):
        super().__init__()
        channels = config.level_channels
        groups = config.norm_num_groups
        self.conv_in = nn.Conv2d(config.embedding_dim, channels[-1], 3, padding=1)
        self.mid_block = MGNTVQResidualBlock(channels[-1], channels[-1], groups)
        self.temporal = MGNTVQTemporalDecoder(config) if config.is_video else None
        # Levels from the coarsest to the finest; every level but the finest ends with an upsampling.
        self.levels = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        in_channels = channels[-1]
        for level in reversed(range(len(channels))):
            out_channels = channels[level]
            blocks = []
            for _ in range(config.num_res_blocks):
                blocks.append(MGNTVQResidualBlock(in_channels, out_channels, groups))
                in_channels = out_channels
            self.levels.append(nn.ModuleList(blocks))
            if level > 0:
                self.upsamples.append(MGNTVQUpsample(out_channels))
        self.norm_out = nn.GroupNorm(groups, channels[0], eps=1e-6)
        self.conv_out = nn.Conv2d(channels[0], config.num_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch = latents.shape[0]
        video = latents.dim() == 5
        hidden_states = self.mid_block(self.conv_in(frames_to_batch(latents) if video else latents))
        if video:
            hidden_states = frames_to_batch(self.temporal(batch_to_frames(hidden_states, batch)))
        for level, blocks in enumerate(self.levels):
            for block in blocks:
                hidden_states = block(hidden_states)
            if level < len(self.upsamples):
                hidden_states = self.upsamples[level](hidden_states)
        pixels = self.conv_out(F.silu(self.norm_out(hidden_states)))
        return batch_to_frames(pixels, batch) if video else pixels


class MGNTVQQuantizer(nn.Module):
    """Nearest-neighbour vector quantiser with straight-through gradients, usage statistics and dead-code restart.

    `code_usage` is a persistent buffer (saved with the model and in training checkpoints): the running
    share of tokens assigned to each code, summed over processes in distributed training so that every
    process restarts the same codes with the same vectors. `codebook_initialized` (persistent too) records
    that the codebook was set from the first training batch's encoder outputs.
    """

    def __init__(self, config: MGNTVQConfig):
        super().__init__()
        self.codebook_size = config.codebook_size
        self.normalize_codes = config.normalize_codes
        self.restart_dead_codes = config.restart_dead_codes
        self.usage_decay = config.usage_decay
        self.dead_code_threshold = config.dead_code_threshold
        self.codebook = nn.Embedding(config.codebook_size, config.embedding_dim)
        self.register_buffer("code_usage", torch.full((config.codebook_size,), 1.0 / config.codebook_size))
        # 0 until the first training batch has set the codebook to encoder outputs (see forward).
        self.register_buffer("codebook_initialized", torch.zeros(()))

    def codebook_vectors(self) -> torch.Tensor:
        """`[K, D]` codebook in the space the search runs in (unit vectors with `normalize_codes`)."""
        codes = self.codebook.weight
        return F.normalize(codes, dim=-1) if self.normalize_codes else codes

    def _flatten(self, latents: torch.Tensor) -> torch.Tensor:
        flat = latents.movedim(1, -1).reshape(-1, latents.shape[1])  # [B*(t*)h*w, D]
        return F.normalize(flat, dim=-1) if self.normalize_codes else flat

    @torch.no_grad()
    def nearest_codes(self, latents: torch.Tensor) -> torch.LongTensor:
        """`[B, D, h, w]` (or `[B, D, t, h, w]`) latents -> `[B, h, w]` (`[B, t, h, w]`) ids of the nearest codes
        (searched in float32)."""
        # Autocast off: bfloat16 distances would tie or swap near neighbours.
        with torch.autocast(device_type=latents.device.type, enabled=False):
            flat = self._flatten(latents.float())
            codes = self.codebook_vectors().float()
            # ||z||^2 is the same for every code, so argmin ||z - e||^2 = argmin (||e||^2 - 2 z.e).
            distances = (codes * codes).sum(dim=1)[None, :] - 2.0 * flat @ codes.t()  # [B*h*w, K]
        return distances.argmin(dim=1).view(latents.shape[0], *latents.shape[2:])

    def lookup(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """`[B, h, w]` (or `[B, t, h, w]`) ids -> `[B, D, h, w]` (`[B, D, t, h, w]`) codebook vectors."""
        return F.embedding(token_ids, self.codebook_vectors()).movedim(-1, 1).contiguous()

    @staticmethod
    def _sample_latents(flat_latents: torch.Tensor, count: int) -> torch.Tensor:
        """`count` rows of `[N, D]` latents drawn with replacement, plus a little noise so that repeated
        picks differ; process 0's draw is broadcast so that every replica gets the same vectors."""
        picks = torch.randint(0, flat_latents.shape[0], (count,), device=flat_latents.device)
        samples = flat_latents[picks].float()
        samples = samples + 1e-3 * samples.std() * torch.randn_like(samples)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(samples, src=0)
        return samples

    @torch.no_grad()
    def _initialize_from_data(self, flat_latents: torch.Tensor) -> None:
        # A random initial codebook sits far from the encoder's outputs, so a handful of codes win every
        # search and the rest never move (collapse). Starting from the data avoids that.
        self.codebook.weight.data.copy_(self._sample_latents(flat_latents, self.codebook_size))
        self.codebook_initialized.fill_(1.0)

    @torch.no_grad()
    def _update_usage_and_restart(self, flat_latents: torch.Tensor, counts: torch.Tensor) -> int:
        """Update the running usage from `counts [K]` (already summed over processes); restart dead codes."""
        share = counts / counts.sum().clamp(min=1.0)
        self.code_usage.mul_(self.usage_decay).add_(share.to(self.code_usage.dtype), alpha=1.0 - self.usage_decay)
        if not self.restart_dead_codes:
            return 0
        dead = (self.code_usage < self.dead_code_threshold / self.codebook_size).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        # New codes are encoder outputs of this batch.
        replacements = self._sample_latents(flat_latents, dead.numel())
        self.codebook.weight.data[dead] = replacements.to(self.codebook.weight.dtype)
        # A restarted code gets the uniform share back, i.e. time to be picked before it counts as dead again.
        self.code_usage[dead] = 1.0 / self.codebook_size
        return int(dead.numel())

    def forward(self, latents: torch.Tensor) -> MGNTVQQuantizerOutput:
        """`[B, D, h, w]` (or `[B, D, t, h, w]`) encoder latents -> quantised latents, ids, losses and usage statistics.

        In training, the first call sets the codebook to encoder outputs of its batch (`codebook_initialized`).
        """
        if self.training and not bool(self.codebook_initialized):
            self._initialize_from_data(self._flatten(latents.detach()))
        token_ids = self.nearest_codes(latents)
        counts = torch.bincount(token_ids.flatten(), minlength=self.codebook_size).float()
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if distributed and self.training:
            dist.all_reduce(counts)
        num_restarted = 0
        if self.training:
            # Before the codebook enters the autograd graph: an in-place change afterwards would break backward.
            num_restarted = self._update_usage_and_restart(self._flatten(latents.detach()), counts)

        if self.normalize_codes:
            latents = F.normalize(latents, dim=1)
        quantized = self.lookup(token_ids).to(latents.dtype)
        codebook_loss = F.mse_loss(quantized.float(), latents.detach().float())
        commitment_loss = F.mse_loss(latents.float(), quantized.detach().float())
        quantized = latents + (quantized - latents).detach()  # straight-through estimator

        probabilities = counts / counts.sum().clamp(min=1.0)
        entropy = -(probabilities * torch.log(probabilities.clamp(min=1e-12))).sum()
        return MGNTVQQuantizerOutput(
            quantized=quantized,
            token_ids=token_ids,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=torch.exp(entropy),
            codes_used_fraction=(counts > 0).float().mean(),
            num_restarted_codes=num_restarted,
        )


class MGNTVQPreTrainedModel(SafetensorsOnlyMixin, PreTrainedModel):
    config_class = MGNTVQConfig
    config: MGNTVQConfig
    # (tensor name pattern, config field, the field's value a saved shape means), as in `MGNTPreTrainedModel`.
    config_fields_of_weights = (
        (r"quantizer\.(codebook\.weight|code_usage)", "codebook_size", lambda shape: shape[0]),
        (r"quantizer\.codebook\.weight", "embedding_dim", lambda shape: shape[1]),
        (r"encoder\.conv_in\.weight", "num_channels", lambda shape: shape[1]),
    )
    base_model_prefix = "mgnt_vq"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    supports_gradient_checkpointing = True
    _no_split_modules = ["MGNTVQResidualBlock", "MGNTVQTemporalResidualBlock", "MGNTVQQuantizer"]

    def _init_weights(self, module):
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            # PyTorch's default convolution initialisation (Kaiming-uniform): GroupNorm-ed conv stacks train
            # well from it, while the transformers default (normal, std 0.02) starves 3x3 convs of signal.
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MGNTVQQuantizer):
            bound = 1.0 / module.codebook_size
            init.uniform_(module.codebook.weight, -bound, bound)
            init.constant_(module.code_usage, 1.0 / module.codebook_size)
            init.zeros_(module.codebook_initialized)
        elif isinstance(module, nn.Embedding):
            pass  # the codebook, initialised with its quantizer above
        else:
            super()._init_weights(module)


class MGNTVQModel(MGNTVQPreTrainedModel):
    """The MaGNeTS image and video tokenizer.

    `encode(pixels [B, C, H, W] in [-1, 1]) -> ids [B, h, w]`, `decode(ids) -> pixels in [-1, 1]`; a video
    tokenizer (`config.num_frames` set) maps `[B, C, T, H, W]` to `[B, T/ft, h, w]` and back,
    `forward(pixels)` -> reconstruction, ids and loss terms for training. Images must have
    `config.num_channels` channels and sides divisible by `config.downsample_factor` (any such size
    works: the network is fully convolutional; `config.resolution` is the size it was trained at).
    """

    def __init__(self, config: MGNTVQConfig):
        super().__init__(config)
        self.encoder = MGNTVQEncoder(config)
        self.quantizer = MGNTVQQuantizer(config)
        self.decoder = MGNTVQDecoder(config)
        self.post_init()

    def _expected_pixels(self) -> str:
        config = self.config
        height, width = config.resolution
        if config.is_video:
            return (f"[B, {config.num_channels}, T, H, W] with T a multiple of {config.temporal_downsample_factor} "
                    f"(temporal_downsample_factor) and H, W multiples of {config.downsample_factor}; trained at "
                    f"[B, {config.num_channels}, {config.num_frames}, {height}, {width}]")
        return (f"[B, {config.num_channels}, H, W] with H, W multiples of {config.downsample_factor}; trained at "
                f"[B, {config.num_channels}, {height}, {width}]")

    def _check_pixels(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        ndim, layout = (5, "[B, C, T, H, W]") if config.is_video else (4, "[B, C, H, W]")
        if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point() \
                or pixel_values.dim() != ndim:
            raise ValueError(
                f"pixel_values must be a float tensor {layout}, got "
                f"{getattr(pixel_values, 'dtype', type(pixel_values).__name__)} "
                f"{list(getattr(pixel_values, 'shape', []))}; expected {self._expected_pixels()}"
            )
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(
                f"pixel_values has {pixel_values.shape[1]} channels but this tokenizer takes "
                f"num_channels={config.num_channels}; expected {self._expected_pixels()}"
            )
        factor = config.downsample_factor
        height, width = pixel_values.shape[-2:]
        if height % factor or width % factor or height == 0 or width == 0:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the downsampling factor {factor}; "
                f"pad or resize to a multiple of {factor} (expected {self._expected_pixels()})"
            )
        if config.is_video:
            frames = pixel_values.shape[2]
            if frames == 0 or frames % config.temporal_downsample_factor:
                raise ValueError(f"{frames} frames is not a positive multiple of temporal_downsample_factor "
                                 f"{config.temporal_downsample_factor}; expected {self._expected_pixels()}")

    def encode_latents(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`[B, C, H, W]` pixels -> `[B, embedding_dim, H/f, W/f]` continuous (unquantised) latents; video:
        `[B, C, T, H, W]` -> `[B, embedding_dim, T/ft, H/f, W/f]`."""
        self._check_pixels(pixel_values)
        return self.encoder(pixel_values.to(self.dtype))

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """`[B, C, H, W]` pixels in `[-1, 1]` -> token ids `[B, H/f, W/f]` in `[0, codebook_size)`; video:
        `[B, C, T, H, W]` -> `[B, T/ft, H/f, W/f]`."""
        return self.quantizer.nearest_codes(self.encode_latents(pixel_values))

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """`[B, embedding_dim, (t,) h, w]` quantised latents -> `[B, C, (t*ft,) h*f, w*f]` unclamped pixels."""
        return self.decoder(quantized)

    @torch.no_grad()
    def decode(self, token_ids: torch.LongTensor) -> torch.Tensor:
        """Token ids `[B, h, w]` -> pixels `[B, C, h*f, w*f]` clamped to `[-1, 1]`; video: `[B, t, h, w]` ->
        `[B, C, t*ft, h*f, w*f]`."""
        ndim = 4 if self.config.is_video else 3
        if not isinstance(token_ids, torch.Tensor) or token_ids.dtype != torch.long or token_ids.dim() != ndim:
            expected = "[B, t, h, w]" if self.config.is_video else "[B, h, w]"
            raise ValueError(
                f"token_ids must be a LongTensor {expected}, got "
                f"{getattr(token_ids, 'dtype', type(token_ids).__name__)} {list(getattr(token_ids, 'shape', []))}"
            )
        if token_ids.numel() and bool(((token_ids < 0) | (token_ids >= self.config.codebook_size)).any()):
            raise ValueError(f"token_ids must be in [0, {self.config.codebook_size}) (codebook_size)")
        quantized = self.quantizer.lookup(token_ids.to(self.device)).to(self.dtype)
        return self.decode_latents(quantized).clamp(-1.0, 1.0)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool | None = None, **kwargs) -> MGNTVQModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` `[B, C, H, W]`, video `[B, C, T, H, W]`): in `[-1, 1]`.

        Returns:
            [`MGNTVQModelOutput`]: `reconstruction [B, C, H, W]` (unclamped), `token_ids [B, h, w]`, the
            loss terms and codebook usage. In training mode the running code usage is updated and dead
            codes are restarted.
        """
        if kwargs:
            raise ValueError(f"unexpected arguments to MGNTVQModel.forward: {sorted(kwargs)}")
        return_dict = self.config.return_dict if return_dict is None else return_dict
        latents = self.encode_latents(pixel_values)
        quantizer_output = self.quantizer(latents)
        reconstruction = self.decode_latents(quantizer_output.quantized)
        reconstruction_loss = F.mse_loss(reconstruction.float(), pixel_values.float())
        loss = reconstruction_loss + quantizer_output.codebook_loss \
            + self.config.commitment_weight * quantizer_output.commitment_loss
        output = MGNTVQModelOutput(
            loss=loss,
            reconstruction=reconstruction,
            token_ids=quantizer_output.token_ids,
            reconstruction_loss=reconstruction_loss,
            codebook_loss=quantizer_output.codebook_loss,
            commitment_loss=quantizer_output.commitment_loss,
            perplexity=quantizer_output.perplexity,
            codes_used_fraction=quantizer_output.codes_used_fraction,
            num_restarted_codes=quantizer_output.num_restarted_codes,
        )
        return output if return_dict else output.to_tuple()


# Registered where both classes exist, so every way of importing them (a name from `mgnt_hf`, this module, a saved
# pipeline's model_index.json) lets AutoConfig/AutoModel load saved "mgnt_vq" models.
AutoConfig.register("mgnt_vq", MGNTVQConfig, exist_ok=True)
AutoModel.register(MGNTVQConfig, MGNTVQModel, exist_ok=True)
