"""utils.hardware: the training precision follows the hardware."""

import pytest

from mgnt_hf.utils.hardware import cpu_flags, default_mixed_precision


def write_cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: " + " ".join(flags) + "\n\n"
                    "processor\t: 1\nflags\t\t: " + " ".join(flags) + "\n")
    return path


def test_cpu_flags_reads_the_flags_lines(tmp_path):
    assert cpu_flags(write_cpuinfo(tmp_path, ["sse4_2", "avx512f"])) == {"sse4_2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == set()


@pytest.mark.parametrize("flags", [["avx512f", "amx_bf16", "amx_tile"], ["avx512f", "avx512_bf16"]])
def test_a_cpu_with_bf16_matmuls_trains_in_bf16(tmp_path, flags):
    precision, reason = default_mixed_precision("cpu", write_cpuinfo(tmp_path, flags))
    assert precision == "bf16" and ("amx_bf16" in reason or "avx512_bf16" in reason)


def test_a_cpu_without_them_trains_in_fp32(tmp_path):
    precision, reason = default_mixed_precision("cpu", write_cpuinfo(tmp_path, ["avx2", "avx512f"]))
    assert precision == "no" and "fp32" in reason


def test_bad_device_is_refused():
    with pytest.raises(ValueError, match="device must be None, 'cuda' or 'cpu', got 'tpu'"):
        default_mixed_precision("tpu")
