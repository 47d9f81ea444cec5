"""training/train_tokenizer.py and mgnt_hf.training_utils: checkpoints, resume, stopping, bad data.

The 2-process `accelerate launch` run is the slow part (two Python start-ups on the CPU); the
other script tests call `main()` in-process with a single-process Accelerator.
"""

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from PIL import Image
from torch.utils.data import DataLoader

from mgnt_hf import MGNTVQModel
from mgnt_hf.training_utils import (
    NonFiniteLossError,
    StopSignalGuard,
    check_finite_losses,
    end_training,
    epoch_dataloader,
    exit_after_signal,
    list_checkpoints,
    remove_incomplete_checkpoints,
    resolve_resume_checkpoint,
    resume_position,
    save_checkpoint,
    set_aside_later_checkpoints,
)
from training_helpers import fresh_accelerator_state, load_training_script, reset_accelerate_state  # noqa: F401
from training_helpers import run_launcher

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "training/train_tokenizer.py"
TINY_VQ = dict(num_channels=3, resolution=16, codebook_size=32, embedding_dim=8, base_channels=8,
               channel_multipliers=[1, 2, 2], num_res_blocks=1, norm_num_groups=4)


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def load_script():
    return load_training_script("train_tokenizer")


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
    # Two processes over gloo need torchrun (--multi_gpu) with ACCELERATE_USE_CPU: --cpu starts a single one.
    with socket.socket() as probe:  # a free port: other runs on this host may hold accelerate's default one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--multi_gpu",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(port), str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    first = run_launcher(launch + base_arguments(data_dir, config, output_dir, 8) + ["--adversarial_weight", "0.1",
                         "--adversarial_start_step", "4"], env=env, timeout=240)
    assert first.returncode == 0, first.stderr[-4000:]

    metrics = read_metrics(output_dir)
    assert [row["step"] for row in metrics] == list(range(1, 9))
    assert metrics[-1]["reconstruction_loss"] < 0.5 * metrics[0]["reconstruction_loss"]
    assert "discriminator_loss" in metrics[-1] and "discriminator_loss" not in metrics[2]
    assert [step for step, _ in list_checkpoints(output_dir)] == [4, 8]
    assert sorted(p.name for p in (output_dir / "checkpoint-8").glob("random_states_*.pkl")) == [
        "random_states_0.pkl", "random_states_1.pkl"]  # two processes trained together
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]
    assert (output_dir / "validation/step-0000008.png").is_file()
    results = json.loads((output_dir / "eval_results.json").read_text())
    assert results["num_images"] == 16 and 0 < results["codebook_used_fraction"] <= 1

    model = MGNTVQModel.from_pretrained(output_dir).eval()
    assert model.config.token_grid == (4, 4)
    pixels = torch.rand(2, 3, 16, 16) * 2 - 1
    assert model.encode(pixels).shape == (2, 4, 4)

    second = run_launcher(launch + base_arguments(data_dir, config, output_dir, 10)
                          + ["--adversarial_weight", "0.1", "--adversarial_start_step", "4",
                             "--resume_from_checkpoint", "latest"], env=env, timeout=240)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "checkpoint-8 at step 8" in second.stderr
    assert [row["step"] for row in read_metrics(output_dir)] == list(range(1, 11))


def test_resumed_run_matches_an_uninterrupted_one(tmp_path):
    """Same weights after 6 steps straight and after 4 steps + resume (data order, RNG, optimizer restored)."""
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images", per_class=6)
    config = write_vq_config(tmp_path / "vq.json")
    script.main(base_arguments(data_dir, config, tmp_path / "straight", 6) + ["--validation_split", "none"])
    reset_accelerate_state()
    script.main(base_arguments(data_dir, config, tmp_path / "split", 4) + ["--validation_split", "none"])
    reset_accelerate_state()
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


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_no_diverged_checkpoint(tmp_path):
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    arguments = base_arguments(data_dir, config, output_dir, 50)
    arguments[arguments.index("--checkpointing_steps") + 1] = "1"
    arguments[arguments.index("--learning_rate") + 1] = "1e38"  # the first update overflows the weights
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 2: .*checkpoint-1, saved just before, was "
                                                 r"discarded.* No checkpoint in .* is safe; start again"):
        script.main(arguments + ["--validation_split", "none", "--max_grad_norm", "0"])
    assert not list_checkpoints(output_dir)  # checkpoint-1 held the overflowed weights
    assert not [p for p in output_dir.iterdir() if p.name.startswith(".tmp-")]


