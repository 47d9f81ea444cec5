"""training/train_mgnt.py end to end on the CPU: accelerate launch, resume, stopping, token cache, bad data."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import make_tiny_vqvae
from mgnt_hf import MGNTPipeline
from mgnt_hf.training_utils import NonFiniteLossError, list_checkpoints, resolve_resume_checkpoint
from training_helpers import reset_accelerate_state, run_launcher

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


def free_port():
    with socket.socket() as probe:  # other runs on this host may hold accelerate's default port 29500
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(num_processes, arguments):
    """`accelerate launch` of the script on the CPU. Several processes need torchrun (`--multi_gpu`) with
    ACCELERATE_USE_CPU (gloo): `--cpu --num_processes N` starts a single process."""
    options = ["--cpu"] if num_processes == 1 else ["--multi_gpu", "--main_process_port", str(free_port())]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes), *options,
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                   **({"ACCELERATE_USE_CPU": "true"} if num_processes > 1 else {})}
    return command, environment


def launch(num_processes, arguments, check=True):
    command, environment = launch_command(num_processes, arguments)
    result = run_launcher(command, env=environment, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def test_two_process_cpu_launch_writes_a_loadable_pipeline(workspace, tmp_path):
    output = tmp_path / "run"
    launch(2, train_arguments(workspace, output, "--max_train_steps", "4", "--checkpointing_steps", "2",
                              "--checkpoints_total_limit", "1", "--use_ema"))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-4"]
    # Two processes trained together: each saved its RNG state into the one checkpoint.
    assert sorted(p.name for p in (output / "checkpoint-4").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
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


def test_a_time_budget_stops_after_the_crossing_step_with_a_checkpoint_and_the_pipeline(workspace, tmp_path):
    output = tmp_path / "run"
    result = launch(1, train_arguments(workspace, output, "--max_train_steps", "6", "--checkpointing_steps", "4",
                                       "--max_train_seconds", "0"))
    assert "--max_train_seconds 0.0 reached at step 1" in result.stdout + result.stderr
    assert [step for step, _ in list_checkpoints(output)] == [1]
    assert MGNTPipeline.from_pretrained(output).transformer.config.token_grid == (4, 4)


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


def script_module():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import train_mgnt
    finally:
        sys.path.remove(str(SCRIPT.parent))
    return train_mgnt


def run_in_process(arguments):
    """`main(arguments)` in this process, with accelerate's process-wide state reset before and after."""
    reset_accelerate_state()
    try:
        return script_module().main(arguments)
    finally:
        reset_accelerate_state()


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


# ---------------------------------------------------------------------------------------------- losing nothing


def signal_at_batch(monkeypatch, signum, batch):
    """Deliver `signum` to this process while the data loader collates its `batch`-th batch (mid-training)."""
    script = script_module()
    collate, calls = script.collate_tokens, []

    def collate_and_signal(rows):
        calls.append(1)
        if len(calls) == batch:
            os.kill(os.getpid(), signum)
        return collate(rows)

    monkeypatch.setattr(script, "collate_tokens", collate_and_signal)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_finishes_the_step_saves_a_checkpoint_and_exits_with_its_status(workspace, tmp_path, monkeypatch,
                                                                                  caplog, signum, status):
    output = tmp_path / "run"
    signal_at_batch(monkeypatch, signum, batch=3)
    with pytest.raises(SystemExit) as stopped:
        run_in_process(train_arguments(workspace, output, "--max_train_steps", "50", "--checkpointing_steps", "100"))
    assert stopped.value.code == status
    [(step, checkpoint)] = list_checkpoints(output)  # saved although no checkpointing step was reached
    assert 1 <= step < 50
    assert json.loads((checkpoint / "training_state.json").read_text())["global_step"] == step
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl"} <= {
        p.name for p in checkpoint.iterdir()}
    assert not list(output.glob(".tmp-*"))
    assert not (output / "model_index.json").exists()  # a stopped run saves no final pipeline
    name = signal.Signals(signum).name
    assert (f"stopped by {name} at step {step}: saved {checkpoint} (complete). Resume by running the same command "
            "with --resume_from_checkpoint latest") in caplog.text


