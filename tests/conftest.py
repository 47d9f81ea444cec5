"""Shared tiny, randomly initialised components: a 4-width MGNTTransformer, an MGNTVQModel with the same 4x4
token grid and 16 codes, an MGNTScheduler with its default (MaGNeTS) schedule, and the pipeline made of them.

Each fixture builds fresh objects from a fixed seed, so tests may modify them.
"""

import pytest
import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula, sdpa_flop_count

from mgnt_hf import MGNTConfig, MGNTPipeline, MGNTScheduler, MGNTTransformer, MGNTVQConfig, MGNTVQModel

# torch's FlopCounterMode has no formula for the CPU SDPA kernel (torch 2.13 registers only the CUDA ones); count
# it like every other SDPA kernel, so the analytic FLOP tests can compare against the counter on the CPU.
_CPU_SDPA = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
if _CPU_SDPA not in flop_registry:
    register_flop_formula(_CPU_SDPA)(lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))

# 4x4 tokens, 16 codes, 3 classes; widths D/8..D with head_dim 8, like the presets.
TINY_TRANSFORMER_CONFIG = dict(
    codebook_size=16, num_classes=3, token_grid=(4, 4), hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
    intermediate_size=128, nested_widths=(8, 16, 32, 64), id2label={0: "T-shirt/top", 1: "Trouser", 2: "Ankle boot"},
)
# 16x16 RGB images, downsampling x4 -> 4x4 tokens, 16 codes.
TINY_VQ_CONFIG = dict(
    num_channels=3, resolution=16, codebook_size=16, embedding_dim=8, base_channels=8, channel_multipliers=(1, 2, 2),
    num_res_blocks=1, norm_num_groups=4,
)


def make_tiny_transformer(seed: int = 0, **overrides) -> MGNTTransformer:
    torch.manual_seed(seed)
    return MGNTTransformer(MGNTConfig(**{**TINY_TRANSFORMER_CONFIG, **overrides})).eval()


def make_tiny_vqvae(seed: int = 0, **overrides) -> MGNTVQModel:
    torch.manual_seed(seed)
    return MGNTVQModel(MGNTVQConfig(**{**TINY_VQ_CONFIG, **overrides})).eval()


@pytest.fixture
def tiny_transformer() -> MGNTTransformer:
    return make_tiny_transformer()


@pytest.fixture
def tiny_vqvae() -> MGNTVQModel:
    return make_tiny_vqvae()


@pytest.fixture
def tiny_scheduler() -> MGNTScheduler:
    return MGNTScheduler()


@pytest.fixture
def tiny_pipeline(tiny_transformer, tiny_vqvae, tiny_scheduler) -> MGNTPipeline:
    pipe = MGNTPipeline(transformer=tiny_transformer, vqvae=tiny_vqvae, scheduler=tiny_scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ---------------------------------------------------------------- video

from mgnt_hf import MGNTVideoPipeline  # noqa: E402

# 2x4x4 tokens (t, h, w), 16 codes, 3 classes; the image fixture's widths so the default schedule applies.
TINY_VIDEO_TRANSFORMER_CONFIG = {**TINY_TRANSFORMER_CONFIG, "token_grid": (2, 4, 4)}
# 4-frame 16x16 grayscale clips, x2 in time and x4 in space -> 2x4x4 tokens, 16 codes.
TINY_VIDEO_VQ_CONFIG = {**TINY_VQ_CONFIG, "num_channels": 1, "num_frames": 4, "temporal_downsample_factor": 2}


def make_tiny_video_transformer(seed: int = 0, **overrides) -> MGNTTransformer:
    torch.manual_seed(seed)
    return MGNTTransformer(MGNTConfig(**{**TINY_VIDEO_TRANSFORMER_CONFIG, **overrides})).eval()


def make_tiny_video_vqvae(seed: int = 0, **overrides) -> MGNTVQModel:
    torch.manual_seed(seed)
    return MGNTVQModel(MGNTVQConfig(**{**TINY_VIDEO_VQ_CONFIG, **overrides})).eval()


@pytest.fixture
def tiny_video_pipeline() -> MGNTVideoPipeline:
    pipe = MGNTVideoPipeline(make_tiny_video_transformer(), make_tiny_video_vqvae(), MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe
