"""training/train_classifier.py: checkpoints, a clean stop on SIGINT/SIGTERM, and a resume that matches an
uninterrupted run (tiny CNN on the moving squares of evaluation_helpers, in-process)."""

import os
import signal

import pytest
import torch

from evaluation_helpers import save_moving_squares_dataset
from mgnt_hf import MGNTFeatureClassifier
from mgnt_hf.training_utils import list_checkpoints
from training_helpers import fresh_accelerator_state, load_training_script, reset_accelerate_state  # noqa: F401

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def load_script():
    return load_training_script("train_classifier")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return save_moving_squares_dataset(tmp_path_factory.mktemp("videos") / "data")


def arguments(videos, output_dir, *extra):
    # 9 videos x 2 frames in batches of 6: 3 steps per epoch, 6 in all.
    return ["--moving-fashion-mnist", str(videos), "--output-dir", str(output_dir), "--limit-train", "9",
            "--frames-per-video", "2", "--epochs", "2", "--batch-size", "6", "--conv-channels", "4", "8",
            "--feature-size", "8", "--num-threads", "1", *extra]


def weights(folder):
    return MGNTFeatureClassifier.from_pretrained(folder).state_dict()


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_the_resumed_run_ends_like_an_uninterrupted_one(videos, tmp_path, monkeypatch,
                                                                                         caplog, signum, status):
    load_script().main(arguments(videos, tmp_path / "straight"))

    script = load_script()
    augment, calls = script.augment, []

    def augment_and_signal(*args, **kwargs):  # the 4th step (the first of epoch 2) gets the signal
        calls.append(1)
        if len(calls) == 4:
            os.kill(os.getpid(), signum)
        return augment(*args, **kwargs)

    monkeypatch.setattr(script, "augment", augment_and_signal)
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit) as exit_status:
        script.main(arguments(videos, stopped))
    assert exit_status.value.code == status
    assert [step for step, _ in list_checkpoints(stopped)] == [4]  # the end-of-epoch checkpoint-3 rotated out
    assert not (stopped / "model.safetensors").exists()
    assert (f"stopped by {signal.Signals(signum).name} at step 4: saved {stopped / 'checkpoint-4'} (complete)"
            in caplog.text)

    reset_accelerate_state()
    load_script().main(arguments(videos, stopped, "--resume-from-checkpoint", "latest"))
    expected, resumed = weights(tmp_path / "straight"), weights(stopped)
    for name, tensor in expected.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
