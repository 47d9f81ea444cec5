"""What the tests of the training scripts share: loading a script of training/ in-process, and resetting
accelerate's process-wide state between in-process runs (each run builds its own Accelerator)."""

import contextlib
import importlib.util
import os
import signal
import subprocess
from pathlib import Path

import psutil
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


def describe_process(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"pid {process.pid} {process.status()}: {' '.join(process.cmdline())[-120:]}"
    return f"pid {process.pid} (gone)"


def run_launcher(command, env, timeout):
    """`subprocess.run(command, capture_output=True, text=True)` in a session of its own, so that a timeout
    kills the launcher and every rank it started: `subprocess.run` alone kills only the launcher, and a rank
    blocked in a collective then lives on after the test.

    A timeout's error says where each process was: they run with PYTHONFAULTHANDLER=1 and get SIGABRT, which
    prints every thread's Python stack to the stderr the error quotes, before SIGKILL."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**env, "PYTHONFAULTHANDLER": "1"}, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torch elastic starts each rank in a session of its own, out of reach of the launcher's group: find
        # them while they are still its descendants, or a rank holding the pipes blocks `communicate` forever.
        launcher = psutil.Process(process.pid)
        ranks = launcher.children(recursive=True)
        alive = [describe_process(rank) for rank in ranks]  # which of launcher and ranks hung, for the report
        # The ranks first (the launcher's death could take them along), one at a time: they share the stderr
        # pipe, and stacks written at once interleave line by line.
        for hung in [*reversed(ranks), launcher]:
            with contextlib.suppress(psutil.NoSuchProcess):
                hung.send_signal(signal.SIGABRT)
                psutil.wait_procs([hung], timeout=5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        for rank in ranks:
            with contextlib.suppress(psutil.NoSuchProcess):
                rank.kill()
        stdout, stderr = process.communicate(timeout=60)
        raise AssertionError(f"{command[:6]}... ran past {timeout} s and was killed with its ranks "
                             f"(alive then: {alive or 'only the launcher'}):\n"
                             f"{stdout[-2000:]}\n{stderr[-12000:]}") from None
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
