"""Which device to run on, and which mixed precision to train in on this machine.

`resolve_device` turns a device name (or None) into a `torch.device` that this machine has, or a `ValueError`.

bf16 autocast pays only where the hardware has bf16 matmuls: CUDA devices that support it, and CPUs with AMX
(`amx_bf16`) or `avx512_bf16`. On a CPU without them torch emulates bf16 and a training step runs about 4x slower
than in fp32 (docs/design.md, "Training"), so the default there is fp32 (`"no"`).
"""

from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where `/proc/cpuinfo` is not readable, e.g. not Linux)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return flags


def default_mixed_precision(device: str | None = None, cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, str]:
    """`(mixed_precision, reason)` for accelerate: `"bf16"` on a bf16-capable CUDA device or CPU, else `"no"`.

    `device` `"cuda"` or `"cpu"` asks about that device; None takes CUDA when it is available.
    """
    if device not in (None, "cuda", "cpu"):
        raise ValueError(f"device must be None, 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" or (device is None and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA device")
        name = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported():
            return "bf16", f"CUDA device {name} supports bf16"
        return "no", f"CUDA device {name} has no bf16 support"
    present = sorted(set(CPU_BF16_FLAGS) & cpu_flags(cpuinfo))
    if present:
        return "bf16", f"CPU with {', '.join(present)}"
    return "no", "CPU without amx_bf16 or avx512_bf16: bf16 autocast would be about 4x slower than fp32"


def resolve_device(device=None, name: str = "device") -> torch.device:
    """`device` (a name such as `"cpu"`, `"cuda"`, `"cuda:1"`, `"mps"`, or a `torch.device`) as a `torch.device`
    that exists here; None picks cuda when available, else cpu. `ValueError` (naming the argument `name`) for a
    name torch does not know or a device this machine does not have, instead of torch's errors at first use."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name} {device!r} is not a device; allowed: cpu, cuda, cuda:N, mps ({error})") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {device!r}: torch sees no CUDA device here (torch.cuda.is_available() is False; "
                             f"torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {device!r}: this machine has {torch.cuda.device_count()} CUDA devices; allowed: "
                             f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name} {device!r}: torch sees no MPS device here; use cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{name} {device!r}: mgnt_hf runs on cpu, cuda or mps, not {resolved.type}")
    return resolved
