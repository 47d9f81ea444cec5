"""The `mgnt` command line as a first-time or careless user meets it (issue 15, items 6, 10, 11): every bad input
is one line on stderr with exit status 2, the README's frame-prediction command works as written, `mgnt --help`
loads no torch, loading shows no progress bars, and the help says every default."""

import argparse
import subprocess
import sys

import numpy as np
import pytest

from mgnt_hf import cli
from mgnt_hf.width_schedule_presets import WIDTH_SCHEDULE_PRESETS


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    from conftest import make_tiny_transformer, make_tiny_vqvae
    from mgnt_hf import MGNTPipeline, MGNTScheduler

    folder = tmp_path_factory.mktemp("cli") / "tiny-pipeline"
    MGNTPipeline(transformer=make_tiny_transformer(), vqvae=make_tiny_vqvae(), scheduler=MGNTScheduler()) \
        .save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def saved_video_pipeline(tmp_path_factory):
    from conftest import make_tiny_video_transformer, make_tiny_video_vqvae
    from mgnt_hf import MGNTScheduler, MGNTVideoPipeline

    folder = tmp_path_factory.mktemp("cli") / "tiny-video-pipeline"
    MGNTVideoPipeline(transformer=make_tiny_video_transformer(), vqvae=make_tiny_video_vqvae(),
                      scheduler=MGNTScheduler()).save_pretrained(folder)
    return folder


def one_line_error(capsys, status: int) -> str:
    error = capsys.readouterr().err
    assert status == 2, error
    assert "Traceback" not in error and error.count("\n") == 1, error
    return error


# ---------------------------------------------------------------- item 6: one line, exit status 2


@pytest.mark.parametrize("arguments, message", [
    (["--device", "bogus"], "--device 'bogus' is not a device; allowed: cpu, cuda, cuda:N, mps"),
    (["--num-images-per-label", "100000"], "more than PIL opens (PIL.Image.MAX_IMAGE_PIXELS"),
    (["--output", "noext"], "--output 'noext' needs an image file extension PIL writes"),
    (["--scale", "0"], "--scale must be a positive integer or None, got 0"),
    (["--scale", "-1"], "--scale must be a positive integer or None, got -1"),
    (["--seed", str(2**64)], f"--seed must be an integer in [0, {2**64 - 1}], got {2**64}"),
    (["--seed", str(2**64 - 2), "--labels", "0", "--num-images-per-label", "3"],
     "(3 outputs take seeds --seed .. --seed + 2)"),
    (["--seed", "-1"], "--seed must be an integer in [0,"),
])
def test_generate_refuses_bad_input_in_one_line(saved_pipeline, tmp_path, capsys, arguments, message):
    output = [] if "--output" in arguments else ["--output", str(tmp_path / "grid.png")]
    status = cli.main(["generate", str(saved_pipeline), *arguments, *output])
    assert message in one_line_error(capsys, status)
    assert not (tmp_path / "grid.png").exists()


