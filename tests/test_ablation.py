"""The nested-training ablation driver (training/ablations/nested_fashion_mnist.py): what each row runs and
how the table is written. The rows themselves are hours of CPU; they are not run here."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "training" / "ablations" / "nested_fashion_mnist.py"


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("nested_fashion_mnist", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def flag_values(command, flag):
    return [command[i + 1] for i, item in enumerate(command) if item == flag]


def test_every_row_changes_only_its_own_setting(ablation, tmp_path):
    args = ablation.parse_args(["--output_dir", str(tmp_path)])
    baseline = ablation.train_command(args, "baseline", tmp_path / "c.json")
    for name, (_, training, overrides) in ablation.ROWS.items():
        command = ablation.train_command(args, name, tmp_path / "c.json")
        for flag in ("--seed", "--distillation_weight", "--distill_from", "--widths_per_step", "--mask_schedule",
                     "--ema_decay", "--max_train_steps", "--train_batch_size", "--learning_rate"):
            assert len(flag_values(command, flag)) == 1, (name, flag)  # never a flag given twice
        differing = {flag for flag in set(command) | set(baseline) if flag.startswith("--")
                     and flag_values(command, flag) != flag_values(baseline, flag)}
        assert differing <= {"--output_dir", *(f"--{key}" for key in training)}, (name, differing)
        assert bool(differing - {"--output_dir"}) or bool(overrides) or name == "baseline", name
    weighted = ablation.train_command(args, "small-widths-weighted", tmp_path / "c.json")
    start = weighted.index("--width_loss_weights")
    assert weighted[start + 1 : start + 5] == ["2.0", "1.5", "1.25", "1.0"]


def test_the_table_is_rewritten_but_notes_below_the_marker_are_kept(ablation, tmp_path):
    row = {"name": "baseline", "description": "the baseline", "train_wall_seconds": 600.0,
           "heldout_cross_entropy": {"16": 3.5, "128": 3.0},
           "samples": {key: {"classifier_fid": 10.0 + i, "class_accuracy": 0.5} for i, key in
                       enumerate(ablation.EVAL_ROWS)}}
    settings = {"proxy_config": ablation.PROXY_CONFIG, "max_train_steps": 200, "train_batch_size": 128,
                "learning_rate": 1e-3, "lr_warmup_steps": 20, "threads": 1, "machine": "cpu", "heldout_images": 2000,
                "samples_per_class": 30, "eval_seed": 100000}
    path = tmp_path / "ablation.md"
    ablation.write_markdown(path, ablation.format_table([row]), settings)
    text = path.read_text()
    assert "| baseline | the baseline | 3.500 | 3.000 | 10.00 | 11.00 | 12.00 | 50.0% | 10.0 |" in text
    path.write_text(text + "\nWhat the rows say.\n")
    ablation.write_markdown(path, ablation.format_table([{**row, "name": "again"}]), settings)
    text = path.read_text()
    assert "| again |" in text and "| baseline |" not in text
    assert text.endswith("\nWhat the rows say.\n")
    json.dumps(settings)  # the settings block is what ablation.json records
