"""The shipped video pipeline (pipelines/mgnt-moving-fashion-mnist) loads offline, generates and predicts frames."""

from pathlib import Path

import numpy as np
import torch

from mgnt_hf import MGNTVideoPipeline
from mgnt_hf.data import FASHION_MNIST_CLASSES

FOLDER = Path(__file__).resolve().parents[1] / "pipelines" / "mgnt-moving-fashion-mnist"


def test_the_video_pipeline_fits_the_size_budget_and_holds_only_safetensors_and_json():
    files = [path for path in FOLDER.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 25 * 10**6
    assert {path.suffix for path in files} <= {".json", ".safetensors", ".md"}


def test_the_video_pipeline_generates_and_predicts_with_fewer_flops_than_maskgit():
    pipe = MGNTVideoPipeline.from_pretrained(FOLDER)
    pipe.set_progress_bar_config(disable=True)
    config = pipe.transformer.config
    assert config.token_grid == pipe.vqvae.config.token_grid == (4, 16, 16)
    assert config.position_embedding_type == "factorized" and config.codebook_size == 512
    assert [config.id2label[i] for i in range(10)] == list(FASHION_MNIST_CLASSES)
    output = pipe(["sneaker", "bag"], generator=torch.Generator().manual_seed(0))
    assert output.frames.shape == (2, 16, 64, 64, 1)
    assert np.isfinite(output.frames).all() and output.frames.std() > 0.05
    baseline = pipe([0], width_schedule="maskgit", use_cache=False, output_type="latent")
    assert baseline.gflops_per_video / output.gflops_per_video >= 3.3  # 3.32x measured (docs/video_f4_transformer_run5_results.md)

    context = output.frames[:1, :4]  # [1, 4, 64, 64, 1]
    predicted = pipe(None, context_frames=context, output_type="latent", generator=torch.Generator().manual_seed(1))
    context_ids = pipe.vqvae.encode(torch.from_numpy(context).permute(0, 4, 1, 2, 3) * 2 - 1)
    assert torch.equal(predicted.frames[:, :1], context_ids)


def test_the_shipped_tokenizer_is_causal_in_time():
    vqvae = MGNTVideoPipeline.from_pretrained(FOLDER).vqvae.eval()
    clip = torch.rand(1, 1, 16, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        codes = vqvae.encode(clip)
        assert codes.shape == (1, 4, 16, 16)
        assert torch.equal(vqvae.encode(clip[:, :, :4]), codes[:, :1])  # the first 4 frames alone: latent frame 0
        assert torch.equal(vqvae.encode(clip[:, :, :8]), codes[:, :2])
        assert vqvae.decode(codes).shape == (1, 1, 16, 64, 64)