def test_resuming_from_an_earlier_checkpoint_sets_the_later_ones_aside(workspace, tmp_path, caplog):
    output = tmp_path / "run"
    run_in_process(train_arguments(workspace, output, "--max_train_steps", "6", "--checkpointing_steps", "2"))
    assert [step for step, _ in list_checkpoints(output)] == [2, 4, 6]
    # A new branch from step 2 (e.g. with another learning rate), stopped at step 3.
    run_in_process(train_arguments(workspace, output, "--max_train_steps", "3", "--checkpointing_steps", "2",
                                   "--resume_from_checkpoint", str(output / "checkpoint-2")))
    path, step = resolve_resume_checkpoint(output, "latest")
    assert (path.name, step) == ("checkpoint-3", 3)  # not checkpoint-6 of the abandoned run
    assert [step for step, _ in list_checkpoints(output)] == [2, 3]
    [abandoned] = output.glob("abandoned-*")
    assert sorted(p.name for p in abandoned.iterdir()) == ["checkpoint-4", "checkpoint-6"]
    assert f"moved checkpoint-4, checkpoint-6 (a run that went past step 2) to {abandoned}" in caplog.text


def test_a_diverging_run_keeps_no_checkpoint_of_the_diverged_weights(workspace, tmp_path):
    # The first update at learning rate 1e6 gives weights (checkpoint-1) whose loss at step 2 is NaN.
    output = tmp_path / "run"
    arguments = train_arguments(workspace, output, "--max_train_steps", "20", "--checkpointing_steps", "1",
                                "--lr_scheduler", "constant", "--max_grad_norm", "0")
    arguments[arguments.index("--learning_rate") + 1] = "1e6"
    arguments[arguments.index("--lr_warmup_steps") + 1] = "0"
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2: loss .*checkpoint-1, saved just "
                                                 r"before, was discarded: its weights gave this loss\. No checkpoint "
                                                 r"in .* is safe"):
        run_in_process(arguments)
    assert not list_checkpoints(output) and not list(output.glob(".tmp-*"))


def test_a_resolution_the_tokenizer_does_not_take_is_refused_before_tokenizing(workspace, tmp_path):
    arguments = train_arguments(workspace, tmp_path / "run", "--max_train_steps", "2", "--resolution", "32")
    arguments[arguments.index("--token_cache_dir") + 1] = str(tmp_path / "cache")
    with pytest.raises(ValueError, match=r"--resolution 32 does not match the tokenizer .* images of \(16, 16\)"):
        run_in_process(arguments)
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def ema_run(workspace, tmp_path_factory):
    """A finished 4-step run with EMA weights and checkpoints at steps 2 and 4."""
    output = tmp_path_factory.mktemp("ema_run") / "run"
    run_in_process(train_arguments(workspace, output, "--max_train_steps", "4", "--checkpointing_steps", "2",
                                   "--use_ema"))
    return output


def copy_of(run, tmp_path):
    shutil.copytree(run, tmp_path / "run")
    return tmp_path / "run"


def test_resuming_past_max_train_steps_is_refused(workspace, ema_run, tmp_path):
    output = copy_of(ema_run, tmp_path)
    with pytest.raises(ValueError, match=r"checkpoint-4 at step 4, past this run's last step 3 .* nothing to train"):
        run_in_process(train_arguments(workspace, output, "--max_train_steps", "3", "--use_ema",
                                       "--resume_from_checkpoint", "latest"))
    assert [step for step, _ in list_checkpoints(output)] == [2, 4]  # nothing moved


def test_resuming_with_the_other_ema_setting_is_refused(workspace, ema_run, tmp_path):
    output = copy_of(ema_run, tmp_path)
    # The EMA weights are safetensors; nothing in a checkpoint but accelerate's own state is a pickle.
    assert (output / "checkpoint-4" / "ema.safetensors").is_file()
    assert not list((output / "checkpoint-4").glob("custom_checkpoint_*"))
    with pytest.raises(ValueError, match="checkpoint-4 was saved with --use_ema but this run is without it"):
        run_in_process(train_arguments(workspace, output, "--max_train_steps", "6", "--resume_from_checkpoint",
                                       "latest"))
    (output / "checkpoint-4" / "ema.safetensors").unlink()  # what a run without --use_ema saves
    with pytest.raises(ValueError, match="checkpoint-4 was saved without --use_ema but this run is with it"):
        run_in_process(train_arguments(workspace, output, "--max_train_steps", "6", "--use_ema",
                                       "--resume_from_checkpoint", "latest"))


