"""What every training script of the project shares: checkpoints, resuming, stopping, loss checks.

- `CheckpointManager` / `save_checkpoint`: `accelerator.save_state` into `<output_dir>/.tmp-checkpoint-<step>`,
  then one atomic rename to `checkpoint-<step>`: a checkpoint folder is complete or absent. The manager
  renames only once the saved weights have given a finite loss (at the next step), so a checkpoint never
  holds weights that diverged. Older ones are rotated out (after the new one exists) to keep
  `checkpoints_total_limit`. A failed save (e.g. "no space left on device") removes its partial folder and
  names the newest intact checkpoint.
- `resume_training`: `--resume_from_checkpoint latest|PATH` -> the starting step, with the state loaded.
  Temporary folders of interrupted saves are never picked (`remove_incomplete_checkpoints` deletes them); a
  checkpoint past the run's last step is refused; checkpoints after the starting step belong to a run
  this one replaces and are moved to `abandoned-<time>/` (`set_aside_later_checkpoints`), so `latest`
  follows the current run only.
- `StopSignalGuard`: SIGINT/SIGTERM set a flag; the loop finishes its step, the flag is agreed on by all
  processes, the run saves a checkpoint and `exit_after_signal` exits with 128 + the signal (143, 130).
- `check_finite_losses`: raise `NonFiniteLossError` on NaN/inf on any process, before the
  optimizer step, so the weights and the last checkpoint stay good.
- `resume_position` / `epoch_dataloader`: with accelerate's seedable sampler every epoch's order
  depends only on the seed and the epoch; after a resume the already-seen batches of the current
  epoch are skipped (`accelerator.skip_first_batches`), so the data order equals an uninterrupted run.
- `check_launch`: refuse a launch accelerate did not set up as configured (processes that would
  train unconnected, an FSDP config that would run unsharded) before anything is written.
- `EMAModel`: diffusers' exponential moving average of weights, re-exported for the scripts. Give it to
  `CheckpointManager(..., ema=ema)` and `resume_training(..., ema=ema)`: checkpoints hold it as
  `ema.safetensors` (`save_ema_state` / `load_ema_state`), not as the pickle accelerate's
  `register_for_checkpointing` writes and loads with `weights_only=False`.

The layout (`checkpoint-<step>` folders with `training_state.json`) matches diffusers' example
scripts, so their habits (`--resume_from_checkpoint latest`) carry over. How signals reach the
training processes under `accelerate launch`: training/README.md.
"""

from __future__ import annotations

import errno
import faulthandler
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel  # noqa: F401  (re-exported for training scripts)
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .utils.checks import check_finite_number, check_positive_int

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TEMPORARY_PREFIX = ".tmp-"
TRAINING_STATE_FILE = "training_state.json"
EMA_STATE_FILE = "ema.safetensors"
# Where checkpoints written with accelerate's `register_for_checkpointing(ema)` (before 2026-12-04) hold the EMA.
LEGACY_EMA_STATE_FILE = "custom_checkpoint_0.pkl"


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before the optimizer step so no weight is touched."""


# ----------------------------------------------------------------------------------------------
# EMA state in checkpoints


def save_ema_state(ema: EMAModel, folder: str | os.PathLike) -> Path:
    """Write `ema`'s state to `<folder>/ema.safetensors`: the shadow weights as tensors `shadow_params.<i>`, the
    scalars of `EMAModel.state_dict()` (decay, step, warm-up settings) as JSON in the file's metadata."""
    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    tensors = {f"shadow_params.{index}": tensor.detach().to("cpu").contiguous() for index, tensor in enumerate(shadow)}
    path = Path(folder) / EMA_STATE_FILE
    save_file(tensors, str(path), metadata={"ema_state": json.dumps(state), "num_shadow_params": str(len(shadow))})
    return path


def checkpoint_has_ema(folder: str | os.PathLike) -> bool:
    """Whether a checkpoint folder holds EMA weights (`ema.safetensors`, or the legacy accelerate pickle)."""
    folder = Path(folder)
    return (folder / EMA_STATE_FILE).is_file() or (folder / LEGACY_EMA_STATE_FILE).is_file()