def test_cuda_without_cuda_is_one_line(saved_pipeline, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    status = cli.main(["generate", str(saved_pipeline), "--device", "cuda", "--output", str(tmp_path / "grid.png")])
    assert "--device 'cuda': torch sees no CUDA device here" in one_line_error(capsys, status)


def test_a_damaged_pipeline_is_one_line_on_the_real_stderr(saved_pipeline, tmp_path):
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(saved_pipeline, damaged)
    weights = damaged / "transformer" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = subprocess.run([sys.executable, "-m", "mgnt_hf.cli", "generate", str(damaged), "--output",
                             str(tmp_path / "grid.png")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "transformer/model.safetensors (1000 bytes) is not a complete safetensors file" in result.stderr


def test_generate_video_without_pyav_says_so_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError
    clip = tmp_path / "x.mp4"
    clip.write_bytes(b"\0" * 64)
    # The pipeline folder does not exist: the PyAV error comes first, before any loading.
    status = cli.main(["generate-video", str(tmp_path / "no-pipeline"), "--context-video", str(clip),
                       "--context-frames", "2", "--output", str(tmp_path / "p.gif")])
    assert "reading and writing video files needs PyAV" in one_line_error(capsys, status)


@pytest.mark.parametrize("arguments, message", [
    (["--output", "videos"], "--output 'videos' must end in one of .gif, .mp4"),
    (["--fps", "0"], "--fps must be a finite number > 0"),
    (["--seed", str(2**64)], "--seed must be an integer in"),
    (["--videos-per-label", "0"], "--videos-per-label must be a positive integer"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
])
def test_generate_video_refuses_bad_input_in_one_line(saved_video_pipeline, tmp_path, capsys, arguments, message):
    output = [] if "--output" in arguments else ["--output", str(tmp_path / "v.gif")]
    status = cli.main(["generate-video", str(saved_video_pipeline), *arguments, *output])
    assert message in one_line_error(capsys, status)


# ---------------------------------------------------------------- item 10: the README's frame prediction


def test_the_readme_prediction_command_works_on_a_clip_the_package_wrote(saved_video_pipeline, tmp_path, capsys,
                                                                         monkeypatch):
    from mgnt_hf.video_io import decode_video

    monkeypatch.chdir(tmp_path)
    # One video, written as it is: an H.264 mp4 stores it as RGB although the tokenizer is grayscale.
    assert cli.main(["generate-video", str(saved_video_pipeline), "--labels", "0", "--output", "clip.mp4"]) == 0
    clip = decode_video("clip.mp4")
    assert clip.shape == (4, 16, 16, 3)
    capsys.readouterr()
    # The README's command, with this pipeline's clip length (4 frames of which 2 are context).
    status = cli.main(["generate-video", str(saved_video_pipeline), "--context-video", "clip.mp4",
                       "--context-frames", "2", "--output", "predicted.gif"])
    printed = capsys.readouterr().out
    assert status == 0, printed
    assert "converted to the tokenizer's 1 (gray)" in printed and "1 videos of 4 frames (2 given)" in printed
    assert (tmp_path / "predicted.gif").is_file()


def test_rgb_to_gray_matches_pil_and_undoes_gray_to_rgb():
    from PIL import Image

    from mgnt_hf.video_utils import to_channels

    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 5, 7, 3), dtype=np.uint8)
    gray = to_channels(rgb, 1)
    assert gray.shape == (2, 5, 7, 1)
    assert np.array_equal(gray[0, ..., 0], np.asarray(Image.fromarray(rgb[0]).convert("L")))
    assert np.array_equal(to_channels(to_channels(gray, 3), 1), gray)


# ---------------------------------------------------------------- item 11: help and progress bars


@pytest.mark.parametrize("arguments", [["--help"], ["generate", "--help"], ["generate-video", "--help"]])
def test_help_imports_no_torch(arguments):
    program = ("import sys\nfrom mgnt_hf.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
               "print('torch loaded' if 'torch' in sys.modules else 'no torch')" % (arguments,))
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("no torch")


def test_every_option_says_its_default():
    parser = cli.build_parser()
    formatter = cli.HelpFormatter("mgnt")
    for subparsers in (a for a in parser._actions if isinstance(a, argparse._SubParsersAction)):
        for name, command in subparsers.choices.items():
            for action in command._actions:
                if isinstance(action, (argparse._HelpAction, argparse._StoreTrueAction)) or action.required:
                    continue
                assert "default" in formatter._get_help_string(action), (name, action.dest)


def test_labels_help_names_the_classes_and_width_schedule_help_every_preset():
    generate = cli.build_parser(["generate"])._subparsers._group_actions[0].choices["generate"]
    helps = {action.dest: action.help for action in generate._actions}
    assert "0=T-shirt/top" in helps["labels"] and "9=Ankle boot" in helps["labels"]
    for name, segments in WIDTH_SCHEDULE_PRESETS.items():
        assert f"{name} = {segments}" in helps["width_schedule"]


def test_loading_shows_no_progress_bars(saved_pipeline, tmp_path, capsys):
    status = cli.main(["generate", str(saved_pipeline), "--labels", "0", "--num-images-per-label", "1",
                       "--output", str(tmp_path / "grid.png")])
    assert status == 0
    assert "Loading" not in capsys.readouterr().err
