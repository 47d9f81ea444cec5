"""The `mgnt` command line: `mgnt generate` on a tiny saved pipeline, and its errors."""

import subprocess
import sys
from importlib.metadata import entry_points

import pytest
from PIL import Image

from mgnt_hf import cli


@pytest.fixture
def saved_pipeline(tiny_pipeline, tmp_path):
    folder = tmp_path / "tiny-pipeline"
    tiny_pipeline.save_pretrained(folder)
    return folder


def test_generate_writes_a_labelled_grid_and_prints_cost(saved_pipeline, tmp_path, capsys):
    output = tmp_path / "out" / "grid.png"
    status = cli.main(["generate", str(saved_pipeline), "--labels", "0", "ankle boot", "--num-images-per-label", "3",
                       "--seed", "1", "--output", str(output), "--scale", "2"])
    assert status == 0
    grid = Image.open(output)
    assert grid.format == "PNG"
    # two rows of 32x32 images (16 px upscaled x2) with 2 px padding, three images per row after the names
    assert grid.height == 2 * (32 + 2)
    assert grid.width > 3 * (32 + 2)
    printed = capsys.readouterr().out
    assert "GFLOPs/image" in printed and "seconds/image" in printed
    assert "widths per step: [8, 16, 16, 16, 16, 32, 32, 32, 32, 64, 64, 64]" in printed


def test_generate_options_reach_the_pipeline(saved_pipeline, tmp_path, capsys):
    status = cli.main(["generate", str(saved_pipeline), "--labels", "all", "--num-images-per-label", "1",
                       "--steps", "6", "--guidance", "1.0", "--no-cache", "--width-schedule", "[[0.5,3],[1.0,3]]",
                       "--output", str(tmp_path / "grid.png")])
    assert status == 0
    assert Image.open(tmp_path / "grid.png").height == 3 * (64 + 2)  # all 3 classes, 16 px upscaled to 64
    assert "widths per step: [32, 32, 32, 64, 64, 64]" in capsys.readouterr().out


def test_the_same_seed_writes_the_same_grid(saved_pipeline, tmp_path):
    for name in ("a.png", "b.png"):
        assert cli.main(["generate", str(saved_pipeline), "--labels", "1", "--num-images-per-label", "2",
                         "--width-schedule", "magnets-uniform", "--output", str(tmp_path / name)]) == 0
    assert Image.open(tmp_path / "a.png").tobytes() == Image.open(tmp_path / "b.png").tobytes()


@pytest.mark.parametrize("arguments, message", [
    (["--labels", "dog"], "unknown class label name 'dog'"),
    (["--labels", "7"], "class label 7 is out of range"),
    (["--width-schedule", "[[0.5,6]"], "is not valid JSON"),
    (["--width-schedule", "fastest"], "unknown width_schedule preset 'fastest'"),
    (["--steps", "0"], "num_inference_steps must be a positive integer"),
])
def test_bad_arguments_give_one_line_errors(saved_pipeline, tmp_path, capsys, arguments, message):
    status = cli.main(["generate", str(saved_pipeline), *arguments, "--output", str(tmp_path / "grid.png")])
    error = capsys.readouterr().err
    assert status == 2 and message in error and "Traceback" not in error
    assert not (tmp_path / "grid.png").exists()


def test_without_a_pipeline_or_the_default_model_it_says_so(monkeypatch, tmp_path, capsys):
    from mgnt_hf import resources

    # Neither the package data nor the checkout has the shipped pipelines.
    monkeypatch.setattr(resources, "PACKAGE_DIR", tmp_path / "package")
    monkeypatch.setattr(resources, "CHECKOUT_DIR", tmp_path / "checkout")
    status = cli.main(["generate", "--output", str(tmp_path / "grid.png")])
    error = capsys.readouterr().err
    assert status == 2
    assert "no PIPELINE given and the default pipeline 'mgnt-fashion-mnist' is not available" in error
    assert "Traceback" not in error


def test_the_mgnt_console_script_runs_main_and_fails_cleanly(tmp_path):
    (script,) = entry_points(group="console_scripts", name="mgnt")
    assert script.value == "mgnt_hf.cli:main"
    result = subprocess.run([sys.executable, "-m", "mgnt_hf.cli", "generate", str(tmp_path / "no" / "such" / "dir")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "no MGNTPipeline folder at" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def saved_video_pipeline(tiny_video_pipeline, tmp_path):
    folder = tmp_path / "tiny-video-pipeline"
    tiny_video_pipeline.save_pretrained(folder)
    return folder


def test_generate_video_writes_a_tiled_gif(saved_video_pipeline, tmp_path, capsys):
    output = tmp_path / "videos.gif"
    status = cli.main(["generate-video", str(saved_video_pipeline), "--labels", "0", "trouser",
                       "--videos-per-label", "2", "--output", str(output)])
    assert status == 0
    gif = Image.open(output)
    assert gif.n_frames >= 1  # PIL merges identical consecutive frames; random weights may repeat frames
    # 2 rows (labels) x 2 columns (videos) of 16x16 frames with 2 px gaps
    assert gif.size == (2 * (16 + 2), 2 * (16 + 2))
    printed = capsys.readouterr().out
    assert "4 videos of 4 frames" in printed and "GFLOPs/video" in printed


def test_generate_video_predicts_from_a_context_video(saved_video_pipeline, tmp_path, capsys):
    import numpy as np

    from mgnt_hf.video_utils import write_video

    context = tmp_path / "context.mkv"  # lossless, keeps grayscale
    frames = np.zeros((4, 16, 16, 1), dtype=np.uint8)
    frames[:, 4:8, 4:8] = 255
    write_video(frames, context)
    status = cli.main(["generate-video", str(saved_video_pipeline), "--labels", "none", "--context-video",
                       str(context), "--context-frames", "2", "--output", str(tmp_path / "predicted.mkv")])
    assert status == 0
    assert "(2 given)" in capsys.readouterr().out
    status = cli.main(["generate-video", str(saved_video_pipeline), "--context-video", str(context),
                       "--context-frames", "3", "--output", str(tmp_path / "bad.gif")])
    assert status == 2
    assert "multiple of 2" in capsys.readouterr().err
    assert cli.main(["generate-video", str(saved_video_pipeline), "--context-frames", "2"]) == 2
