"""Wall-clock speed of MaGNeTS decoding against the MaskGIT baseline, next to the FLOP saving.

Each row is one (preset, batch size, setting) decode of ImageNet-256-shaped transformers with random
weights (16x16 tokens, 1024 codes, 1000 classes, nested widths D/8..D; `MGNTConfig.from_preset`), 12 steps,
classifier-free guidance on (both branches run), tokens only (`output_type="latent"`: the VQ decoder is
the same for every setting and is not timed). Settings:

    baseline         full width every step, no KV cache (MaskGIT)
    magnets-nocache  the default width schedule, every step a full pass
    magnets-cache    the default width schedule with the KV cache (the pipeline's default)

Every row runs in a fresh subprocess, so rows do not share allocator state and peak memory is per row.
Inside it: build the model, one decode whose peak memory is recorded (it is also the warm-up; more
warm-up decodes with `--warmup`), then `--runs` timed decodes (`time.perf_counter`, CUDA synchronised).
Reported: median and best images/s, GFLOPs/image (the pipeline's analytic count, 2 x multiply-adds),
peak memory, and each MaGNeTS row's ratios to the baseline row of the same preset and batch size.

`outside forward` is the median, over `--runs` more decodes with timing hooks on the transformer, of the
share of the decode's wall-clock spent outside `MGNTTransformer.forward` (sampling, guidance, cache
bookkeeping, Python): the per-step overhead that does not shrink with the width.

Peak memory (`decode_peak_mb`) is what one decode adds on top of the loaded model: on CUDA
`torch.cuda.max_memory_allocated()` minus `memory_allocated()` before it; on CPU the resident set high-water
mark (`VmHWM` of /proc/self/status, reset by writing 5 to /proc/self/clear_refs just before the decode)
minus `VmRSS` before it. The CPU figure counts the allocator's pages, so it is an upper bound on the
tensors alive at the peak. `kv_cache_mb` is the size of the cache's storage (keys and values of every layer
for every position at full width, both guidance branches), allocated once per decode.

Usage:

    python benchmarks/speed.py --device cpu --threads 1 --presets S --batch-sizes 2 --runs 7
    python benchmarks/speed.py --device cuda --dtype bfloat16 --presets S B L XL --batch-sizes 1 8 32

The table is printed as markdown; `--output` writes the rows and the conditions as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SETTINGS = {
    "baseline": dict(width_schedule="maskgit", use_cache=False),
    "magnets-nocache": dict(width_schedule="magnets", use_cache=False),
    "magnets-cache": dict(width_schedule="magnets", use_cache=True),
}
PRESETS = ("S", "B", "L", "XL")
DTYPES = ("float32", "bfloat16", "float16")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# ---------------------------------------------------------------- memory probes


def _proc_status_kib(field: str) -> int:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if match is None:
        raise OSError(f"/proc/self/status has no {field} line")
    return int(match.group(1))


class _CpuPeakMemory:
    """Peak resident memory added by a block of code: VmHWM (reset through clear_refs) minus VmRSS before."""

    method = "VmHWM after clear_refs minus VmRSS before (Linux /proc)"

    def __enter__(self):
        self.before_kib = _proc_status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # reset the high-water mark to the current RSS
        return self

    def __exit__(self, *exc):
        self.peak_bytes = (_proc_status_kib("VmHWM") - self.before_kib) * 1024
        return False


class _CudaPeakMemory:
    method = "torch.cuda.max_memory_allocated minus memory_allocated before"

    def __init__(self, torch, device):
        self.torch, self.device = torch, device

    def __enter__(self):
        self.torch.cuda.synchronize(self.device)
        self.before = self.torch.cuda.memory_allocated(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        self.torch.cuda.synchronize(self.device)
        self.peak_bytes = self.torch.cuda.max_memory_allocated(self.device) - self.before
        return False


# ---------------------------------------------------------------- one row (runs in its own process)


def build_pipeline(preset: str, device: str, dtype: str, seed: int = 0, config_overrides: dict | None = None):
    """A token-only `MGNTPipeline` around a randomly initialised transformer of `preset`."""
    import torch

    from mgnt_hf import MGNTConfig, MGNTPipeline, MGNTScheduler, MGNTTransformer

    torch.manual_seed(seed)
    config = MGNTConfig.from_preset(preset, **(config_overrides or {}))
    transformer = MGNTTransformer(config).eval().to(device=device, dtype=getattr(torch, dtype))
    pipe = MGNTPipeline(transformer=transformer, vqvae=None, scheduler=MGNTScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def measure_row(preset: str, batch_size: int, setting: str, device: str, dtype: str, threads: int | None,
                runs: int, warmup: int, num_steps: int, guidance_scale: float, compile_mode: str = "none",
                config_overrides: dict | None = None) -> dict:
    """Time `runs` decodes of `batch_size` images for one setting; see the module docstring."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    pipe = build_pipeline(preset, device, dtype, config_overrides=config_overrides)
    transformer = pipe.transformer
    if compile_mode != "none":
        pipe.enable_compiled_layers(mode=compile_mode)  # each layer; checks and cache bookkeeping stay eager
    labels = [index % transformer.config.num_classes for index in range(batch_size)]
    is_cuda = torch.device(device).type == "cuda"

    forward_seconds = [0.0]  # time inside MGNTTransformer.forward during the current decode
    forward_started = []

    def before_forward(module, args, kwargs):
        if is_cuda:
            torch.cuda.synchronize(device)
        forward_started.append(time.perf_counter())

    def after_forward(module, args, kwargs, output):
        if is_cuda:
            torch.cuda.synchronize(device)
        forward_seconds[0] += time.perf_counter() - forward_started.pop()

    # Timing hooks, so each decode also says how much of it is outside the network. On CUDA they synchronise
    # around every forward, which is itself overhead: the share is attribution, the images/s come from
    # separate decodes without hooks.
    def decode_with_forward_time():
        handles = [transformer.register_forward_pre_hook(before_forward, with_kwargs=True),
                   transformer.register_forward_hook(after_forward, with_kwargs=True)]
        forward_seconds[0] = 0.0
        try:
            start = time.perf_counter()
            decode()
            return time.perf_counter() - start, forward_seconds[0]
        finally:
            for handle in handles:
                handle.remove()

    def decode():
        output = pipe(labels, num_inference_steps=num_steps, guidance_scale=guidance_scale, output_type="latent",
                      generator=torch.Generator(device).manual_seed(0), **SETTINGS[setting])
        if is_cuda:
            torch.cuda.synchronize(device)
        return output

    probe = _CudaPeakMemory(torch, device) if is_cuda else _CpuPeakMemory()
    first_start = time.perf_counter()
    with probe:
        output = decode()
    first_call_s = time.perf_counter() - first_start
    for _ in range(warmup):
        decode()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        decode()
        times.append(time.perf_counter() - start)
    outside_shares = []
    for _ in range(runs):
        decode_s, forward_s = decode_with_forward_time()
        outside_shares.append(1.0 - forward_s / decode_s)

    model_batch = batch_size * (2 if guidance_scale != 1 else 1)  # both guidance branches share one cache
    kv_cache_bytes = transformer.new_cache(model_batch).nbytes if SETTINGS[setting]["use_cache"] else 0
    return {
        "preset": preset,
        "batch_size": batch_size,
        "setting": setting,
        "seconds": times,
        "median_s": statistics.median(times),
        "best_s": min(times),
        "images_per_s_median": batch_size / statistics.median(times),
        "images_per_s_best": batch_size / min(times),
        "first_call_s": first_call_s,
        "outside_forward_shares": outside_shares,
        "outside_forward_share_median": statistics.median(outside_shares),
        "gflops_per_image": output.gflops_per_image,
        "full_passes": sum(output.full_passes),
        "decode_peak_mb": probe.peak_bytes / 2**20,
        "memory_method": probe.method,
        "weights_mb": sum(p.numel() * p.element_size() for p in transformer.parameters()) / 2**20,
        "kv_cache_mb": kv_cache_bytes / 2**20,
        "tokens_checksum": int(output.images.long().sum()),
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------- driver


def add_ratios(rows: list[dict]) -> None:
    """Speed-up (best and median) and FLOP ratio of each row against the baseline row of its preset and batch."""
    baselines = {(row["preset"], row["batch_size"]): row for row in rows if row["setting"] == "baseline"}
    for row in rows:
        base = baselines.get((row["preset"], row["batch_size"]))
        if base is None:
            continue
        row["speedup_best"] = base["best_s"] / row["best_s"]
        row["speedup_median"] = base["median_s"] / row["median_s"]
        row["flops_ratio"] = base["gflops_per_image"] / row["gflops_per_image"]
        row["speedup_over_flops_ratio"] = row["speedup_best"] / row["flops_ratio"]


def markdown_table(rows: list[dict]) -> str:
    header = ("| preset | batch | setting | images/s (median) | images/s (best) | GFLOPs/image | FLOP ratio | "
              "speed-up (best) | speed-up (median) | speed-up / FLOP ratio | outside forward | peak MB (decode) | "
              "KV cache MB |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        def ratio(key, fmt="{:.2f}x"):
            return fmt.format(row[key]) if key in row else "n/a"
        lines.append(
            f"| {row['preset']} | {row['batch_size']} | {row['setting']} | {row['images_per_s_median']:.3f} | "
            f"{row['images_per_s_best']:.3f} | {row['gflops_per_image']:.4g} | {ratio('flops_ratio')} | "
            f"{ratio('speedup_best')} | {ratio('speedup_median')} | {ratio('speedup_over_flops_ratio', '{:.0%}')} | "
            f"{row['outside_forward_share_median']:.0%} | {row['decode_peak_mb']:.0f} | {row['kv_cache_mb']:.1f} |"
        )
    return "\n".join(lines)


def conditions(args) -> dict:
    import torch

    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.MULTILINE)
        cpu_model = match.group(1).strip() if match else cpu_model
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "num_inference_steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "runs": args.runs,
        "warmup": args.warmup,
        "compile": args.compile,
    }
    if args.device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(args.device)
    return info


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["S"], choices=PRESETS)
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                        help="images per decode (default: 1 8 32 on CUDA, 1 2 on CPU)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=DTYPES,
                        help="model and cache dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads in each row's process (default: torch's own choice)")
    parser.add_argument("--runs", type=int, default=5, help="timed decodes per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed decodes after the memory-measuring one")
    parser.add_argument("--steps", type=int, default=12, help="decoding steps")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="1 turns guidance off")
    parser.add_argument("--compile", default="none", choices=COMPILE_MODES,
                        help="torch.compile each transformer layer with this mode (opt-in; 'reduce-overhead' "
                             "uses CUDA graphs on CUDA)")
    parser.add_argument("--output", type=Path, default=None, help="write rows and conditions as JSON here")
    parser.add_argument("--config-overrides", type=json.loads, default=None,
                        help="JSON dict of MGNTConfig overrides (e.g. a tiny model for a smoke test)")
    parser.add_argument("--_row", type=json.loads, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8, 32] if args.device.startswith("cuda") else [1, 2]
    for name, value, minimum in (("--runs", args.runs, 1), ("--warmup", args.warmup, 0), ("--steps", args.steps, 1),
                                 ("--threads", args.threads if args.threads is not None else 1, 1)):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if any(size < 1 for size in args.batch_sizes):
        raise ValueError(f"--batch-sizes must be positive, got {args.batch_sizes}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device} asked for, but torch sees no CUDA device")
    return args


