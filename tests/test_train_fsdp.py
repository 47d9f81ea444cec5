"""training/train_mgnt.py under the shipped accelerate configs on the CPU: FSDP2 (fsdp_cpu_2.yaml, the twin of
fsdp_8.yaml) and two "machines" over loopback (multi_node.yaml).

accelerate 1.15 enables FSDP for accelerator devices only: on the CPU an FSDP config runs as plain data
parallelism (or, without ACCELERATE_USE_CPU, as unconnected single processes). Which one this machine does is
probed first; the FSDP training test runs where accelerate really shards, and the refusal test where it does not.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from mgnt_hf import MGNTPipeline
from test_train_mgnt import SCRIPT, train_arguments, workspace  # noqa: F401  (workspace is a fixture)

CONFIGS = SCRIPT.parent / "accelerate_configs"
# One write per line: both processes share the pipe, and print() writes its pieces one by one (they interleaved).
PROBE = """import sys
from accelerate import Accelerator
accelerator = Accelerator()
sys.stdout.write(f"launch-probe {accelerator.distributed_type} {accelerator.num_processes}\\n")
sys.stdout.flush()
"""


def free_port():
    with socket.socket() as probe:  # other runs on this host may hold accelerate's default port 29500
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_command(config_file, *options, port=None):
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config_file),
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port or free_port()),
            *options]


def environment(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run(command, **extra):
    return subprocess.run(command, capture_output=True, text=True, env=environment(**extra), timeout=300)


def failure(result):
    return f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


@pytest.fixture(scope="module")
def fsdp_on_cpu(tmp_path_factory):
    """Whether `accelerate launch --config_file fsdp_cpu_2.yaml` gives 2 processes sharding with FSDP here."""
    probe = tmp_path_factory.mktemp("probe") / "probe.py"
    probe.write_text(PROBE)
    result = run([*launch_command("fsdp_cpu_2.yaml"), str(probe)], ACCELERATE_USE_CPU="true")
    lines = sorted(line for line in result.stdout.splitlines() if line.startswith("launch-probe"))
    assert len(lines) == 2, failure(result)
    return lines == ["launch-probe DistributedType.FSDP 2"] * 2, lines


def test_fsdp_nested_training_resumes_bit_identically(workspace, tmp_path, fsdp_on_cpu):  # noqa: F811
    sharded, probe_lines = fsdp_on_cpu
    if not sharded:
        pytest.skip(f"accelerate does not run FSDP on the CPU here (fsdp_cpu_2.yaml gives {probe_lines})")
    uninterrupted, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"
    common = ("--max_train_steps", "4", "--checkpointing_steps", "2")
    command = launch_command("fsdp_cpu_2.yaml")
    result = run([*command, str(SCRIPT), *train_arguments(workspace, uninterrupted, *common)],
                 ACCELERATE_USE_CPU="true")
    assert result.returncode == 0, failure(result)
    resumed.mkdir()
    os.system(f"cp -r {uninterrupted / 'checkpoint-2'} {resumed / 'checkpoint-2'}")
    result = run([*command, str(SCRIPT), *train_arguments(workspace, resumed, *common, "--resume_from_checkpoint",
                                                           "latest")], ACCELERATE_USE_CPU="true")
    assert result.returncode == 0, failure(result)
    assert "at step 2" in result.stdout + result.stderr
    expected = load_file(uninterrupted / "transformer" / "model.safetensors")
    actual = load_file(resumed / "transformer" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:  # the gathered full weights, saved by the main process
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert MGNTPipeline.from_pretrained(resumed).transformer.config.nested_widths == (8, 16, 32, 64)


def test_an_fsdp_launch_accelerate_does_not_shard_is_refused(workspace, tmp_path, fsdp_on_cpu):  # noqa: F811
    sharded, _ = fsdp_on_cpu
    if sharded:
        pytest.skip("accelerate runs FSDP on the CPU here; the FSDP training test covers it")
    output = tmp_path / "run"
    result = run([*launch_command("fsdp_cpu_2.yaml"), str(SCRIPT),
                  *train_arguments(workspace, output, "--max_train_steps", "2")], ACCELERATE_USE_CPU="true")
    assert result.returncode != 0
    assert "the launch asked for FSDP but accelerate set up DistributedType.MULTI_CPU" in result.stderr
    assert not list(output.glob("checkpoint-*"))


def test_two_machines_over_loopback_train_as_one_run(workspace, tmp_path):  # noqa: F811
    output = tmp_path / "run"
    arguments = train_arguments(workspace, output, "--max_train_steps", "2", "--checkpointing_steps", "2")
    port = free_port()
    machines = [subprocess.Popen(
        [*launch_command("multi_node.yaml", "--num_machines", "2", "--num_processes", "2", "--machine_rank",
                         str(rank), "--main_process_ip", "127.0.0.1", port=port),
         str(SCRIPT), *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(ACCELERATE_USE_CPU="true"))
        for rank in (0, 1)]
    for machine in machines:
        stdout, stderr = machine.communicate(timeout=300)
        assert machine.returncode == 0, f"exit {machine.returncode}:\n{stdout[-3000:]}\n{stderr[-5000:]}"
    # One run of 2 processes: one checkpoint with both processes' RNG states, one saved pipeline.
    checkpoint = output / "checkpoint-2"
    assert sorted(p.name for p in checkpoint.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                              "random_states_1.pkl"]
    assert MGNTPipeline.from_pretrained(output).transformer.config.nested_widths == (8, 16, 32, 64)
