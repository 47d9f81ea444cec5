"""Smoke test of benchmarks/speed.py on a tiny model: the harness runs and reports consistent rows.

No timing assertions (a benchmark, not a timed test); only what the harness promises about its output.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from mgnt_hf import MGNTConfig

SPEED_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
TINY_OVERRIDES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, intermediate_size=128,
                      token_grid=[4, 4], codebook_size=16, num_classes=3)


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("benchmark_speed", SPEED_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(speed, tmp_path_factory):
    output = tmp_path_factory.mktemp("speed") / "speed.json"
    returned = speed.main(["--device", "cpu", "--threads", "1", "--presets", "S", "--batch-sizes", "2",
                           "--runs", "1", "--warmup", "0", "--output", str(output),
                           "--config-overrides", json.dumps(TINY_OVERRIDES)])
    return returned, json.loads(output.read_text())


def test_one_row_per_setting_with_its_ratios_to_the_baseline(result):
    returned, written = result
    assert written == json.loads(json.dumps(returned))
    rows = {row["setting"]: row for row in written["rows"]}
    assert list(rows) == ["baseline", "magnets-nocache", "magnets-cache"]
    assert rows["baseline"]["flops_ratio"] == 1.0 and rows["baseline"]["speedup_best"] == 1.0
    for row in rows.values():
        assert row["batch_size"] == 2 and row["threads"] == 1 and len(row["seconds"]) == 1
        # the timed forwards are part of each decode, and sampling and guidance take some time too
        assert len(row["outside_forward_shares"]) == 1 and 0 < row["outside_forward_share_median"] < 1
        assert row["flops_ratio"] == pytest.approx(rows["baseline"]["gflops_per_image"] / row["gflops_per_image"])
        assert row["speedup_best"] == pytest.approx(rows["baseline"]["best_s"] / row["best_s"])
    # the default schedule saves compute, and the cache saves more (analytic counts of the pipeline)
    assert 1 < rows["magnets-nocache"]["flops_ratio"] < rows["magnets-cache"]["flops_ratio"]
    assert rows["baseline"]["full_passes"] == rows["magnets-nocache"]["full_passes"] == 12
    assert rows["magnets-cache"]["full_passes"] == 4  # one per width


def test_kv_cache_size_is_one_layer_stack_for_both_guidance_branches(result):
    rows = {row["setting"]: row for row in result[1]["rows"]}
    config = MGNTConfig.from_preset("S", **TINY_OVERRIDES)
    # keys and values, every layer, 2 x 2 sequences (guidance), all heads, class token + 16 positions, float32
    expected = 2 * config.num_hidden_layers * 4 * config.num_attention_heads * 17 * config.head_dim * 4
    assert rows["magnets-cache"]["kv_cache_mb"] * 2**20 == expected
    assert rows["baseline"]["kv_cache_mb"] == rows["magnets-nocache"]["kv_cache_mb"] == 0


def test_conditions_and_memory_are_recorded(result):
    conditions = result[1]["conditions"]
    assert conditions["device"] == "cpu" and conditions["dtype"] == "float32" and conditions["threads"] == 1
    assert conditions["num_inference_steps"] == 12 and conditions["guidance_scale"] == 2.0
    for row in result[1]["rows"]:
        assert row["decode_peak_mb"] >= 0 and row["weights_mb"] > 0 and row["memory_method"]


def test_markdown_table_has_a_line_per_row(speed, result):
    rows = result[1]["rows"]
    table = speed.markdown_table(rows).splitlines()
    assert table[0].startswith("| preset | batch | setting |") and set(table[1]) == {"|", "-"}
    assert len(table) == 2 + len(rows)
    assert "| S | 2 | magnets-cache |" in table[-1]


@pytest.mark.parametrize("argv, message", [
    (["--runs", "0"], "--runs must be >= 1"),
    (["--batch-sizes", "0"], "--batch-sizes must be positive"),
    (["--threads", "0"], "--threads must be >= 1"),
])
def test_bad_arguments_raise(speed, argv, message):
    with pytest.raises(ValueError, match=message):
        speed.parse_args(["--device", "cpu", *argv])
