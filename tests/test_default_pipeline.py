"""The shipped default pipeline (pipelines/mgnt-fashion-mnist) loads offline and generates every class."""

from pathlib import Path

import numpy as np
import torch

from mgnt_hf import MGNTPipeline
from mgnt_hf.data import FASHION_MNIST_CLASSES

FOLDER = Path(__file__).resolve().parents[1] / "pipelines" / "mgnt-fashion-mnist"


def test_the_default_pipeline_fits_the_size_budget_and_holds_only_safetensors_and_json():
    files = [path for path in FOLDER.rglob("*") if path.is_file()]
    assert sum(path.stat().st_size for path in files) <= 25 * 10**6
    assert {path.suffix for path in files} <= {".json", ".safetensors", ".md"}


def test_the_default_pipeline_loads_in_float32_with_four_nested_widths_and_class_names():
    pipe = MGNTPipeline.from_pretrained(FOLDER)
    config = pipe.transformer.config
    assert pipe.transformer.dtype == torch.float32 and pipe.vqvae.dtype == torch.float32
    hidden = config.hidden_size
    assert config.nested_widths == (hidden // 8, hidden // 4, hidden // 2, hidden)
    assert [config.id2label[i] for i in range(10)] == list(FASHION_MNIST_CLASSES)
    assert config.token_grid == pipe.vqvae.config.token_grid == (8, 8)


def test_the_default_pipeline_generates_every_class_with_fewer_flops_than_maskgit():
    pipe = MGNTPipeline.from_pretrained(FOLDER)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(list(range(10)), generator=torch.Generator().manual_seed(0), output_type="np")
    assert output.images.shape == (10, 32, 32, 1)
    assert np.isfinite(output.images).all() and output.images.std() > 0.05
    baseline = pipe([0], width_schedule="maskgit", use_cache=False, output_type="latent")
    assert baseline.gflops_per_image / output.gflops_per_image >= 4
