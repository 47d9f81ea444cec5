"""training/train_tokenizer.py and mgnt_hf.training_utils: checkpoints, resume, stopping, bad data.

The 2-process `accelerate launch` run is the slow part (two Python start-ups on the CPU); the
other script tests call `main()` in-process with a single-process Accelerator.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import DataLoaderConfiguration
from PIL import Image
from torch.utils.data import DataLoader

from mgnt_hf import MGNTVQModel
from mgnt_hf.training_utils import (
    NonFiniteLossError,
    StopSignalGuard,
    check_finite_losses,
    epoch_dataloader,
    list_checkpoints,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
    resume_position,
    save_checkpoint,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training/train_tokenizer.py"
TINY_VQ = dict(num_channels=3, resolution=16, codebook_size=32, embedding_dim=8, base_channels=8,
               channel_multipliers=[1, 2, 2], num_res_blocks=1, norm_num_groups=4)


def load_script():
    spec = importlib.util.spec_from_file_location("train_tokenizer", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each in-process run builds its own Accelerator; accelerate keeps process-wide singletons."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def make_image_folder(root: Path, per_class: int = 8) -> Path:
    """Two classes of smooth 16x16 colour images (gradients and blobs): easy to reconstruct."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:16, 0:16] / 15.0
    for label, name in enumerate(("gradients", "blobs")):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            colour = rng.uniform(0, 1, size=3)
            if label == 0:
                field = xs if index % 2 else ys
            else:
                cy, cx = rng.uniform(4, 12, size=2)
                field = np.exp(-((ys * 15 - cy) ** 2 + (xs * 15 - cx) ** 2) / 20.0)
            image = (255 * field[..., None] * colour).astype(np.uint8)
            Image.fromarray(image, mode="RGB").save(root / name / f"{index}.png")
    return root


def write_vq_config(path: Path) -> Path:
    path.write_text(json.dumps(TINY_VQ))
    return path


def base_arguments(data_dir: Path, config: Path, output_dir: Path, steps: int) -> list[str]:
    return ["--train_data_dir", str(data_dir), "--vq_config", str(config), "--resize_mode", "resize",
            "--output_dir", str(output_dir), "--train_batch_size", "4", "--learning_rate", "3e-3",
            "--max_train_steps", str(steps), "--checkpointing_steps", "4", "--validation_steps", "4",
            "--logging_steps", "1", "--num_validation_images", "4", "--seed", "0"]


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "logs/metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- end to end


