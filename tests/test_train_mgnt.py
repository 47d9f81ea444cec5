"""training/train_mgnt.py end to end on the CPU: accelerate launch, resume, token cache, bad data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import make_tiny_vqvae
from mgnt_hf import MGNTPipeline

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training" / "train_mgnt.py"
CLASSES = ("Bag", "Coat", "Dress")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny image folder (3 classes x 8 RGB 16x16 images), a tiny tokenizer and a transformer config."""
    root = tmp_path_factory.mktemp("train_mgnt")
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for index in range(8):
            pixels = (rng.random((16, 16, 3)) * 60 + label * 90).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{index}.png")
    make_tiny_vqvae().save_pretrained(root / "vqvae")
    (root / "transformer.json").write_text(json.dumps(dict(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=8, intermediate_size=128,
        nested_widths=[8, 16, 32, 64])))
    return root


def train_arguments(workspace, output_dir, *extra):
    return ["--vqvae_name_or_path", str(workspace / "vqvae"), "--train_data_dir", str(workspace / "images"),
            "--transformer_config", str(workspace / "transformer.json"), "--output_dir", str(output_dir),
            "--token_cache_dir", str(workspace / "token-cache"), "--train_batch_size", "4",
            "--learning_rate", "1e-3", "--lr_warmup_steps", "2", "--report_to", "none", "--seed", "3", *extra]


def launch(num_processes, arguments, check=True):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), "--cpu",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def test_two_process_cpu_launch_writes_a_loadable_pipeline(workspace, tmp_path):
    output = tmp_path / "run"
    launch(2, train_arguments(workspace, output, "--max_train_steps", "4", "--checkpointing_steps", "2",
                              "--checkpoints_total_limit", "1", "--use_ema"))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-4"]
    assert not list(output.glob(".tmp-*"))
    pipeline = MGNTPipeline.from_pretrained(output)
    assert pipeline.transformer.config.id2label == dict(enumerate(CLASSES))
    assert pipeline.transformer.config.token_grid == pipeline.vqvae.config.token_grid
    pipeline.set_progress_bar_config(disable=True)
    images = pipeline(["coat", 0], num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                      output_type="np").images
    assert images.shape == (2, 16, 16, 3)


def test_resume_from_latest_continues_exactly_like_an_uninterrupted_run(workspace, tmp_path):
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    common = ("--max_train_steps", "8", "--checkpointing_steps", "4", "--use_ema")
    launch(1, train_arguments(workspace, uninterrupted, *common))
    # The resumed run starts from the uninterrupted run's step-4 checkpoint, as after a crash at step 5..7.
    resumed.mkdir()
    os.system(f"cp -r {uninterrupted / 'checkpoint-4'} {resumed / 'checkpoint-4'}")
    result = launch(1, train_arguments(workspace, resumed, *common, "--resume_from_checkpoint", "latest"))
    assert "at step 4" in result.stdout + result.stderr
    expected = load_file(uninterrupted / "checkpoint-8" / "model.safetensors")
    actual = load_file(resumed / "checkpoint-8" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    final_expected = load_file(uninterrupted / "transformer" / "model.safetensors")
    final_actual = load_file(resumed / "transformer" / "model.safetensors")
    for name in final_expected:  # EMA weights, also restored from the checkpoint
        torch.testing.assert_close(final_actual[name], final_expected[name], rtol=0, atol=0, msg=name)


def test_a_second_run_reuses_the_token_cache(workspace, tmp_path):
    first = launch(1, train_arguments(workspace, tmp_path / "a", "--max_train_steps", "1", "--token_cache_dir",
                                      str(tmp_path / "cache")))
    second = launch(1, train_arguments(workspace, tmp_path / "b", "--max_train_steps", "1", "--token_cache_dir",
                                       str(tmp_path / "cache")))
    assert "token cache miss" in first.stderr + first.stdout
    assert "token cache hit" in second.stderr + second.stdout
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 1
    flipped = launch(1, train_arguments(workspace, tmp_path / "c", "--max_train_steps", "1", "--token_cache_dir",
                                        str(tmp_path / "cache"), "--random_flip"))
    assert "token cache miss" in flipped.stderr + flipped.stdout  # another augmentation, another cache
    assert len(list((tmp_path / "cache").glob("tokens-*"))) == 2


def run_in_process(arguments):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_mgnt
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return train_mgnt.main(arguments)


def test_an_unreadable_image_is_refused_before_training(workspace, tmp_path):
    images = tmp_path / "images"
    os.system(f"cp -r {workspace / 'images'} {images}")
    (images / "Bag" / "broken.png").write_bytes(b"not a png")
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2")
    arguments[arguments.index("--train_data_dir") + 1] = str(images)
    with pytest.raises(ValueError, match="broken.png"):
        run_in_process(arguments)
    assert not list((tmp_path / "run").glob("checkpoint-*"))


def test_a_folder_without_class_subfolders_is_refused(workspace, tmp_path):
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "flat" / "a.png")
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2")
    arguments[arguments.index("--train_data_dir") + 1] = str(tmp_path / "flat")
    with pytest.raises(ValueError, match="no class subfolders"):
        run_in_process(arguments)


def test_a_missing_label_column_is_refused(workspace, tmp_path):
    import datasets

    data = datasets.Dataset.from_dict({"image": [Image.new("RGB", (16, 16))] * 4},
                                      features=datasets.Features({"image": datasets.Image()}))
    data.save_to_disk(str(tmp_path / "unlabelled"))
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2")
    index = arguments.index("--train_data_dir")
    arguments[index:index + 2] = ["--dataset_name", str(tmp_path / "unlabelled")]
    with pytest.raises(ValueError, match="label column 'label' not in the dataset"):
        run_in_process(arguments)


def test_a_width_schedule_the_model_cannot_run_is_refused_before_training(workspace, tmp_path):
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2", "--width_schedule",
                                "[[0.75, 6], [1.0, 6]]")
    with pytest.raises(ValueError, match="not one of nested_widths"):
        run_in_process(arguments)
    assert not (tmp_path / "run" / "token-cache").exists()


def test_a_config_that_disagrees_with_the_tokenizer_is_refused(workspace, tmp_path):
    (tmp_path / "wrong.json").write_text(json.dumps(dict(
        codebook_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        nested_widths=[8, 16, 32])))
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2")
    arguments[arguments.index("--transformer_config") + 1] = str(tmp_path / "wrong.json")
    with pytest.raises(ValueError, match="codebook_size=99"):
        run_in_process(arguments)


@pytest.mark.parametrize("extra, message", [
    (("--context_frames", "4"), "--context_frames need video data"),
    (("--frame_stride", "2"), "--frame_stride need video data"),
    (("--num_frames", "8"), "needs a video tokenizer"),
])
def test_video_flags_with_an_image_tokenizer_are_refused(workspace, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_in_process(train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2", *extra))
    assert not (tmp_path / "run" / "model_index.json").exists()