def test_non_finite_loss_names_the_newest_checkpoint_whose_weights_gave_finite_losses(tmp_path, monkeypatch):
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    # Steps 1-2 at the normal learning rate; the update of step 3 makes the weights huge but finite, so the
    # loss of step 4 (from those weights, saved as checkpoint-3) is the first non-finite one.
    monkeypatch.setattr(script, "get_scheduler", lambda name, optimizer, **_: torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if step < 2 else 1e40))
    arguments = base_arguments(data_dir, config, output_dir, 50)
    arguments[arguments.index("--checkpointing_steps") + 1] = "1"
    with pytest.raises(NonFiniteLossError) as error:
        script.main(arguments + ["--validation_split", "none", "--max_grad_norm", "0"])
    message = str(error.value)
    assert message.startswith("non-finite loss at step 4: ")
    assert "checkpoint-3, saved just before, was discarded: its weights gave this loss" in message
    safe = output_dir / "checkpoint-2"
    assert f"The newest safe checkpoint is {safe} (its weights gave finite losses); resume with " \
           f"--resume_from_checkpoint {safe}" in message
    assert [step for step, _ in list_checkpoints(output_dir)] == [1, 2]
    reloaded = MGNTVQModel.from_pretrained(safe)
    assert max(float(p.detach().abs().max()) for p in reloaded.parameters()) < 100


def test_a_full_disk_during_a_checkpoint_names_the_intact_one(tmp_path, monkeypatch):
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images")
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    save_state, calls = Accelerator.save_state, []

    def save_state_until_the_disk_is_full(self, folder, **kwargs):
        calls.append(folder)
        if len(calls) < 2:
            return save_state(self, folder, **kwargs)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(folder) / "optimizer.bin"))

    monkeypatch.setattr(Accelerator, "save_state", save_state_until_the_disk_is_full)
    arguments = base_arguments(data_dir, config, output_dir, 12)
    arguments[arguments.index("--checkpointing_steps") + 1] = "2"
    with pytest.raises(OSError, match=r"saving checkpoint-4 in .* failed: no space left on device .*The partial "
                                      r"save was removed and the newest complete checkpoint, .*checkpoint-2, "
                                      r"is intact") as error:
        script.main(arguments + ["--validation_split", "none"])
    assert error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in output_dir.iterdir() if "checkpoint" in p.name) == ["checkpoint-2"]
    assert MGNTVQModel.from_pretrained(output_dir / "checkpoint-2") is not None


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


def test_a_run_starting_at_a_step_sets_the_later_checkpoints_aside(tmp_path):
    for step in (2, 4, 6):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert set_aside_later_checkpoints(tmp_path, 6) is None
    first = set_aside_later_checkpoints(tmp_path, 2)
    assert first.name.startswith("abandoned-") and sorted(p.name for p in first.iterdir()) == ["checkpoint-4",
                                                                                             "checkpoint-6"]
    second = set_aside_later_checkpoints(tmp_path, 0)  # a fresh start in the same folder, within the same second
    assert second != first and [p.name for p in second.iterdir()] == ["checkpoint-2"]
    assert list_checkpoints(tmp_path) == [] and resolve_resume_checkpoint(tmp_path, "latest") is None


