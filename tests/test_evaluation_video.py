"""The video runner (`mgnt_hf.evaluation.evaluate_video_pipeline`, `mgnt evaluate-video`,
`benchmarks/video_quality.py`) and the Moving Fashion-MNIST mode of `training/train_classifier.py`, on tiny random
models and constructed videos."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation_helpers import (
    CONTEXT_FRAMES,
    NUM_FRAMES,
    REPO,
    SIZE,
    make_frame_classifier,
    make_video_pipeline,
    moving_squares,
    save_moving_squares_dataset,
    save_tiny_i3d,
)
from mgnt_hf import MGNTFeatureClassifier, cli
from mgnt_hf.evaluation import (
    PSNR_CAP_DB,
    QualityRow,
    evaluate_video_pipeline,
    format_video_results_table,
    pareto_front,
    write_video_results,
)
from mgnt_hf.evaluation.video import FRONTIER_MEASURES, video_frontier


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    videos, labels = moving_squares()
    return evaluate_video_pipeline(
        make_video_pipeline(), make_frame_classifier(), videos, labels, rows=["maskgit", "default+cache"],
        videos_per_class=2, batch_size=4, seed=1, context_frames=CONTEXT_FRAMES, num_prediction_videos=4,
        device="cpu", sample_dir=tmp_path_factory.mktemp("samples"), progress=False)


@pytest.fixture(scope="module")
def i3d_file(tmp_path_factory):
    return save_tiny_i3d(tmp_path_factory.mktemp("i3d"))


def rows_by_name(results) -> dict:
    return {row["name"]: row for row in results["rows"]}


# ---------------------------------------------------------------- the whole evaluation


def finite_numbers(value) -> list:
    """Every number in a nested results structure."""
    if isinstance(value, dict):
        return [number for item in value.values() for number in finite_numbers(item)]
    if isinstance(value, list):
        return [number for item in value for number in finite_numbers(item)]
    return [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


GENERATION_FIELDS = {"gflops_per_video", "seconds_per_video", "flops_ratio", "step_widths", "num_full_passes",
                     "classifier_fid", "frame_accuracy", "video_accuracy", "label_consistency", "frame_difference",
                     "num_videos", "num_frames", "fvd", "sample_strip"}
PREDICTION_FIELDS = {"gflops_per_video", "seconds_per_video", "flops_ratio", "step_widths", "num_full_passes",
                     "psnr", "ssim", "psnr_per_frame", "ssim_per_frame", "num_videos", "fvd", "sample_strip"}


def test_every_row_has_every_field_with_finite_numbers(results):
    assert [row["name"] for row in results["rows"]] == ["maskgit", "default+cache"]
    for row in results["rows"]:
        assert set(row["generation"]) == GENERATION_FIELDS
        assert set(row["prediction"]) == PREDICTION_FIELDS
        assert row["generation"]["num_videos"] == 6 and row["generation"]["num_frames"] == 6 * NUM_FRAMES
        assert row["prediction"]["num_videos"] == 4
        assert len(row["prediction"]["psnr_per_frame"]) == NUM_FRAMES - CONTEXT_FRAMES
        assert row["generation"]["fvd"] is None and row["prediction"]["fvd"] is None
        assert row["generation"]["seconds_per_video"] > 0 and row["prediction"]["seconds_per_video"] > 0
    assert all(math.isfinite(number) for number in finite_numbers(results))
    assert "i3d_torchscript" in results["settings"]["fvd"]


def test_maskgit_costs_more_than_the_cached_magnets_schedule(results):
    rows = rows_by_name(results)
    for task in ("generation", "prediction"):
        assert rows["maskgit"][task]["gflops_per_video"] > rows["default+cache"][task]["gflops_per_video"]
        assert rows["maskgit"][task]["flops_ratio"] == 1.0 and rows["default+cache"][task]["flops_ratio"] > 1
        assert rows["maskgit"][task]["num_full_passes"] == 12 and rows["maskgit"][task]["step_widths"] == [64] * 12
    # Without the cache every step runs the whole grid, context included; with it the context's tokens run only in
    # full passes, so prediction costs less than generation.
    assert rows["maskgit"]["prediction"]["gflops_per_video"] == rows["maskgit"]["generation"]["gflops_per_video"]
    cached = rows["default+cache"]
    assert cached["prediction"]["gflops_per_video"] < cached["generation"]["gflops_per_video"]


def test_the_frontier_of_each_task_is_its_pareto_fronts_and_the_default_rows_fair_comparison(results):
    for task, measures in FRONTIER_MEASURES.items():
        rows = [{"name": row["name"], **row[task]} for row in results["rows"]]
        entry = results["frontier"][task]
        assert entry["pareto_fronts"] == {key: pareto_front(rows, key, "gflops_per_video", higher)
                                          for key, higher in measures}
        key, higher = measures[0]
        fair = entry["fair_comparison"]  # the scheduler caches by default: pipe(...) runs default+cache
        assert fair["row"] == "default+cache" and fair["best_competitor"] == "maskgit"
        default, maskgit = (rows_by_name(results)[name][task][key] for name in ("default+cache", "maskgit"))
        assert fair["beats_every_competitor"] == (default > maskgit if higher else default < maskgit)
    table = format_video_results_table(results)
    assert table.count("Fair comparison: `default+cache`") == 2 and table.count("Pareto fronts against") == 2


def test_without_a_maskgit_row_there_is_no_fair_comparison_but_still_a_front(results):
    rows = [row for row in results["rows"] if row["name"] != "maskgit"]
    frontier = video_frontier(rows, "default+cache")
    assert frontier["generation"]["pareto_fronts"]["classifier_fid"] == ["default+cache"]
    assert "fair_comparison" not in frontier["generation"]
    assert video_frontier([{**row, "prediction": None} for row in rows], "default+cache").keys() == {"generation"}


def test_references_are_reported(results):
    references = results["references"]
    real = references["real_videos"]
    assert real["num_videos"] == 6 and real["label_consistency"] <= 1 and real["frame_difference"] > 0
    for name in ("tokenizer_reconstruction", "copy_last_frame"):
        assert references[name]["num_videos"] == 4 and -1 <= references[name]["ssim"] <= 1
    # The squares move: copying the last given frame is not the truth.
    assert references["copy_last_frame"]["psnr"] < PSNR_CAP_DB


def test_copying_the_last_frame_of_static_videos_is_exact():
    videos, labels = moving_squares()
    static = np.repeat(videos[:, :1], NUM_FRAMES, axis=1)
    results = evaluate_video_pipeline(make_video_pipeline(), make_frame_classifier(), static, labels, rows=["default"],
                                      videos_per_class=0, num_prediction_videos=3, context_frames=CONTEXT_FRAMES,
                                      device="cpu", progress=False)
    copy = results["references"]["copy_last_frame"]
    assert copy["psnr"] == PSNR_CAP_DB and copy["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert results["rows"][0]["generation"] is None and results["references"]["real_videos"] is None


def test_fvd_is_reported_with_an_i3d_file(i3d_file):
    videos, labels = moving_squares(6)
    results = evaluate_video_pipeline(make_video_pipeline(), make_frame_classifier(), videos, labels, rows=["default+cache"],
                                      videos_per_class=1, num_prediction_videos=3, context_frames=CONTEXT_FRAMES,
                                      prediction_labels="none", device="cpu", i3d_torchscript=i3d_file,
                                      progress=False)
    row = results["rows"][0]
    assert row["generation"]["fvd"] > 0 and row["prediction"]["fvd"] > 0
    assert math.isfinite(results["references"]["real_videos"]["fvd"])
    assert str(i3d_file) in results["settings"]["fvd"]


def test_results_files_and_sample_strips(results, tmp_path):
    paths = write_video_results(results, tmp_path)
    assert json.loads(paths["json"].read_text())["rows"][1]["name"] == "default+cache"
    markdown = paths["markdown"].read_text()
    assert markdown == format_video_results_table(results)
    for text in ("`maskgit`", "`default+cache`", "real videos (6)", "tokenizer reconstruction", "copy last frame"):
        assert text in markdown
    strip = Image.open(rows_by_name(results)["maskgit"]["prediction"]["sample_strip"])
    # 4 videos x (real, predicted) rows of 16 px frames upscaled 4x with 2 px gaps.
    assert strip.height == 8 * (4 * SIZE + 2)
    assert Path(rows_by_name(results)["default+cache"]["generation"]["sample_strip"]).is_file()


BAD_ARGUMENTS = [
    (dict(prediction_labels="maybe"), r"\['given', 'none'\]"),
    (dict(context_frames=3), r"one of \[2\]"),
    (dict(context_frames=2.0), r"one of \[2\]; got 2.0"),
    (dict(rows=["fastest"]), "allowed: maskgit"),
    (dict(videos_per_class=-1), "videos_per_class"),
    (dict(videos_per_class=0, num_prediction_videos=0), "nothing to evaluate"),
    (dict(num_prediction_videos=13), "exceeds the 12 real videos"),
    (dict(real_labels=None), "prediction_labels='given' needs real_labels"),
    (dict(real_videos=np.zeros((12, 3, SIZE, SIZE, 1), dtype=np.uint8)), r"\[N >= 2, 4, 16, 16, 1\]"),
    (dict(real_labels=np.arange(12) + 1), r"\[0, 3\)"),
    (dict(guidance_scale=-1.0), "guidance_scale"),
]


@pytest.mark.parametrize("overrides, message", BAD_ARGUMENTS)
def test_bad_arguments_are_refused_with_what_is_allowed(overrides, message):
    videos, labels = moving_squares()
    arguments = dict(real_videos=videos, real_labels=labels, rows=["default"], videos_per_class=1,
                     num_prediction_videos=2, context_frames=CONTEXT_FRAMES, device="cpu", progress=False)
    arguments.update(overrides)
    with pytest.raises(ValueError, match=message):
        evaluate_video_pipeline(make_video_pipeline(), make_frame_classifier(), **arguments)


def test_a_classifier_of_another_frame_size_is_refused():
    videos, labels = moving_squares()
    classifier = make_frame_classifier(image_size=32)
    with pytest.raises(ValueError, match="classifier"):
        evaluate_video_pipeline(make_video_pipeline(), classifier, videos, labels, rows=["default"], progress=False)


def test_a_row_built_by_hand_runs_at_its_own_step_count_in_both_tasks():
    videos, labels = moving_squares(6)
    own = QualityRow("half-6", [[0.5, 3], [1.0, 3]], use_cache=True, num_inference_steps=6)
    results = evaluate_video_pipeline(make_video_pipeline(), make_frame_classifier(), videos, labels, rows=[own],
                                      videos_per_class=1, num_prediction_videos=2, context_frames=CONTEXT_FRAMES,
                                      device="cpu", progress=False)
    (row,) = results["rows"]
    assert row["num_inference_steps"] == 6
    for task in ("generation", "prediction"):
        assert row[task]["step_widths"] == [32, 32, 32, 64, 64, 64] and row[task]["num_full_passes"] == 2
    assert "| 0.5x3 1x3 |" in format_video_results_table(results)


# ---------------------------------------------------------------- data, training and the command line


@pytest.fixture(scope="module")
def saved_videos(tmp_path_factory):
    return save_moving_squares_dataset(tmp_path_factory.mktemp("videos") / "data")


def run_script(script: str, *arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, str(REPO / script), *arguments], capture_output=True, text=True,
                          env=environment, cwd=REPO, timeout=300)


def test_train_classifier_trains_a_frame_classifier_on_moving_videos(saved_videos, tmp_path):
    output = tmp_path / "classifier"
    result = run_script("training/train_classifier.py", "--moving-fashion-mnist", str(saved_videos),
                        "--output-dir", str(output), "--limit-train", "9", "--frames-per-video", "2",
                        "--epochs", "1", "--batch-size", "6", "--conv-channels", "4", "8", "--num-threads", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((output / "training_results.json").read_text())
    assert recorded["num_train_videos"] == 9 and recorded["num_train_images"] == 18
    assert recorded["train_frame_indices"] == [0, NUM_FRAMES - 1]
    assert recorded["num_test_videos"] == 6 and recorded["num_test_images"] == 6 * NUM_FRAMES
    assert f"{100 * recorded['test_accuracy']:.2f}%" in (output / "README.md").read_text()
    classifier = MGNTFeatureClassifier.from_pretrained(output)
    assert classifier.config.image_size == SIZE and classifier.config.num_channels == 1
    assert classifier.config.conv_channels == (4, 8)


def test_train_classifier_refuses_more_frames_than_the_videos_have(saved_videos, tmp_path):
    result = run_script("training/train_classifier.py", "--moving-fashion-mnist", str(saved_videos),
                        "--output-dir", str(tmp_path / "c"), "--frames-per-video", "5", "--epochs", "1")
    assert result.returncode != 0 and "--frames-per-video must be in [1, 4]" in result.stderr


def test_the_benchmark_script_writes_results(saved_videos, tmp_path):
    pipeline_dir, classifier_dir, output = tmp_path / "pipe", tmp_path / "classifier", tmp_path / "out"
    make_video_pipeline().save_pretrained(pipeline_dir)
    make_frame_classifier().save_pretrained(classifier_dir)
    result = run_script("benchmarks/video_quality.py", "--pipeline", str(pipeline_dir), "--classifier",
                        str(classifier_dir), "--dataset", str(saved_videos), "--split", "test", "--rows", "maskgit",
                        "default+cache", "--videos-per-class", "1", "--context-frames", "2",
                        "--num-prediction-videos", "2", "--threads", "1", "--device", "cpu", "--output-dir",
                        str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    recorded = json.loads((output / "results.json").read_text())
    assert [row["name"] for row in recorded["rows"]] == ["maskgit", "default+cache"]
    assert recorded["settings"]["real_videos"]["dataset"] == str(saved_videos)
    assert (output / "results.md").read_text() in result.stdout
    assert (output / "samples" / "maskgit-prediction.png").is_file()


def test_the_benchmark_script_reports_bad_arguments_in_one_line(saved_videos, tmp_path):
    pipeline_dir, classifier_dir = tmp_path / "pipe", tmp_path / "classifier"
    make_video_pipeline().save_pretrained(pipeline_dir)
    make_frame_classifier().save_pretrained(classifier_dir)
    result = run_script("benchmarks/video_quality.py", "--pipeline", str(pipeline_dir), "--classifier",
                        str(classifier_dir), "--dataset", str(saved_videos), "--context-frames", "3",
                        "--output-dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "video_quality: error: context_frames must be a multiple of the tokenizer's temporal_downsample_factor 2 "
        "below its 4 frames, one of [2]; got 3")


def test_mgnt_evaluate_video_runs_the_same_command_in_process(saved_videos, tmp_path, capsys):
    pipeline_dir, classifier_dir, output = tmp_path / "pipe", tmp_path / "classifier", tmp_path / "out"
    make_video_pipeline().save_pretrained(pipeline_dir)
    make_frame_classifier().save_pretrained(classifier_dir)
    arguments = ["evaluate-video", "--pipeline", str(pipeline_dir), "--classifier", str(classifier_dir), "--dataset",
                 str(saved_videos), "--rows", "maskgit", "--videos-per-class", "1", "--context-frames", "2",
                 "--num-prediction-videos", "2", "--sample-videos", "0", "--device", "cpu", "--output-dir", str(output)]
    assert cli.main(arguments) == 0
    assert (output / "results.md").read_text() in capsys.readouterr().out
    assert cli.main([*arguments[:-2], "--output-dir", str(tmp_path / "bad"), "--context-frames", "3"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("mgnt evaluate-video: error: context_frames")