def rank_pid(output, rank, timeout=240):
    """The pid of the training process of `rank` writing to `output` (from /proc: its command line and RANK)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for entry in Path("/proc").iterdir():
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")
                environ = (entry / "environ").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            ours = str(SCRIPT).encode() in command and str(output).encode() in command
            if ours and f"RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.2)
    raise AssertionError(f"no training process of rank {rank} for {output}")


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the rank's process through /proc")
def test_a_signal_to_one_of_two_processes_stops_both_at_the_same_step(workspace, tmp_path):
    output = tmp_path / "run"
    command, environment = launch_command(2, train_arguments(workspace, output, "--max_train_steps", "1000",
                                                             "--checkpointing_steps", "2"))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        deadline = time.time() + 240
        while not list_checkpoints(output):  # training is under way
            assert process.poll() is None, process.communicate()[1][-5000:]
            assert time.time() < deadline
            time.sleep(0.2)
        os.kill(rank_pid(output, 1), signal.SIGTERM)  # the other process never gets a signal
        _, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    assert process.returncode != 0
    step, checkpoint = list_checkpoints(output)[-1]
    assert 2 <= step < 1000
    assert f"stopped by SIGTERM at step {step}: saved {checkpoint} (complete)" in stderr
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                              "random_states_1.pkl"]
    assert stderr.count("exitcode  : 143") == 2, stderr[-5000:]  # torchrun's report: both ranks exited 143


def saved_transformer_weights(run):
    return load_file(run / "transformer" / "model.safetensors")


def test_ema_min_decay_averages_with_the_requested_decay_from_the_second_step(workspace, tmp_path):
    """diffusers' EMA copies the weights at the first update and then warms the decay up as (1 + t) / (10 + t)
    (2/11 at the second update); with `--ema_min_decay` equal to `--ema_decay` the second update already
    keeps 90% of the average."""
    two_steps = ("--max_train_steps", "2", "--lr_warmup_steps", "0")
    run_in_process(train_arguments(workspace, tmp_path / "plain", *two_steps, "--checkpointing_steps", "1"))
    run_in_process(train_arguments(workspace, tmp_path / "warmup", *two_steps, "--use_ema", "--ema_decay", "0.9"))
    run_in_process(train_arguments(workspace, tmp_path / "floor", *two_steps, "--use_ema", "--ema_decay", "0.9",
                                   "--ema_min_decay", "0.9"))
    # The checkpoint holds the training wrapper, whose transformer is its `transformer` submodule.
    first = {name.removeprefix("transformer."): value
             for name, value in load_file(tmp_path / "plain" / "checkpoint-1" / "model.safetensors").items()}
    second = saved_transformer_weights(tmp_path / "plain")
    warmup = saved_transformer_weights(tmp_path / "warmup")
    floor = saved_transformer_weights(tmp_path / "floor")
    assert first.keys() == second.keys() and any(not torch.equal(first[name], second[name]) for name in first)
    for name in first:
        torch.testing.assert_close(warmup[name], first[name] - (1 - 2 / 11) * (first[name] - second[name]),
                                   rtol=0, atol=1e-6)
        torch.testing.assert_close(floor[name], first[name] - 0.1 * (first[name] - second[name]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("extra, message", [
    (("--ema_decay", "0.9", "--ema_min_decay", "0.95"), r"--ema_min_decay must be in \[0, --ema_decay=0.9\], got 0.95"),
    (("--ema_decay", "1.0"), r"--ema_decay must be in \[0, 1\), got 1.0"),
    (("--max_train_seconds", "-5"), r"--max_train_seconds must be >= 0, got -5.0"),
    (("--max_train_seconds", "nan"), r"--max_train_seconds must be >= 0, got nan"),
])
def test_an_ema_floor_above_the_decay_is_refused(workspace, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        script_module().parse_args(train_arguments(workspace, tmp_path / "run", "--max_train_steps", "1", *extra))
    assert re.search(message, capsys.readouterr().err)