def test_resuming_a_gan_checkpoint_without_the_discriminator_is_refused(tmp_path):
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images", per_class=2)
    config = write_vq_config(tmp_path / "vq.json")
    output_dir = tmp_path / "run"
    arguments = base_arguments(data_dir, config, output_dir, 2)
    arguments[arguments.index("--checkpointing_steps") + 1] = "2"
    script.main(arguments + ["--validation_split", "none", "--adversarial_weight", "0.1"])
    reset_accelerate_state()
    arguments[arguments.index("--max_train_steps") + 1] = "3"
    with pytest.raises(ValueError, match=r"checkpoint-2 was saved with --adversarial_weight > 0 but this run is "
                                         r"without it"):
        script.main(arguments + ["--validation_split", "none", "--resume_from_checkpoint", "latest"])


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
        assert guard.should_stop() and guard.signal_name == "SIGINT" and guard.exit_code == 130
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal is absorbed, not fatal
        time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is previous


def test_exit_after_signal_exits_with_the_signal_status_and_absorbs_later_signals(tmp_path):
    accelerator, _, _ = tiny_accelerator_setup(data_seed=0)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with StopSignalGuard() as guard:
            os.kill(os.getpid(), signal.SIGTERM)
            deadline = time.time() + 5
            while not guard.requested and time.time() < deadline:
                time.sleep(0.01)
            assert guard.should_stop(accelerator)
        assert signal.getsignal(signal.SIGTERM) is previous
        with pytest.raises(SystemExit) as exit_info:
            exit_after_signal(accelerator, guard, tmp_path / "checkpoint-3", 3)
        assert exit_info.value.code == 143
        # torchrun's SIGTERM to a process still exiting must not change its status: it is absorbed.
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN  # not a Python handler: kept during shutdown
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
    finally:
        signal.signal(signal.SIGTERM, previous)


END_TRAINING_PROBE = """
import ctypes, sys
from mgnt_hf.training_utils import end_training

backend, teardown, exit_code = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Tracker:
    def finish(self):
        print("tracker finished")

class State:
    def __init__(self):
        self.backend = backend
    def destroy_process_group(self):
        print("destroying")
        if teardown == "blocks":  # in C, holding the GIL, as the gloo teardown CI saw: no Python thread runs
            ctypes.PyDLL(None).sleep(60)

class TwoProcessAccelerator:  # the calls end_training makes
    num_processes = 2
    trackers = [Tracker()]
    state = State()
    def wait_for_everyone(self):
        print("barrier")

# Nothing is flushed: stdout is a pipe, block-buffered, and os._exit alone would lose every line.
end_training(TwoProcessAccelerator(), teardown_timeout=float(sys.argv[4]), exit_code=exit_code)
print("returned", flush=True)
"""