def test_two_process_launch_trains_saves_and_resumes(tmp_path):
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              "29517", str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    first = subprocess.run(launch + base_arguments(data_dir, config, output_dir, 8) + ["--adversarial_weight", "0.1",
                           "--adversarial_start_step", "4"], capture_output=True, text=True, env=env, timeout=240)
    assert first.returncode == 0, first.stderr[-4000:]

    metrics = read_metrics(output_dir)
    assert [row["step"] for row in metrics] == list(range(1, 9))
    assert metrics[-1]["reconstruction_loss"] < 0.5 * metrics[0]["reconstruction_loss"]
    assert "discriminator_loss" in metrics[-1] and "discriminator_loss" not in metrics[2]
    assert [step for step, _ in list_checkpoints(output_dir)] == [4, 8]
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]
    assert (output_dir / "validation/step-0000008.png").is_file()
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["num_images"] == 16 and 0 < results["codebook_used_fraction"] <= 1

    model = MGNTVQModel.from_pretrained(output_dir).eval()
    assert model.config.token_grid == (4, 4)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    assert model.encode(pixels).shape == (2, 4, 4)

    second = subprocess.run(launch + base_arguments(data_dir, config, output_dir, 10)
                            + ["--adversarial_weight", "0.1", "--adversarial_start_step", "4",
                               "--resume_from_checkpoint", "latest"],
                            capture_output=True, text=True, env=env, timeout=240)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "checkpoint-8 at step 8" in second.stderr
    assert [row["step"] for row in read_metrics(output_dir)] == list(range(1, 11))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Same weights after 6 steps straight and after 4 steps + resume (data order, RNG, optimizer restored)."""
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images", per_class=6)
    config = write_vq_config(tmp_path / "vq.json")
    script.main(base_arguments(data_dir, config, tmp_path / "straight", 6) + ["--validation_split", "none"])
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    script.main(base_arguments(data_dir, config, tmp_path / "split", 4) + ["--validation_split", "none"])
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    script.main(base_arguments(data_dir, config, tmp_path / "split", 6)
                + ["--validation_split", "none", "--resume_from_checkpoint", "latest"])
    straight = MGNTVQModel.from_pretrained(tmp_path / "straight").state_dict()
    resumed = MGNTVQModel.from_pretrained(tmp_path / "split").state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


def test_sigterm_finishes_the_step_saves_a_checkpoint_and_exits(tmp_path):
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    arguments = base_arguments(data_dir, config, output_dir, 100000)
    arguments[arguments.index("--checkpointing_steps") + 1] = "100000"
    process = subprocess.Popen([sys.executable, str(SCRIPT), *arguments, "--validation_split", "none"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics_file = output_dir / "logs/metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics_file.is_file() and metrics_file.read_text().count("\n") >= 2):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stderr
    checkpoints = list_checkpoints(output_dir)
    assert len(checkpoints) == 1
    step, path = checkpoints[0]
    assert step == read_metrics(output_dir)[-1]["step"] >= 2
    assert json.loads((path / "training_state.json").read_text())["global_step"] == step
    assert (path / "model.safetensors").is_file() and (path / "optimizer.bin").is_file()
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]
    assert not (output_dir / "model.safetensors").exists()  # the run did not finish


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tmp_path):
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    arguments = base_arguments(data_dir, config, output_dir, 50)
    arguments[arguments.index("--checkpointing_steps") + 1] = "1"
    arguments[arguments.index("--learning_rate") + 1] = "1e38"  # the first update overflows the weights
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step (\d+).*last saved checkpoint is intact"):
        script.main(arguments + ["--validation_split", "none", "--max_grad_norm", "0"])
    checkpoints = list_checkpoints(output_dir)
    assert checkpoints and checkpoints[-1][0] >= 1
    reloaded = MGNTVQModel.from_pretrained(checkpoints[0][1])
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("case, message", [
    ("no_class_folders", "no class subfolders"),
    ("unreadable_image", r"(?s)1 bad image.*broken\.png"),
    ("missing_column", r"image column 'pixels' not in the dataset"),
])
def test_bad_data_fails_before_training(tmp_path, case, message):
    script = load_script()
    config = write_vq_config(tmp_path / "vq.json")
    data_dir = make_image_folder(tmp_path / "images", per_class=2)
    extra = []
    if case == "no_class_folders":
        data_dir = tmp_path / "flat"
        data_dir.mkdir()
        Image.new("RGB", (16, 16)).save(data_dir / "a.png")
    elif case == "unreadable_image":
        (data_dir / "blobs" / "broken.png").write_bytes(b"this is no image")
    else:
        extra = ["--image_column", "pixels"]
    output_dir = tmp_path / "run"
    with pytest.raises(ValueError, match=message):
        script.main(base_arguments(data_dir, config, output_dir, 2) + extra)
    assert not (output_dir / "logs/metrics.jsonl").exists()


def test_skip_bad_images_trains_on_the_rest(tmp_path, caplog):
    script = load_script()
    config = write_vq_config(tmp_path / "vq.json")
    data_dir = make_image_folder(tmp_path / "images", per_class=2)
    (data_dir / "blobs" / "broken.png").write_bytes(b"this is no image")
    output_dir = tmp_path / "run"
    script.main(base_arguments(data_dir, config, output_dir, 1) + ["--skip_bad_images"])
    assert "broken.png" in caplog.text
    assert (output_dir / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- training_utils


def tiny_accelerator_setup(data_seed=0):
    accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True,
                                                                                  data_seed=data_seed))
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer


def test_save_checkpoint_is_atomic_and_rotates(tmp_path):
    accelerator, model, _ = tiny_accelerator_setup()
    for step in (1, 2, 3):
        save_checkpoint(accelerator, tmp_path, step, checkpoints_total_limit=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert json.loads((tmp_path / "checkpoint-3/training_state.json").read_text()) == {"global_step": 3}
    # Saving the same step again replaces it completely.
    with torch.no_grad():
        model.weight.fill_(7.0)
    save_checkpoint(accelerator, tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-2", "checkpoint-3"]
    with torch.no_grad():
        model.weight.zero_()
    accelerator.load_state(str(tmp_path / "checkpoint-3"))
    assert torch.all(model.weight == 7.0)


def test_resolve_resume_ignores_incomplete_saves(tmp_path):
    assert resolve_resume_checkpoint(tmp_path, None) is None
    assert resolve_resume_checkpoint(tmp_path, "latest") is None
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-12").mkdir()
    (tmp_path / ".tmp-checkpoint-20").mkdir()  # a save that was killed
    (tmp_path / "checkpoint-notanumber").mkdir()
    path, step = resolve_resume_checkpoint(tmp_path, "latest")
    assert (path.name, step) == ("checkpoint-12", 12)
    assert resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-5"))[1] == 5
    assert resolve_resume_checkpoint(tmp_path, "checkpoint-5")[1] == 5
    with pytest.raises(OSError, match="not a checkpoint folder"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / "checkpoint-6"))
    with pytest.raises(ValueError, match="incomplete checkpoint"):
        resolve_resume_checkpoint(tmp_path, str(tmp_path / ".tmp-checkpoint-20"))
    assert [p.name for p in remove_incomplete_checkpoints(tmp_path)] == [".tmp-checkpoint-20"]
    assert not (tmp_path / ".tmp-checkpoint-20").exists()


def test_check_finite_losses():
    check_finite_losses({"a": torch.tensor(1.0), "b": torch.tensor(-2.0)}, step=3)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at step 3: b"):
        check_finite_losses({"a": torch.tensor(1.0), "b": torch.tensor(float("nan"))}, step=3)
    with pytest.raises(NonFiniteLossError, match="a"):
        check_finite_losses({"a": torch.tensor(float("inf"))}, step=1)


def test_stop_signal_guard_catches_sigint_and_restores_the_handler():
    previous = signal.getsignal(signal.SIGINT)
    with StopSignalGuard() as guard:
        assert not guard.should_stop()
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.time() + 5
        while not guard.requested and time.time() < deadline:
            time.sleep(0.01)
        assert guard.should_stop() and guard.signal_name == "SIGINT"
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal is absorbed, not fatal
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.parametrize("step, accumulation, batches, expected", [
    (0, 1, 10, (0, 0)), (7, 1, 10, (0, 7)), (10, 1, 10, (1, 0)), (23, 1, 10, (2, 3)),
    (3, 2, 10, (0, 6)), (5, 2, 10, (1, 0)),
    (3, 4, 10, (1, 0)),  # 10 batches with accumulation 4: steps of 4, 4, 2 batches
    (4, 4, 10, (1, 4)),
])
def test_resume_position(step, accumulation, batches, expected):
    assert resume_position(step, accumulation, batches) == expected


def test_skipping_seen_batches_reproduces_the_data_order():
    def batches(epochs_and_skips):
        accelerator, _, _ = tiny_accelerator_setup(data_seed=3)
        loader = accelerator.prepare(DataLoader(list(range(20)), batch_size=4, shuffle=True))
        seen = []
        for epoch, skip in epochs_and_skips:
            seen += [batch.tolist() for batch in epoch_dataloader(accelerator, loader, epoch, skip)]
        AcceleratorState._reset_state(True)
        GradientState._reset_state()
        return seen

    straight = batches([(0, 0), (1, 0), (2, 0)])
    assert straight[:5] != straight[5:10]  # epochs are shuffled differently
    # Resume after 7 batches (epoch 1, batch 2).
    epoch, skip = resume_position(7, 1, 5)
    resumed = batches([(epoch, skip), (epoch + 1, 0)])
    assert resumed == straight[7:]