def _read_ema_state(folder: Path) -> dict:
    path = folder / EMA_STATE_FILE
    if not path.is_file():
        legacy = folder / LEGACY_EMA_STATE_FILE
        if not legacy.is_file():
            raise OSError(f"{folder} holds no EMA weights ({EMA_STATE_FILE} or {LEGACY_EMA_STATE_FILE})")
        try:  # weights_only: the pickle may hold tensors and plain values only, never code to run
            return torch.load(legacy, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001  (any unpickling failure means the file cannot be used)
            raise OSError(f"{legacy} cannot be read as an EMA state ({type(error).__name__}: {error})") from error
    try:
        with safe_open(str(path), framework="pt", device="cpu") as file:
            metadata = file.metadata() or {}
            state = json.loads(metadata["ema_state"])
            count = int(metadata["num_shadow_params"])
            state["shadow_params"] = [file.get_tensor(f"shadow_params.{index}") for index in range(count)]
            extra = set(file.keys()) - {f"shadow_params.{index}" for index in range(count)}
    except (SafetensorError, OSError, KeyError, ValueError) as error:
        raise OSError(f"{path} is damaged or not an EMA state written by save_ema_state "
                      f"({type(error).__name__}: {error})") from error
    if extra:
        raise OSError(f"{path} is not an EMA state written by save_ema_state: unexpected tensors {sorted(extra)}")
    return state


def load_ema_state(ema: EMAModel, folder: str | os.PathLike) -> None:
    """Load the EMA state of a checkpoint folder into `ema` (on `ema`'s device).

    Reads `ema.safetensors`, or the `custom_checkpoint_0.pkl` of older checkpoints with `weights_only=True`.
    `OSError` for a missing or damaged file; `ValueError` when its weights are not those of `ema`'s model
    (another count or shape), so a mismatched average is never trained on."""
    folder = Path(folder)
    state = _read_ema_state(folder)
    shadow = state["shadow_params"]
    expected = [tuple(parameter.shape) for parameter in ema.shadow_params]
    found = [tuple(tensor.shape) for tensor in shadow]
    if found != expected:
        differing = [index for index, (a, b) in enumerate(zip(found, expected)) if a != b]
        first = differing[0] if differing else min(len(found), len(expected))
        raise ValueError(f"the EMA weights in {folder} do not fit this model: {len(found)} tensors against "
                         f"{len(expected)}, first difference at index {first}; resume with the model the "
                         "checkpoint was trained with")
    state["shadow_params"] = [tensor.to(device=current.device, dtype=current.dtype)
                              for tensor, current in zip(shadow, ema.shadow_params)]
    ema.load_state_dict(state)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints `[(step, path)]` in `output_dir`, oldest first (temporary folders excluded)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = CHECKPOINT_PATTERN.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def remove_incomplete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary folders left by saves that were killed mid-way; return what was removed."""
    root = Path(output_dir)
    removed = []
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.startswith(TEMPORARY_PREFIX + "checkpoint-") and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
    for entry in removed:
        logger.warning("removed incomplete checkpoint %s (an interrupted save)", entry)
    return removed


def rotate_checkpoints(output_dir: str | os.PathLike, total_limit: int | None) -> list[Path]:
    """Keep the `total_limit` newest checkpoints, delete older ones; return the deleted paths."""
    if check_positive_int("checkpoints_total_limit", total_limit, allow_none=True) is None:
        return []
    checkpoints = list_checkpoints(output_dir)
    removed = [path for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]]
    for path in removed:
        shutil.rmtree(path)
        logger.info("removed old checkpoint %s (checkpoints_total_limit=%d)", path, total_limit)
    return removed


def _write_checkpoint(accelerator, output_dir: Path, step: int, extra_state: dict | None,
                      ema: EMAModel | None = None) -> Path:
    """Write the full training state at `step` (with `ema`'s, when given) into
    `<output_dir>/.tmp-checkpoint-<step>`; return that folder.

    Every process calls it. A save that fails on any process (a full disk, most often) fails on all of them,
    with the partial folder removed and an `OSError` naming the newest complete checkpoint.
    """
    temporary = output_dir / f"{TEMPORARY_PREFIX}checkpoint-{step}"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    failure = None
    try:
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            if ema is not None:  # every process holds the same average: the main one writes it
                save_ema_state(ema, temporary)
            state = {"global_step": int(step), **(extra_state or {})}
            (temporary / TRAINING_STATE_FILE).write_text(json.dumps(state, indent=2))
    except OSError as error:
        failure = error
    # All processes learn whether any of them failed (this is also the barrier after the save).
    error_number = 0 if failure is None else (failure.errno or errno.EIO)
    if accelerator.num_processes > 1:
        flag = torch.tensor([float(error_number)], device=accelerator.device)
        error_number = int(accelerator.reduce(flag, reduction="max").item())
    if error_number:
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        newest = list_checkpoints(output_dir)
        intact = (f"the newest complete checkpoint, {newest[-1][1]}, is intact" if newest
                  else "no complete checkpoint exists yet")
        full = error_number == errno.ENOSPC
        reason = "no space left on device" if full else os.strerror(error_number)
        detail = f" ({failure})" if failure is not None else " (on another process)"
        raise OSError(error_number,
                      f"saving checkpoint-{step} in {output_dir} failed: {reason}{detail}. The partial save was "
                      f"removed and {intact}; {'free some space' if full else 'fix the cause'}, then resume with "
                      "--resume_from_checkpoint latest") from failure
    return temporary


def _commit_checkpoint(output_dir: Path, temporary: Path, step: int, checkpoints_total_limit: int | None) -> Path:
    """Main process: rename a written `.tmp-checkpoint-<step>` to `checkpoint-<step>` (atomic), then rotate."""
    final = output_dir / f"checkpoint-{step}"
    if final.exists():
        # Saving a step again (e.g. after a resume at that step): swap in the new folder, then drop the old.
        previous = output_dir / f"{TEMPORARY_PREFIX}previous-checkpoint-{step}"
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
        os.replace(temporary, final)
        shutil.rmtree(previous)
    else:
        os.replace(temporary, final)
    rotate_checkpoints(output_dir, checkpoints_total_limit)
    logger.info("saved checkpoint %s", final)
    return final


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int,
                    checkpoints_total_limit: int | None = None, extra_state: dict | None = None,
                    ema: EMAModel | None = None) -> Path:
    """Save the full training state at `step` (and `ema`'s) as `<output_dir>/checkpoint-<step>`, atomically.

    Call on every process (accelerate's `save_state` writes per-process RNG states). `output_dir`
    must be a file system all processes share, as for `save_state` itself. `extra_state` (JSON) is
    stored in `training_state.json` beside `global_step`. A failed save (`OSError`, e.g. "no space left
    on device") leaves no partial folder and names the newest complete checkpoint. Training loops use
    `CheckpointManager`, which also keeps a checkpoint back until its weights have given a finite loss.
    """
    output_dir = Path(output_dir)
    temporary = _write_checkpoint(accelerator, output_dir, step, extra_state, ema)
    final = output_dir / f"checkpoint-{step}"
    if accelerator.is_main_process:
        _commit_checkpoint(output_dir, temporary, step, checkpoints_total_limit)
    accelerator.wait_for_everyone()
    return final


class CheckpointManager:
    """The `checkpoint-<step>` folders of a training run; one counts only once its weights gave a finite loss.

    A loss is computed from the weights before the optimizer step, so the weights saved at step k are first
    tested by the loss of step k+1. `save(k)` therefore writes the complete state at once (the RNG and data
    position of step k) but keeps it as `.tmp-checkpoint-k` until `check_losses` at the next step finds the
    losses finite; then it is renamed to `checkpoint-k` (and older ones rotated out). A non-finite loss
    deletes it instead: a checkpoint that reproduces the failure is never offered for resuming, and the
    `NonFiniteLossError` names the newest one that is safe.

    ```python
    checkpoints = CheckpointManager(accelerator, output_dir, checkpoints_total_limit)
    for batch in loader:
        loss = ...
        checkpoints.check_losses({"loss": loss}, global_step + 1)  # raises on NaN/inf, else commits
        ...backward, optimizer step; global_step += 1
        if global_step % checkpointing_steps == 0:
            checkpoints.save(global_step)
    checkpoints.finish(global_step)  # at the end or a stop: no later loss to wait for
    ```
    """

    def __init__(self, accelerator, output_dir: str | os.PathLike, checkpoints_total_limit: int | None = None,
                 ema: EMAModel | None = None):
        check_positive_int("checkpoints_total_limit", checkpoints_total_limit, allow_none=True)
        self.accelerator = accelerator
        self.ema = ema  # saved into every checkpoint as ema.safetensors
        self.output_dir = Path(output_dir)
        self.checkpoints_total_limit = checkpoints_total_limit
        self.pending: tuple[int, Path] | None = None  # (step, temporary folder) awaiting a finite loss

    def save(self, step: int) -> None:
        """Write the state at `step` (every process); it becomes `checkpoint-<step>` at the next finite loss."""
        self.commit()  # a pending one no loss check has reached (a loop that checks none) is kept as it is
        self.pending = (step, _write_checkpoint(self.accelerator, self.output_dir, step, None, self.ema))

    def commit(self) -> Path | None:
        """Make the pending checkpoint final now; return its path (None if there was none)."""
        if self.pending is None:
            return None
        step, temporary = self.pending
        self.pending = None
        final = self.output_dir / f"checkpoint-{step}"
        if self.accelerator.is_main_process:
            _commit_checkpoint(self.output_dir, temporary, step, self.checkpoints_total_limit)
        return final

    def finish(self, step: int) -> Path:
        """The checkpoint of `step` at the end of the loop (done, a signal, a time budget): the pending one
        if it is for `step`, else a new one, committed at once since no later loss will test it."""
        if self.pending is None or self.pending[0] != step:
            self.save(step)
        final = self.commit()
        self.accelerator.wait_for_everyone()
        return final

    def check_losses(self, losses: dict[str, torch.Tensor], step: int, commit: bool = True) -> None:
        """`check_finite_losses` for the losses of `step` (computed from the weights after step - 1) on all
        processes; then commit the pending checkpoint (unless `commit=False`: more losses of this step are still
        to be checked). On a non-finite loss the pending checkpoint, whose weights gave it, is deleted and
        `NonFiniteLossError` names the newest safe checkpoint (one saved before step - 1)."""
        offenders = non_finite_losses(losses, self.accelerator)
        if offenders is None:
            if commit:
                self.commit()
            return
        discarded = ""
        if self.pending is not None:
            pending_step, temporary = self.pending
            self.pending = None
            if self.accelerator.is_main_process:
                shutil.rmtree(temporary, ignore_errors=True)
            discarded = f" checkpoint-{pending_step}, saved just before, was discarded: its weights gave this loss."
        # The loss of `step` came from the weights after step - 1: a checkpoint of that step (one committed
        # without a later loss check, e.g. the one this run resumed from) would reproduce it.
        checkpoints = list_checkpoints(self.output_dir)
        unsafe = [path.name for saved_step, path in checkpoints if saved_step >= step - 1]
        if unsafe:
            discarded += f" {', '.join(unsafe)} holds the weights that gave it."
        safe = next((path for saved_step, path in reversed(checkpoints) if saved_step < step - 1), None)
        if safe is None:
            advice = f" No checkpoint in {self.output_dir} is safe; start again"
        else:
            advice = (f" The newest safe checkpoint is {safe} (its weights gave finite losses); resume with "
                      f"--resume_from_checkpoint {safe}")
        raise NonFiniteLossError(f"non-finite loss at step {step}: {offenders}. Training stopped before the optimizer "
                                 f"step.{discarded}{advice}, e.g. with a lower learning rate or fp32/bf16 instead "
                                 "of fp16.")


def set_aside_later_checkpoints(output_dir: str | os.PathLike, step: int) -> Path | None:
    """Move the checkpoints after `step` into `<output_dir>/abandoned-<time>/`; return that folder (None if none).

    A run that starts at `step` (0 for a fresh start, or a resume from an earlier checkpoint) begins a new
    branch: later checkpoints belong to the run it replaces, and `--resume_from_checkpoint latest` must never
    pick them. They are moved, not deleted. Main process only, before training.
    """
    output_dir = Path(output_dir)
    later = [path for saved_step, path in list_checkpoints(output_dir) if saved_step > step]
    if not later:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, suffix = output_dir / f"abandoned-{stamp}", 1
    while folder.exists():
        folder, suffix = output_dir / f"abandoned-{stamp}-{suffix}", suffix + 1
    folder.mkdir()
    for path in later:
        os.replace(path, folder / path.name)
    logger.warning("this run starts at step %d: moved %s (a run that went past step %d) to %s, so that "
                   "--resume_from_checkpoint latest picks this run's checkpoints only",
                   step, ", ".join(path.name for path in later), step, folder)
    return folder


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step a checkpoint folder was saved at (from `training_state.json`, else its name)."""
    path = Path(path)
    state_file = path / TRAINING_STATE_FILE
    if state_file.is_file():
        return int(json.loads(state_file.read_text())["global_step"])
    match = CHECKPOINT_PATTERN.match(path.name)
    if match:
        return int(match.group(1))
    raise ValueError(f"cannot tell the step of checkpoint {path}: no {TRAINING_STATE_FILE} and the name is not "
                     f"checkpoint-<step>")


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None
                              ) -> tuple[Path, int] | None:
    """`--resume_from_checkpoint` -> `(checkpoint path, global step)`, or None to start fresh.

    `"latest"` picks the newest complete `checkpoint-<step>` in `output_dir` (None, with a log line,
    when there is none, so the same command starts or resumes a run). A path must be an existing
    checkpoint folder (`OSError` otherwise); a bare `checkpoint-<step>` name is looked up in `output_dir`.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        if not checkpoints:
            logger.info("no checkpoint in %s; starting a new run", output_dir)
            return None
        step, path = checkpoints[-1]
        return path, checkpoint_step(path)
    path = Path(resume_from_checkpoint)
    if not path.is_dir() and not path.is_absolute() and (Path(output_dir) / path).is_dir():
        path = Path(output_dir) / path
    if not path.is_dir():
        raise OSError(f"resume_from_checkpoint {resume_from_checkpoint!r} is not a checkpoint folder "
                      f"(nor 'latest'); checkpoints in {output_dir}: {[p.name for _, p in list_checkpoints(output_dir)]}")
    if path.name.startswith(TEMPORARY_PREFIX):
        raise ValueError(f"{path} is an incomplete checkpoint (an interrupted save); resume from a checkpoint-<step>")
    return path, checkpoint_step(path)


def resume_training(accelerator, output_dir: str | os.PathLike, resume_from_checkpoint: str | None,
                    max_train_steps: int, check_checkpoint=None, ema: EMAModel | None = None) -> int:
    """Start or resume a run in `output_dir`; return the global step it starts at (every process calls it).

    `--resume_from_checkpoint` is resolved (`resolve_resume_checkpoint`); a checkpoint past `max_train_steps`
    is refused (ValueError: the run would end before it starts); `check_checkpoint(path)` may refuse one
    saved with other settings (e.g. with or without EMA weights) before anything is loaded. Checkpoints after
    the starting step, which belong to a run this one replaces, are moved aside (`set_aside_later_checkpoints`).
    Then the state is loaded with `accelerator.load_state`, and `ema`'s with `load_ema_state`.
    """
    resumed = resolve_resume_checkpoint(output_dir, resume_from_checkpoint)
    step = 0
    if resumed is not None:
        path, step = resumed
        if step > max_train_steps:
            raise ValueError(f"--resume_from_checkpoint {resume_from_checkpoint} gives {path} at step {step}, past "
                             f"this run's last step {max_train_steps} (--max_train_steps, or the epochs): nothing to "
                             f"train. Give a last step of {step} or more, or resume from an earlier checkpoint: "
                             f"{[p.name for _, p in list_checkpoints(output_dir)]}")
        if check_checkpoint is not None:
            check_checkpoint(path)
    accelerator.wait_for_everyone()  # every process has resolved the checkpoint before any is moved
    if accelerator.is_main_process:
        set_aside_later_checkpoints(output_dir, step)
    accelerator.wait_for_everyone()
    if resumed is not None:
        accelerator.load_state(str(path))
        if ema is not None:
            load_ema_state(ema, path)
        if accelerator.is_main_process:
            logger.info("resuming from %s at step %d", path, step)
            if step == max_train_steps:
                logger.warning("%s is at the run's last step %d: no training left, only the final save", path, step)
    return step


def check_resume_setting(checkpoint: str | os.PathLike, flag: str, saved_with: bool, run_with: bool) -> None:
    """ValueError when a checkpoint was saved with `flag` on and this run has it off, or the other way round."""
    if saved_with != run_with:
        state = "with" if saved_with else "without"
        raise ValueError(f"{checkpoint} was saved {state} {flag} but this run is {'with' if run_with else 'without'} "
                         f"it; resume {state} {flag} (or start a new run in another --output_dir)")


def check_launch(accelerator) -> None:
    """Raise ValueError when the processes are not the run the launcher asked for.

    Both cases happen silently with accelerate 1.15 (see training/accelerate_configs/README.md): a
    `distributed_type: FSDP` config on the CPU becomes plain data parallelism (accelerate enables FSDP
    for accelerator devices only), and torchrun-started processes that accelerate does not join
    (`WORLD_SIZE` > 1 but one process each, e.g. a MULTI_GPU config without GPUs) would each train
    alone and overwrite each other's checkpoints.
    """
    from accelerate.utils import DistributedType

    fsdp_requested = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_requested and accelerator.distributed_type != DistributedType.FSDP:
        raise ValueError(f"the launch asked for FSDP but accelerate set up {accelerator.distributed_type} on "
                         f"{accelerator.device} (accelerate shards with FSDP on accelerator devices only); use a "
                         "non-FSDP config (e.g. --cpu --num_processes N) on this machine")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size != accelerator.num_processes:
        raise ValueError(f"WORLD_SIZE={world_size} processes were started but accelerate joined "
                         f"{accelerator.num_processes} ({accelerator.distributed_type} on {accelerator.device}); "
                         "they would train unconnected. Without GPUs set ACCELERATE_USE_CPU=true (gloo) or launch "
                         "with --cpu")


# ----------------------------------------------------------------------------------------------
# Stopping


class StopSignalGuard:
    """Context manager turning SIGINT/SIGTERM into a stop request the training loop honours between steps.

    ```python
    with StopSignalGuard() as guard:
        for batch in loader:
            ...one optimisation step...
            if guard.should_stop(accelerator):   # agreed by all processes
                break
    if guard.signal_name:
        exit_after_signal(accelerator, guard, checkpoints.finish(step), step)  # exit status 128 + signal
    ```
    All processes stop after the same step, also when only one of them got the signal (a scheduler
    stopping one rank, `kill` of one pid), and all exit with the same status. A second signal while
    stopping is logged and otherwise ignored (the first one already stops the run). Previous handlers
    are restored on exit. Only the main thread can install signal handlers; elsewhere the guard does nothing.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None  # after `should_stop` is True: the signal, on every process
        self._received: int = 0  # this process's signal number
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested:
            logger.warning("%s received again; still stopping after the current step", name)
            return
        self.requested = True
        self._received = signum
        self.signal_name = name
        logger.warning("%s received: finishing the current step, then saving a checkpoint and stopping", name)

    def __enter__(self) -> "StopSignalGuard":
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def absorb_signals(self) -> None:
        """Ignore SIGINT/SIGTERM from now until the process ends (`exit_after_signal`).

        torchrun sends SIGTERM to the other processes as soon as the first one exits: without this, a
        process still finishing its exit would die by that signal instead of exiting with the run's status.
        `SIG_IGN`, not a Python handler: the interpreter puts the default action back for Python handlers
        while it shuts down, and a SIGTERM then still killed the process (seen on a loaded 2-core machine).
        """
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                signal.signal(signum, signal.SIG_IGN)

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def should_stop(self, accelerator=None) -> bool:
        """True once any process received a signal (an all-reduce when several processes run); every
        process then knows which (`signal_name`, `exit_code`)."""
        received = self._received
        if accelerator is not None and accelerator.num_processes > 1:
            flag = torch.tensor([float(received)], device=accelerator.device)
            received = int(accelerator.reduce(flag, reduction="max").item())
        if received:
            self.requested = True
            self._received = received
            self.signal_name = signal.Signals(received).name
        return bool(received)

    @property
    def exit_code(self) -> int:
        """The shell's status for death by the signal: 143 for SIGTERM, 130 for SIGINT (0 before any)."""
        return 128 + self._received if self._received else 0


def exit_after_signal(accelerator, guard: StopSignalGuard, checkpoint: Path, step: int):
    """End a run stopped by `guard`'s signal: say where it was saved and how to resume, exit 128 + signal.

    Every process absorbs further signals before any of them exits, so all exit with the same status."""
    guard.absorb_signals()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        logger.warning("stopped by %s at step %d: saved %s (complete). Resume by running the same command with "
                       "--resume_from_checkpoint latest", guard.signal_name, step, checkpoint)
    end_training(accelerator, exit_code=guard.exit_code)  # several processes: each exits in there
    sys.exit(guard.exit_code)


# Backends whose communicators are released collectively: the group is destroyed before exiting. Any other
# (gloo, mpi) is left to the operating system.
_BACKENDS_DESTROYED_AT_EXIT = ("nccl", "xccl")


def end_training(accelerator, teardown_timeout: float = 60.0, exit_code: int = 0) -> None:
    """End a run once every process has saved its part. One process: `accelerator.end_training()`, and return.
    Several: every process passes a barrier, finishes its trackers and exits here with `exit_code`.

    Several processes never return: CI saw a finished two-process CPU run whose rank 1 never exited, past the
    final barrier, with a Python watchdog thread armed for 60 s still waiting 228 s later. The gloo teardown (the
    process group's shutdown, or the interpreter's finalisation after it, pytorch/pytorch#75097) was blocked
    while holding the GIL, where nothing written in Python runs again. By the barrier every output is written,
    so there is nothing left to tear down: a gloo group is left to the operating system, an NCCL one is
    destroyed (its communicators are released collectively), logs and standard streams are flushed, and
    `os._exit` skips the interpreter's finalisation. What still runs (a tracker's `finish`, NCCL's destroy) is
    under faulthandler's watchdog, a C thread that needs no GIL: a process still there `teardown_timeout` s
    later prints every thread's stack and exits 1, instead of hanging its launcher.
    """
    check_finite_number("teardown_timeout", teardown_timeout, minimum=0, exclusive_minimum=True)
    accelerator.wait_for_everyone()
    if accelerator.num_processes == 1:
        accelerator.end_training()
        return
    faulthandler.dump_traceback_later(teardown_timeout, exit=True)
    for tracker in accelerator.trackers:
        tracker.finish()
    backend = accelerator.state.backend or ""
    if any(name in backend for name in _BACKENDS_DESTROYED_AT_EXIT):
        accelerator.state.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def time_budget_spent(accelerator, run_start: float, max_train_seconds: float | None) -> bool:
    """Whether `max_train_seconds` of wall clock have passed since `run_start` (`time.perf_counter()`).

    Every process must agree, as for signals: the main process's clock decides (one reduction per call,
    made only when a budget is set)."""
    if max_train_seconds is None:
        return False
    spent = accelerator.is_main_process and time.perf_counter() - run_start > max_train_seconds
    flag = torch.tensor([1.0 if spent else 0.0], device=accelerator.device)
    return accelerator.reduce(flag, "max").item() > 0


def ignore_stop_signals(worker_id: int | None = None) -> None:
    """`DataLoader(worker_init_fn=...)`: workers ignore SIGINT/SIGTERM and leave them to the main process.

    Ctrl-C (and a scheduler's SIGTERM to the process group) reaches the workers too; a worker killed
    by it would crash the data loader in the middle of the step the guard lets finish. Workers still
    exit when the loader shuts down or the main process dies.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ----------------------------------------------------------------------------------------------
# Loss checks


def non_finite_losses(losses: dict[str, torch.Tensor], accelerator=None) -> str | None:
    """None when every loss is finite on every process (an all-reduce when several run), else which are not,
    with this process's values, e.g. `"loss (this process: {'loss': nan})"`."""
    values = torch.stack([loss.detach().float().reshape(()) for loss in losses.values()])
    bad = (~torch.isfinite(values)).float()
    if accelerator is not None and accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.to(accelerator.device), reduction="sum")
    if not bool(bad.sum() > 0):
        return None
    local = {name: float(value) for name, value in zip(losses, values.tolist())}
    offenders = [name for name, flag in zip(losses, bad.tolist()) if flag > 0]
    return f"{', '.join(offenders)} (this process: {local})"


def check_finite_losses(losses: dict[str, torch.Tensor], step: int, accelerator=None) -> None:
    """Raise `NonFiniteLossError` if any loss is NaN/inf on any process (all processes raise together).

    Call after the forward pass and before `backward`/`optimizer.step`, so the bad step changes nothing.
    (`CheckpointManager.check_losses` does this and also keeps the checkpoints consistent with it.)
    """
    offenders = non_finite_losses(losses, accelerator)
    if offenders is not None:
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {offenders}. Training stopped before the optimizer step; the last "
            "saved checkpoint is intact. Resume with --resume_from_checkpoint latest, e.g. with a lower learning "
            "rate or fp32/bf16 instead of fp16."
        )


# ----------------------------------------------------------------------------------------------
# Resuming the data order


def resume_position(global_step: int, gradient_accumulation_steps: int, num_batches_per_epoch: int) -> tuple[int, int]:
    """`(epoch, batches to skip in that epoch)` after `global_step` optimizer steps.

    Each optimizer step consumes `gradient_accumulation_steps` batches of each process's dataloader
    (`num_batches_per_epoch = len(prepared_dataloader)`); accelerate also steps at the end of an epoch,
    so an epoch is `steps_per_epoch(...)` optimizer steps.
    """
    check_positive_int("num_batches_per_epoch (batches in the dataloader)", num_batches_per_epoch)
    per_epoch = steps_per_epoch(num_batches_per_epoch, gradient_accumulation_steps)
    epoch, step_in_epoch = divmod(global_step, per_epoch)
    return epoch, step_in_epoch * gradient_accumulation_steps


def epoch_dataloader(accelerator, dataloader, epoch: int, skip_batches: int = 0):
    """The prepared `dataloader` set to `epoch` (its shuffle depends only on seed and epoch when the
    Accelerator was built with `DataLoaderConfiguration(use_seedable_sampler=True)`), without its first
    `skip_batches` batches."""
    if hasattr(dataloader, "set_epoch"):
        dataloader.set_epoch(epoch)
    if skip_batches:
        return accelerator.skip_first_batches(dataloader, skip_batches)
    return dataloader


def steps_per_epoch(num_batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    """Optimizer steps in one epoch (the last, partial accumulation window counts as a step)."""
    return math.ceil(num_batches_per_epoch / gradient_accumulation_steps)