def run_end_training_probe(backend, teardown, exit_code, timeout):
    # A subprocess: with several processes end_training ends its process.
    return subprocess.run([sys.executable, "-c", END_TRAINING_PROBE, backend, teardown, str(exit_code), str(timeout)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("exit_code", [0, 143])
def test_several_processes_on_gloo_exit_with_their_status_without_the_teardown(exit_code):
    probe = run_end_training_probe("gloo", "blocks", exit_code, 30)
    assert probe.returncode == exit_code, probe.stderr
    assert probe.stdout.split() == ["barrier", "tracker", "finished"]  # no teardown, and no return
    assert "Timeout" not in probe.stderr


@pytest.mark.parametrize("backend", ["nccl", "cuda:nccl,cpu:gloo"])
def test_several_processes_on_nccl_destroy_the_group_then_exit(backend):
    probe = run_end_training_probe(backend, "returns", 143, 30)
    assert probe.returncode == 143, probe.stderr
    assert probe.stdout.split() == ["barrier", "tracker", "finished", "destroying"]


def test_a_teardown_blocked_holding_the_gil_prints_every_stack_and_exits_1_after_the_timeout():
    started = time.perf_counter()
    probe = run_end_training_probe("nccl", "blocks", 0, 0.5)
    assert probe.returncode == 1 and time.perf_counter() - started < 30, probe.stderr  # not the 60 s sleep
    assert "Timeout (0:00:00.500000)!" in probe.stderr and 'in destroy_process_group' in probe.stderr


def test_one_process_ends_through_accelerate_and_returns():
    calls = []

    class OneProcessAccelerator:
        num_processes = 1

        def wait_for_everyone(self):
            calls.append("barrier")

        def end_training(self):
            calls.append("end_training")

    end_training(OneProcessAccelerator())
    assert calls == ["barrier", "end_training"]


@pytest.mark.parametrize("timeout", [0, -1.0, float("nan"), float("inf"), "60"])
def test_end_training_refuses_a_teardown_timeout_that_is_not_a_positive_number(timeout):
    class NeverCalled:
        num_processes = 2

        def wait_for_everyone(self):
            raise AssertionError("the check comes before the barrier")

    with pytest.raises(ValueError, match="teardown_timeout must be a finite number"):
        end_training(NeverCalled(), teardown_timeout=timeout)


def test_a_launch_past_its_timeout_is_reported_with_each_process_and_its_stack():
    # A launcher with one rank in a session of its own, as torch elastic starts them, both blocked for good.
    rank = "import time; time.sleep(600)"
    launcher = (f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {rank!r}], "
                "start_new_session=True); time.sleep(600)")
    started = time.monotonic()
    with pytest.raises(AssertionError) as error:
        run_launcher([sys.executable, "-c", launcher], env=dict(os.environ), timeout=3)
    assert time.monotonic() - started < 30
    message = str(error.value)
    assert "ran past 3 s" in message and "alive then: ['pid " in message and "time.sleep(600)" in message
    assert message.count('File "<string>", line 1 in <module>') == 2  # both stacks, from faulthandler


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
        reset_accelerate_state()
        return seen

    straight = batches([(0, 0), (1, 0), (2, 0)])
    assert straight[:5] != straight[5:10]  # epochs are shuffled differently
    # Resume after 7 batches (epoch 1, batch 2).
    epoch, skip = resume_position(7, 1, 5)
    resumed = batches([(epoch, skip), (epoch + 1, 0)])
    assert resumed == straight[7:]


def test_time_budget_stops_after_the_crossing_step_and_resumes_to_the_same_weights(tmp_path):
    """--max_train_seconds 0 is crossed by the first step: checkpoint-1 and the tokenizer are saved, and the
    same command resumed without the budget ends with the weights of an uninterrupted run."""
    script = load_script()
    data_dir = make_image_folder(tmp_path / "images", per_class=6)
    config = write_vq_config(tmp_path / "vq.json")
    script.main(base_arguments(data_dir, config, tmp_path / "straight", 6) + ["--validation_split", "none"])
    reset_accelerate_state()
    budgeted = tmp_path / "budgeted"
    script.main(base_arguments(data_dir, config, budgeted, 6) + ["--validation_split", "none",
                                                                  "--max_train_seconds", "0"])
    assert [step for step, _ in list_checkpoints(budgeted)] == [1]
    assert [row["step"] for row in read_metrics(budgeted)] == [1]
    assert MGNTVQModel.from_pretrained(budgeted).config.token_grid == (4, 4)
    reset_accelerate_state()
    script.main(base_arguments(data_dir, config, budgeted, 6)
                + ["--validation_split", "none", "--resume_from_checkpoint", "latest"])
    straight = MGNTVQModel.from_pretrained(tmp_path / "straight").state_dict()
    resumed = MGNTVQModel.from_pretrained(budgeted).state_dict()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("value", ["-5", "nan"])
def test_a_negative_or_nan_time_budget_is_refused(tmp_path, capsys, value):
    arguments = base_arguments(tmp_path / "images", tmp_path / "vq.json", tmp_path / "run", 6)
    with pytest.raises(SystemExit):
        load_script().parse_args(arguments + ["--max_train_seconds", value])
    assert f"--max_train_seconds must be >= 0, got {float(value)}" in capsys.readouterr().err
