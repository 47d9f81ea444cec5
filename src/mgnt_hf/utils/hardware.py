"""Which mixed precision to train in on this machine.

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
