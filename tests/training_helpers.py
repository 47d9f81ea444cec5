"""What the tests of the training scripts share: loading a script of training/ in-process, and resetting
accelerate's process-wide state between in-process runs (each run builds its own Accelerator)."""

import importlib.util
from pathlib import Path

import pytest
from accelerate.state import AcceleratorState, GradientState

TRAINING = Path(__file__).resolve().parents[1] / "training"


def load_training_script(name: str):
    """A fresh module of `training/<name>.py` (so a test's monkeypatching stays in that test)."""
    spec = importlib.util.spec_from_file_location(name, TRAINING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reset_accelerate_state():
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerator_state():
    reset_accelerate_state()
    yield
    reset_accelerate_state()