def row_arguments(args, preset: str, batch_size: int, setting: str) -> dict:
    return dict(preset=preset, batch_size=batch_size, setting=setting, device=args.device, dtype=args.dtype,
                threads=args.threads, runs=args.runs, warmup=args.warmup, num_steps=args.steps,
                guidance_scale=args.guidance_scale, compile_mode=args.compile,
                config_overrides=args.config_overrides)


def run_row_in_subprocess(row_args: dict) -> dict:
    environment = dict(os.environ)
    if row_args["threads"] is not None:  # OpenMP reads this before torch starts
        environment["OMP_NUM_THREADS"] = str(row_args["threads"])
    completed = subprocess.run([sys.executable, __file__, "--_row", json.dumps(row_args)], env=environment,
                               capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"row {row_args} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args._row is not None:
        print(json.dumps(measure_row(**args._row)))
        return {}
    rows = []
    for preset in args.presets:
        for batch_size in args.batch_sizes:
            for setting in args.settings:
                row = run_row_in_subprocess(row_arguments(args, preset, batch_size, setting))
                rows.append(row)
                print(f"{preset} batch {batch_size} {setting}: median {row['median_s']:.3f}s best {row['best_s']:.3f}s",
                      file=sys.stderr, flush=True)
    add_ratios(rows)
    result = {"conditions": conditions(args), "rows": rows}
    print(markdown_table(rows))
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
