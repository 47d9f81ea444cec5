"""The image runner (`mgnt_hf.evaluation.evaluate_pipeline`, `mgnt evaluate`, `benchmarks/quality.py`) on a tiny
random pipeline and classifier."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_tiny_transformer, make_tiny_vqvae
from evaluation_helpers import make_image_classifier, make_image_pipeline, make_reference
from mgnt_hf import cli, count_forward_flops
from mgnt_hf.evaluation import (
    FeatureStatistics,
    QualityRow,
    cached_reference_statistics,
    evaluate_pipeline,
    format_results_table,
    reference_statistics,
    tokenizer_reconstruction,
    write_results,
)

DEFAULT_ROW_NAMES = ["maskgit", "width-8", "width-16", "width-32", "default", "default+cache", "reverse+cache"]
SAMPLES_PER_CLASS = 4


@pytest.fixture(scope="module")
def results():
    reference, labels = make_reference()
    return evaluate_pipeline(make_image_pipeline(), make_image_classifier(), samples_per_class=SAMPLES_PER_CLASS,
                             batch_size=5, seed=3, device="cpu", reference=reference, reference_labels=labels,
                             progress=False)


def rows_by_name(results) -> dict:
    return {row["name"]: row for row in results["rows"]}


# ---------------------------------------------------------------- the evaluation


def test_every_row_is_scored_on_the_same_number_of_samples(results):
    assert [row["name"] for row in results["rows"]] == DEFAULT_ROW_NAMES
    for row in results["rows"]:
        assert row["num_samples"] == 3 * SAMPLES_PER_CLASS
        assert row["classifier_fid"] >= 0 and 0 <= row["class_accuracy"] <= 1
        assert row["seconds_per_image"] > 0
    assert results["settings"]["num_inference_steps"] == 12
    assert results["settings"]["guidance_scale"] == 2.0
    assert results["machine"]["torch_num_threads"] == torch.get_num_threads()


def test_maskgit_gflops_are_twelve_full_guided_passes_and_the_largest(results):
    config = make_tiny_transformer().config
    rows = rows_by_name(results)
    expected = 12 * count_forward_flops(config, 64, batch_size=2) / 1e9  # both guidance branches per image
    assert rows["maskgit"]["gflops_per_image"] == pytest.approx(expected, rel=1e-12)
    assert rows["width-8"]["gflops_per_image"] == pytest.approx(
        12 * count_forward_flops(config, 8, batch_size=2) / 1e9, rel=1e-12)
    assert all(row["gflops_per_image"] < expected for name, row in rows.items() if name != "maskgit")
    assert rows["default+cache"]["gflops_per_image"] < rows["default"]["gflops_per_image"]


def test_rows_run_their_schedules(results):
    rows = rows_by_name(results)
    assert rows["maskgit"]["step_widths"] == [64] * 12 and rows["maskgit"]["num_full_passes"] == 12
    assert rows["width-16"]["step_widths"] == [16] * 12
    assert rows["default"]["step_widths"] == [8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64]
    assert rows["default"]["num_full_passes"] == 12
    assert rows["default+cache"]["num_full_passes"] == 4  # one rebuild per width
    assert rows["reverse+cache"]["step_widths"] == rows["default"]["step_widths"][::-1]
    assert rows["reverse+cache"]["width_schedule"] == rows["default"]["width_schedule"][::-1]


def test_ratios_are_against_maskgit(results):
    rows = rows_by_name(results)
    assert results["baseline"] == "maskgit"
    base = rows["maskgit"]
    assert base["flops_ratio"] == 1.0 and base["fid_relative_difference"] == 0.0
    assert base["accuracy_difference_points"] == 0.0
    row = rows["default+cache"]
    assert row["flops_ratio"] == pytest.approx(base["gflops_per_image"] / row["gflops_per_image"])
    assert row["fid_relative_difference"] == pytest.approx(
        (row["classifier_fid"] - base["classifier_fid"]) / base["classifier_fid"])
    assert row["accuracy_difference_points"] == pytest.approx(100 * (row["class_accuracy"] - base["class_accuracy"]))


def test_tokenizer_and_real_image_floors_are_reported(results):
    assert results["tokenizer"]["num_images"] == 48
    assert results["tokenizer"]["mse"] > 0
    assert results["real_images"]["num_samples"] == 3 * SAMPLES_PER_CLASS


def test_the_same_seed_gives_identical_results_and_samples(tmp_path):
    reference, labels = make_reference()
    runs = []
    for name in ("a", "b"):
        runs.append(evaluate_pipeline(
            make_image_pipeline(), make_image_classifier(), rows=["maskgit", "default+cache"], samples_per_class=2, batch_size=4,
            seed=5, device="cpu", reference=reference, reference_labels=labels, progress=False,
            sample_grid_dir=tmp_path / name, grid_images_per_class=2))
    for first, second in zip(runs[0]["rows"], runs[1]["rows"]):
        for key in ("classifier_fid", "class_accuracy", "gflops_per_image", "step_widths"):
            assert first[key] == second[key]
        assert Image.open(first["sample_grid"]).tobytes() == Image.open(second["sample_grid"]).tobytes()


def test_a_different_seed_gives_different_samples(tmp_path):
    reference, labels = make_reference()
    fids = [evaluate_pipeline(make_image_pipeline(), make_image_classifier(), rows=["maskgit"], samples_per_class=2, seed=seed,
                              device="cpu", reference=reference, reference_labels=labels,
                              progress=False)["rows"][0]["classifier_fid"] for seed in (0, 1)]
    assert fids[0] != fids[1]


@pytest.mark.parametrize("arguments, message", [
    (dict(samples_per_class=0), "samples_per_class must be a positive integer, got 0"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(num_inference_steps=17), "num_inference_steps must be an integer in [1, 16]"),
    (dict(guidance_scale=-1.0), "guidance_scale must be a finite number >= 0"),
    (dict(rows=["maskgit", "maskgit"]), "row names must be unique"),
    (dict(rows=[]), "rows is empty"),
])
def test_bad_settings_are_refused(arguments, message):
    with pytest.raises(ValueError) as error:
        evaluate_pipeline(make_image_pipeline(), make_image_classifier(), device="cpu", progress=False,
                          reference=make_reference()[0], **arguments)
    assert message in str(error.value)


def test_rows_built_by_hand_run_at_their_own_step_count_next_to_named_rows():
    reference, labels = make_reference()
    own = QualityRow("half-6", [[0.5, 3], [1.0, 3]], use_cache=True, num_inference_steps=6)
    results = evaluate_pipeline(make_image_pipeline(), make_image_classifier(), rows=["maskgit", own],
                                samples_per_class=1, device="cpu", reference=reference, reference_labels=labels,
                                progress=False)
    maskgit, half = results["rows"]
    assert "num_inference_steps" not in maskgit and maskgit["step_widths"] == [64] * 12
    assert half["num_inference_steps"] == 6 and half["step_widths"] == [32, 32, 32, 64, 64, 64]
    assert half["num_full_passes"] == 2
    assert "| 0.5x3 1x3 |" in format_results_table(results)


def test_a_classifier_for_other_classes_is_refused():
    with pytest.raises(ValueError, match="the pipeline has 3 classes but the classifier 4"):
        evaluate_pipeline(make_image_pipeline(), make_image_classifier(num_labels=4), device="cpu", progress=False,
                          reference=make_reference()[0])


# ---------------------------------------------------------------- parts


def test_tokenizer_reconstruction_mse_and_fid_against_its_own_statistics():
    vqvae, classifier = make_tiny_vqvae(), make_image_classifier()
    pixels, labels = make_reference(20)
    reconstruction = vqvae.decode(vqvae.encode(pixels))
    own_statistics = reference_statistics(classifier, reconstruction)
    scores = tokenizer_reconstruction(vqvae, classifier, pixels, own_statistics, labels, batch_size=7)
    assert scores["mse"] == pytest.approx(float(((reconstruction - pixels) ** 2).double().mean()), rel=1e-6)
    assert scores["classifier_fid"] == pytest.approx(0.0, abs=1e-6)
    assert scores["num_images"] == 20 and 0 <= scores["class_accuracy"] <= 1
    assert tokenizer_reconstruction(vqvae, classifier, pixels, own_statistics)["class_accuracy"] is None


def test_reference_statistics_are_cached_per_classifier_and_images(tmp_path):
    pixels, _ = make_reference()
    statistics, path = cached_reference_statistics(make_image_classifier(), pixels, tmp_path)
    assert path.is_file() and path.parent == tmp_path
    again, same_path = cached_reference_statistics(make_image_classifier(), pixels, tmp_path)
    assert same_path == path and np.array_equal(again.mean, statistics.mean)
    _, other_classifier = cached_reference_statistics(make_image_classifier(seed=1), pixels, tmp_path)
    _, other_images = cached_reference_statistics(make_image_classifier(), pixels[:-1], tmp_path)
    assert len({path, other_classifier, other_images}) == 3
    # a file under the key is what is returned, not a recomputation
    FeatureStatistics(statistics.mean + 1, statistics.covariance, statistics.num_samples).save(path)
    assert np.array_equal(cached_reference_statistics(make_image_classifier(), pixels, tmp_path)[0].mean, statistics.mean + 1)


def test_results_files_have_every_row(results, tmp_path):
    paths = write_results(results, tmp_path / "out")
    written = json.loads(paths["json"].read_text())
    assert [row["name"] for row in written["rows"]] == DEFAULT_ROW_NAMES
    assert written["settings"]["samples_per_class"] == SAMPLES_PER_CLASS and "torch" in written["machine"]
    markdown = paths["markdown"].read_text()
    assert markdown == format_results_table(results)
    table_rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert [line.split("`")[1] for line in table_rows] == DEFAULT_ROW_NAMES
    assert "Tokenizer reconstruction" in markdown and "Real images" in markdown
    assert Image.open(paths["plot"]).format == "PNG"


# ---------------------------------------------------------------- mgnt evaluate


@pytest.fixture
def saved_inputs(tmp_path):
    make_image_pipeline().save_pretrained(tmp_path / "pipeline")
    make_image_classifier().save_pretrained(tmp_path / "classifier")
    pixels, labels = make_reference()
    np.savez(tmp_path / "reference.npz", pixels=pixels.numpy(), labels=labels.numpy())
    return ["evaluate", str(tmp_path / "pipeline"), "--classifier", str(tmp_path / "classifier"),
            "--reference-images", str(tmp_path / "reference.npz"), "--cache-dir", str(tmp_path / "cache")]


def test_mgnt_evaluate_writes_results_grids_and_plot(saved_inputs, tmp_path, capsys):
    output = tmp_path / "out"
    status = cli.main([*saved_inputs, "--samples-per-class", "2", "--rows", "maskgit", "half-then-full+cache",
                       "--steps", "6", "--guidance", "1.5", "--batch-size", "4", "--threads", "1",
                       "--grid-images-per-class", "2", "--output-dir", str(output)])
    assert status == 0
    results = json.loads((output / "results.json").read_text())
    assert [row["name"] for row in results["rows"]] == ["maskgit", "half-then-full+cache"]
    assert results["rows"][1]["step_widths"] == [32, 32, 32, 64, 64, 64]
    assert results["settings"]["guidance_scale"] == 1.5 and results["settings"]["num_samples"] == 6
    assert results["settings"]["reference"]["statistics_file"].startswith(str(tmp_path / "cache"))
    assert results["machine"]["torch_num_threads"] == 1
    assert (output / "results.md").read_text() in capsys.readouterr().out
    assert Image.open(output / "quality_vs_gflops.png").format == "PNG"
    # a grid row per class, two 64 px images (16 px upscaled x4) per row
    assert Image.open(output / "samples" / "maskgit.png").height == 3 * (64 + 2)


@pytest.mark.parametrize("arguments, message", [
    (["--samples-per-class", "0"], "--samples-per-class must be a positive integer, got 0"),
    (["--rows", "maskgit", "turbo"], "unknown row 'turbo'"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--inception-weights", "/no/such/weights.pth"], "Inception weights file not found"),
])
def test_mgnt_evaluate_bad_arguments_give_one_line_errors(saved_inputs, tmp_path, capsys, arguments, message):
    status = cli.main([*saved_inputs, *arguments, "--output-dir", str(tmp_path / "out")])
    error = capsys.readouterr().err  # may also hold the loading progress bars
    error_lines = [line for line in error.splitlines() if "error:" in line]
    assert status == 2 and len(error_lines) == 1 and message in error_lines[0]
    assert error_lines[0].startswith("mgnt evaluate: error:") and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_mgnt_evaluate_refuses_a_missing_classifier(saved_inputs, tmp_path, capsys):
    arguments = list(saved_inputs)
    arguments[arguments.index("--classifier") + 1] = str(tmp_path / "nothing")
    assert cli.main([*arguments, "--output-dir", str(tmp_path / "out")]) == 2
    assert "no MGNTFeatureClassifier folder at" in capsys.readouterr().err


def test_the_benchmark_script_runs_mgnt_evaluate(tmp_path):
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    result = subprocess.run([sys.executable, str(script), str(tmp_path), "--samples-per-class", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip() == "mgnt evaluate: error: --samples-per-class must be a positive integer, got 0"
