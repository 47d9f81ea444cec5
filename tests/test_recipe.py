"""training/recipes/fashion_mnist.sh and moving_fashion_mnist.sh: precision from the hardware, continuing from
saved weights, resuming.

A stand-in `accelerate` on PATH records each launch instead of training, so the test reads what the recipe runs."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from mgnt_hf.utils.hardware import default_mixed_precision

RECIPE = Path(__file__).resolve().parents[1] / "training" / "recipes" / "fashion_mnist.sh"
VIDEO_RECIPE = RECIPE.with_name("moving_fashion_mnist.sh")


def run_recipe(tmp_path, recipe=RECIPE, **env):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "launches.txt"
    fake = bin_dir / "accelerate"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "dataset_dict.json").write_text("{}")  # prepared already: the recipe must not rebuild it
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DATA": str(data),
                "RUN": str(tmp_path / "run"), **env}
    result = subprocess.run(["bash", str(recipe)], env=full_env, capture_output=True, text=True, check=True)
    return result.stdout, log.read_text().splitlines()


def test_the_recipe_chooses_the_precision_from_the_hardware_and_says_so(tmp_path):
    stdout, launches = run_recipe(tmp_path)
    expected, reason = default_mixed_precision()
    assert f"mixed precision: {expected} (chosen from the hardware: {reason})" in stdout
    assert len(launches) == 2  # tokenizer, then transformer
    assert all(f"--mixed_precision {expected}" in launch for launch in launches)
    assert all(("--cpu" in launch.split()) == (not torch.cuda.is_available()) for launch in launches)
    assert "train_tokenizer.py" in launches[0] and "train_mgnt.py" in launches[1]
    assert "--resume_from_checkpoint" not in launches[1]
    args = launches[1].split()
    assert args[args.index("--ema_decay") + 1] == "0.999" and "--ema_min_decay" not in args  # warm-up from scratch


@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_an_explicit_precision_wins(tmp_path, precision):
    stdout, launches = run_recipe(tmp_path, MIXED_PRECISION=precision)
    assert f"mixed precision: {precision} (set by MIXED_PRECISION" in stdout
    assert all(f"--mixed_precision {precision}" in launch for launch in launches)


def test_continuing_from_a_pipeline_keeps_its_tokenizer_and_resume_takes_the_latest_checkpoint(tmp_path):
    _, launches = run_recipe(tmp_path, CONTINUE_FROM="pipelines/mgnt-fashion-mnist", RESUME="1",
                             TRANSFORMER_LR="3e-4", TRANSFORMER_STEPS="250", EMA_DECAY="0.995")
    assert len(launches) == 1 and "train_mgnt.py" in launches[0]
    args = launches[0].split()
    assert args[args.index("--vqvae_name_or_path") + 1] == "pipelines/mgnt-fashion-mnist/vqvae"
    assert args[args.index("--pretrained_transformer_name_or_path") + 1] == "pipelines/mgnt-fashion-mnist/transformer"
    assert "--transformer_config" not in args
    assert args[args.index("--resume_from_checkpoint") + 1] == "latest"
    assert args[args.index("--learning_rate") + 1] == "3e-4" and args[args.index("--max_train_steps") + 1] == "250"
    # trained weights need no EMA warm-up: the average has the asked decay from the second step
    assert args[args.index("--ema_decay") + 1] == "0.995" and args[args.index("--ema_min_decay") + 1] == "0.995"


def test_the_video_recipe_chooses_the_tokenizer_precision_from_the_hardware(tmp_path):
    stdout, launches = run_recipe(tmp_path, recipe=VIDEO_RECIPE, ACCELERATE_ARGS="--cpu")
    expected, reason = default_mixed_precision()
    assert f"tokenizer mixed precision: {expected} (chosen from the hardware: {reason})" in stdout
    assert len(launches) == 2 and "train_tokenizer.py" in launches[0] and "train_mgnt.py" in launches[1]
    tokenizer_args, transformer_args = launches[0].split(), launches[1].split()
    assert tokenizer_args[tokenizer_args.index("--mixed_precision") + 1] == expected
    assert tokenizer_args[tokenizer_args.index("--vq_config") + 1] == "moving-fashion-mnist"
    assert transformer_args[transformer_args.index("--mixed_precision") + 1] == "no"
    assert "--resume_from_checkpoint" not in launches[0] + launches[1]
    assert "--max_train_seconds" not in launches[0] + launches[1]  # no cap unless asked


def test_the_video_recipe_continues_a_saved_tokenizer_and_can_stop_after_it(tmp_path):
    stdout, launches = run_recipe(tmp_path, recipe=VIDEO_RECIPE, TOKENIZER_FROM="pipelines/mgnt-moving-fashion-mnist/vqvae",
                                  TOKENIZER_ONLY="1", RESUME="1", TOKENIZER_LR="5e-4", MIXED_PRECISION="no",
                                  TOKENIZER_SECONDS="7200")
    assert "tokenizer mixed precision: no (set by MIXED_PRECISION" in stdout
    assert len(launches) == 1 and "train_tokenizer.py" in launches[0]
    args = launches[0].split()
    assert args[args.index("--pretrained_vqvae_name_or_path") + 1] == "pipelines/mgnt-moving-fashion-mnist/vqvae"
    assert "--vq_config" not in args
    assert args[args.index("--learning_rate") + 1] == "5e-4" and args[args.index("--mixed_precision") + 1] == "no"
    assert args[args.index("--resume_from_checkpoint") + 1] == "latest"
    assert args[args.index("--max_train_seconds") + 1] == "7200"


def test_the_video_recipe_trains_a_tokenizer_of_another_shape_and_refuses_it_with_a_continued_one(tmp_path):
    space4 = "training/ablations/video_tokenizer/space4.json"  # the shipped tokenizer's shape
    _, launches = run_recipe(tmp_path, recipe=VIDEO_RECIPE, VQ_CONFIG=space4, MIXED_PRECISION="no")
    args = launches[0].split()
    assert args[args.index("--vq_config") + 1] == space4 and "--pretrained_vqvae_name_or_path" not in args
    (tmp_path / "both").mkdir()
    with pytest.raises(subprocess.CalledProcessError) as refused:
        run_recipe(tmp_path / "both", recipe=VIDEO_RECIPE, VQ_CONFIG=space4,
                   TOKENIZER_FROM="pipelines/mgnt-moving-fashion-mnist/vqvae")
    assert refused.value.returncode == 2
    assert "a continued tokenizer keeps its own config" in refused.value.stderr
    assert not (tmp_path / "both" / "launches.txt").exists()  # refused before any launch
