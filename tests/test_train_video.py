"""Video training end to end on the CPU: the tokenizer script on a Moving Fashion-MNIST-like dataset, then the
transformer script with frame-prediction context, giving a loadable MGNTVideoPipeline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from mgnt_hf import MGNTVideoPipeline, MGNTVQConfig, MGNTVQModel

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("Bag", "Coat", "Dress")
TINY_VIDEO_VQ = dict(num_channels=1, resolution=16, codebook_size=16, embedding_dim=8, base_channels=8,
                     channel_multipliers=(1, 2, 2), num_res_blocks=1, norm_num_groups=4, num_frames=8,
                     temporal_downsample_factor=4)


def launch(script, arguments, check=True):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               str(REPO / "training" / script), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"{script} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """12 grayscale 8-frame 16x16 videos (a bright square moving right, its row set by the class), a tiny video
    tokenizer and a transformer config."""
    root = tmp_path_factory.mktemp("train_video")
    videos, labels = [], []
    for index in range(12):
        label = index % 3
        video = np.zeros((8, 16, 16), dtype=np.uint8)
        for frame in range(8):
            video[frame, label * 5:label * 5 + 4, frame:frame + 4] = 255
        videos.append(video)
        labels.append(label)
    features = datasets.Features({"video": datasets.Array3D(shape=(8, 16, 16), dtype="uint8"),
                                  "label": datasets.ClassLabel(names=list(CLASSES))})
    split = datasets.Dataset.from_dict({"video": videos, "label": labels}, features=features)
    datasets.DatasetDict({"train": split, "test": split.select(range(4))}).save_to_disk(str(root / "data"))
    torch.manual_seed(0)
    MGNTVQModel(MGNTVQConfig(**TINY_VIDEO_VQ)).save_pretrained(root / "vqvae")
    (root / "vq.json").write_text(json.dumps(TINY_VIDEO_VQ))
    (root / "transformer.json").write_text(json.dumps(dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=8, intermediate_size=64, nested_widths=[4, 8, 16, 32])))
    return root


def test_tokenizer_script_trains_a_video_tokenizer(workspace, tmp_path):
    output = tmp_path / "tokenizer"
    launch("train_tokenizer.py", ["--dataset_name", str(workspace / "data"), "--vq_config", str(workspace / "vq.json"),
                                  "--output_dir", str(output), "--train_batch_size", "4", "--max_train_steps", "3",
                                  "--validation_steps", "3", "--num_validation_images", "2", "--seed", "0"])
    model = MGNTVQModel.from_pretrained(output)
    assert model.config.is_video and model.config.token_grid == (2, 4, 4)
    assert (output / "validation" / "step-0000003.png").is_file()
    results = json.loads((output / "eval_results.json").read_text())
    assert results["num_images"] == 4 and results["reconstruction_mse"] > 0


def mgnt_arguments(workspace, output, *extra):
    return ["--vqvae_name_or_path", str(workspace / "vqvae"), "--dataset_name", str(workspace / "data"),
            "--transformer_config", str(workspace / "transformer.json"), "--output_dir", str(output),
            "--token_cache_dir", str(workspace / "token-cache"), "--train_batch_size", "4", "--learning_rate", "1e-3",
            "--lr_warmup_steps", "1", "--report_to", "none", "--seed", "0", *extra]


def test_video_transformer_training_with_context_gives_a_video_pipeline(workspace, tmp_path):
    output = tmp_path / "mgnt"
    launch("train_mgnt.py", mgnt_arguments(workspace, output, "--max_train_steps", "3", "--context_frames", "4",
                                           "--context_probability", "0.5", "--validation_steps", "3",
                                           "--validation_num_classes", "2"))
    assert (output / "validation" / "step-0000003.png").is_file()
    pipeline = MGNTVideoPipeline.from_pretrained(output)
    assert pipeline.transformer.config.token_grid == (2, 4, 4)
    assert pipeline.transformer.config.id2label == dict(enumerate(CLASSES))
    pipeline.set_progress_bar_config(disable=True)
    frames = pipeline(["coat", 0], num_inference_steps=4, generator=torch.Generator().manual_seed(0)).frames
    assert frames.shape == (2, 8, 16, 16, 1)
    context = np.zeros((1, 4, 16, 16, 1), dtype=np.float32)
    predicted = pipeline(None, context_frames=context, num_inference_steps=4, output_type="latent",
                         generator=torch.Generator().manual_seed(0)).frames
    context_ids = pipeline.vqvae.encode(torch.full((1, 1, 4, 16, 16), -1.0))
    assert torch.equal(predicted[:, :1], context_ids)


@pytest.mark.parametrize("extra, message", [
    (("--context_frames", "3"), "multiple of 4"),
    (("--context_frames", "8"), "below num_frames=8"),
    (("--num_frames", "6"), "multiple of temporal_downsample_factor"),
])
def test_bad_video_training_arguments_are_refused_before_training(workspace, tmp_path, extra, message):
    result = launch("train_mgnt.py", mgnt_arguments(workspace, tmp_path / "bad", "--max_train_steps", "1", *extra),
                    check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "bad" / "model_index.json").exists()


def test_tokenizer_training_continues_from_a_pretrained_tokenizer(workspace, tmp_path):
    output = tmp_path / "continued"
    # Learning rate 0: the saved weights come back unchanged only if training started from them.
    launch("train_tokenizer.py", ["--dataset_name", str(workspace / "data"),
                                  "--pretrained_vqvae_name_or_path", str(workspace / "vqvae"),
                                  "--output_dir", str(output), "--train_batch_size", "4", "--max_train_steps", "2",
                                  "--learning_rate", "0", "--validation_steps", "2", "--num_validation_images", "1",
                                  "--seed", "3"])
    pretrained, continued = MGNTVQModel.from_pretrained(workspace / "vqvae"), MGNTVQModel.from_pretrained(output)
    assert continued.config.to_diff_dict() == pretrained.config.to_diff_dict()
    encoder = {name: tensor for name, tensor in pretrained.state_dict().items() if name.startswith("encoder.")}
    assert encoder and all(torch.equal(continued.state_dict()[name], tensor) for name, tensor in encoder.items())


def test_a_pretrained_tokenizer_with_other_frames_is_refused(workspace, tmp_path):
    result = launch("train_tokenizer.py", ["--dataset_name", str(workspace / "data"),
                                           "--pretrained_vqvae_name_or_path", str(workspace / "vqvae"),
                                           "--num_frames", "4", "--output_dir", str(tmp_path / "bad"),
                                           "--max_train_steps", "1"], check=False)
    assert result.returncode != 0
    assert "--num_frames 4 differs from the pretrained tokenizer's 8" in result.stderr
    assert not (tmp_path / "bad" / "model.safetensors").exists()
