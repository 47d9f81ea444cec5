"""Golden token grids: the shipped pipelines, fixed seeds, fixed settings -> exactly these token ids.

The fixture was written by this module's `__main__` from the pipelines as shipped; a refactor must leave
every grid bit-identical. The recorded SHA-256 of each transformer's weights tells a real behaviour change
(new weights shipped: regenerate with `python tests/test_golden_tokens.py`) from a broken decode; a deliberate
change of the sampling (its random stream) regenerates them too, in the same commit, saying so.
"""

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mgnt_hf import MGNTPipeline, MGNTVideoPipeline

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "golden_tokens.npz"
IMAGE_FOLDER = ROOT / "pipelines" / "mgnt-fashion-mnist"
VIDEO_FOLDER = ROOT / "pipelines" / "mgnt-moving-fashion-mnist"

# name -> (pipeline folder, call keyword arguments); every call uses output_type="latent" and seed 1234.
IMAGE_CASES = {
    "image_default": {},
    "image_maskgit_no_cache": {"width_schedule": "maskgit", "use_cache": False},
    "image_default_no_cache_8_steps": {"num_inference_steps": 8, "use_cache": False},
    "image_guidance_1": {"guidance_scale": 1.0},
}
VIDEO_CASES = {
    "video_default": {},
    "video_maskgit_no_cache": {"width_schedule": "maskgit", "use_cache": False},
    "video_prediction": {"context": True},
}


def weights_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / "transformer" / "model.safetensors").read_bytes()).hexdigest()


def image_tokens(pipe: MGNTPipeline, kwargs: dict) -> np.ndarray:
    generator = torch.Generator().manual_seed(1234)
    return pipe([0, 3, 7, 9], generator=generator, output_type="latent", **kwargs).images.numpy()


def video_tokens(pipe: MGNTVideoPipeline, kwargs: dict) -> np.ndarray:
    kwargs = dict(kwargs)
    generator = torch.Generator().manual_seed(1234)
    if kwargs.pop("context", False):
        config = pipe.vqvae.config
        context = torch.Generator().manual_seed(99)
        frames = torch.rand(2, config.temporal_downsample_factor, config.num_channels, *config.resolution,
                            generator=context)
        return pipe([1, 2], context_frames=frames, generator=generator, output_type="latent", **kwargs).frames.numpy()
    return pipe([0, 5], generator=generator, output_type="latent", **kwargs).frames.numpy()


def load(pipeline_class, folder: Path):
    pipe = pipeline_class.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def compute_all() -> dict[str, np.ndarray]:
    image = load(MGNTPipeline, IMAGE_FOLDER)
    video = load(MGNTVideoPipeline, VIDEO_FOLDER)
    grids = {name: image_tokens(image, kwargs) for name, kwargs in IMAGE_CASES.items()}
    grids.update({name: video_tokens(video, kwargs) for name, kwargs in VIDEO_CASES.items()})
    grids["image_weights_sha256"] = np.array(weights_sha256(IMAGE_FOLDER))
    grids["video_weights_sha256"] = np.array(weights_sha256(VIDEO_FOLDER))
    return grids


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURE) as data:
        return {name: data[name] for name in data.files}


def check_weights(golden, kind: str, folder: Path) -> None:
    if str(golden[f"{kind}_weights_sha256"]) != weights_sha256(folder):
        pytest.fail(f"{folder} holds new weights: regenerate the fixture with `python tests/test_golden_tokens.py`")


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_shipped_image_pipeline_gives_the_golden_token_grids(golden, name):
    check_weights(golden, "image", IMAGE_FOLDER)
    tokens = image_tokens(load(MGNTPipeline, IMAGE_FOLDER), IMAGE_CASES[name])
    np.testing.assert_array_equal(tokens, golden[name])


@pytest.mark.parametrize("name", sorted(VIDEO_CASES))
def test_shipped_video_pipeline_gives_the_golden_token_grids(golden, name):
    check_weights(golden, "video", VIDEO_FOLDER)
    tokens = video_tokens(load(MGNTVideoPipeline, VIDEO_FOLDER), VIDEO_CASES[name])
    np.testing.assert_array_equal(tokens, golden[name])


if __name__ == "__main__":
    np.savez_compressed(FIXTURE, **compute_all())
    print(f"wrote {FIXTURE}", file=sys.stderr)
