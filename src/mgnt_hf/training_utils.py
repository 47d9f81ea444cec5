"""What every training script of the project shares: checkpoints, resuming, stopping, loss checks.

- `save_checkpoint`: `accelerator.save_state` into `<output_dir>/.tmp-checkpoint-<step>`, then one
  atomic rename to `checkpoint-<step>`: a checkpoint folder is complete or absent. Older ones are
  rotated out (after the new one exists) to keep `checkpoints_total_limit`.
- `resolve_resume_checkpoint`: `--resume_from_checkpoint latest|PATH` -> `(path, step)`; temporary
  folders of interrupted saves are never picked (and `remove_incomplete_checkpoints` deletes them).
- `StopSignalGuard`: SIGINT/SIGTERM set a flag; the loop finishes its step, the flag is agreed
  on by all processes, and the script stops cleanly (nothing half-written).
- `check_finite_losses`: raise `NonFiniteLossError` on NaN/inf on any process, before the
  optimizer step, so the weights and the last checkpoint stay good.
- `resume_position` / `epoch_dataloader`: with accelerate's seedable sampler every epoch's order
  depends only on the seed and the epoch; after a resume the already-seen batches of the current
  epoch are skipped (`accelerator.skip_first_batches`), so the data order equals an uninterrupted run.
- `check_launch`: refuse a launch accelerate did not set up as configured (processes that would
  train unconnected, an FSDP config that would run unsharded) before anything is written.
- `EMAModel`: diffusers' exponential moving average of weights, re-exported for the scripts;
  register it with `accelerator.register_for_checkpointing(ema)` so checkpoints include it.

The layout (`checkpoint-<step>` folders with `training_state.json`) matches diffusers' example
scripts, so their habits (`--resume_from_checkpoint latest`) carry over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel  # noqa: F401  (re-exported for training scripts)

from .utils.checks import check_positive_int

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TEMPORARY_PREFIX = ".tmp-"
TRAINING_STATE_FILE = "training_state.json"


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before the optimizer step so no weight is touched."""


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


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int,
                    checkpoints_total_limit: int | None = None, extra_state: dict | None = None) -> Path:
    """Save the full training state at `step` as `<output_dir>/checkpoint-<step>`, atomically.

    Call on every process (accelerate's `save_state` writes per-process RNG states). `output_dir`
    must be a file system all processes share, as for `save_state` itself. `extra_state` (JSON) is
    stored in `training_state.json` beside `global_step`.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    temporary = output_dir / f"{TEMPORARY_PREFIX}checkpoint-{step}"
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {"global_step": int(step), **(extra_state or {})}
        (temporary / TRAINING_STATE_FILE).write_text(json.dumps(state, indent=2))
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
    accelerator.wait_for_everyone()
    return final


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
                break                            # then save, or just exit: nothing is half-written
    ```
    A second signal while stopping is logged and otherwise ignored (the first one already stops the run).
    Previous handlers are restored on exit. Only the main thread can install signal handlers; elsewhere
    the guard does nothing.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)):
        self.signals = signals
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested:
            logger.warning("%s received again; still stopping after the current step", name)
            return
        self.requested = True
        self.signal_name = name
        logger.warning("%s received: finishing the current step, then stopping cleanly", name)

    def __enter__(self) -> "StopSignalGuard":
        import threading

        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        return False

    def should_stop(self, accelerator=None) -> bool:
        """True once any process received a signal (an all-reduce when several processes run)."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


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


def check_finite_losses(losses: dict[str, torch.Tensor], step: int, accelerator=None) -> None:
    """Raise `NonFiniteLossError` if any loss is NaN/inf on any process (all processes raise together).

    Call after the forward pass and before `backward`/`optimizer.step`, so the bad step changes nothing.
    """
    values = torch.stack([loss.detach().float().reshape(()) for loss in losses.values()])
    bad = (~torch.isfinite(values)).float()
    if accelerator is not None and accelerator.num_processes > 1:
        bad = accelerator.reduce(bad.to(accelerator.device), reduction="sum")
    if bool(bad.sum() > 0):
        local = {name: float(value) for name, value in zip(losses, values.tolist())}
        offenders = [name for name, flag in zip(losses, bad.tolist()) if flag > 0]
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {', '.join(offenders)} (this process: {local}). Training stopped "
            "before the optimizer step; the last saved checkpoint is intact. Resume with "
            "--resume_from_checkpoint latest, e.g. with a lower learning rate or fp32/bf16 instead of fp16."
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
