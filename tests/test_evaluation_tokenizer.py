"""A tokenizer on its own (`mgnt_hf.evaluation.video_tokenizer_reconstruction`, `mgnt evaluate-tokenizer`) and the
tokenizer row of the video evaluation's generation table, on tiny random models and moving squares."""

import json
import math
import re

import numpy as np
import pytest
import torch

from conftest import make_tiny_vqvae
from evaluation_helpers import (
    CONTEXT_FRAMES,
    make_frame_classifier,
    make_image_classifier,
    make_reference,
    make_video_pipeline,
    moving_squares,
    save_moving_squares_dataset,
)
from mgnt_hf import cli
from mgnt_hf.evaluation import (
    classify_video_frames,
    evaluate_video_pipeline,
    format_video_results_table,
    real_subset_indices,
    reconstruct_videos,
    video_tokenizer_reconstruction,
    videos_to_tensor,
)


@pytest.fixture(scope="module")
def squares():
    return moving_squares()


def test_the_scores_are_those_of_the_reconstructions(squares):
    videos, labels = squares
    vqvae, classifier = make_video_pipeline().vqvae, make_frame_classifier()
    results = video_tokenizer_reconstruction(vqvae, classifier, videos, labels, batch_size=4, device="cpu")
    real = videos_to_tensor(videos)
    reconstructed = reconstruct_videos(vqvae, real, batch_size=4)
    mse = float(((reconstructed.double() - real.double()) ** 2).mean())
    assert results["mse"] == mse and results["psnr_db"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-12)
    real_predictions = classify_video_frames(classifier, real)[1]
    predictions = classify_video_frames(classifier, reconstructed)[1]
    truth = torch.as_tensor(labels)[:, None]
    real_accuracy = float((real_predictions == truth).double().mean())
    accuracy = float((predictions == truth).double().mean())
    assert results["real_frame_accuracy"] == real_accuracy and results["frame_accuracy"] == accuracy
    assert results["frame_accuracy_gap"] == pytest.approx(100 * (real_accuracy - accuracy), abs=1e-12)
    assert results["num_videos"] == len(videos) and results["num_frames"] == videos.shape[0] * videos.shape[1]
    assert results["classifier_fid"] >= 0 and -1 <= results["ssim"] <= 1
    json.dumps(results, allow_nan=False)


def test_without_labels_the_accuracies_are_none(squares):
    videos, _ = squares
    results = video_tokenizer_reconstruction(make_video_pipeline().vqvae, make_frame_classifier(), videos,
                                             device="cpu")
    assert results["frame_accuracy"] is None and results["real_frame_accuracy"] is None
    assert results["frame_accuracy_gap"] is None and results["psnr_db"] > 0


@pytest.mark.parametrize("case, message", [
    ("image tokenizer", "needs a video MGNTVQModel"),
    ("frames", "real_videos must be [N >= 2, 4, 16, 16, 1]"),
    ("labels", "real_labels must lie in [0, 3)"),
    ("classifier", "the classifier takes [1, 8, 8]"),
])
def test_bad_input_is_refused_naming_what_is_allowed(squares, case, message):
    videos, labels = squares
    vqvae, classifier = make_video_pipeline().vqvae, make_frame_classifier()
    if case == "image tokenizer":
        vqvae = make_tiny_vqvae()
    elif case == "frames":
        videos = videos[:, :2]
    elif case == "labels":
        labels = labels + 1
    else:
        classifier = make_frame_classifier(image_size=8)
    with pytest.raises(ValueError, match=re.escape(message)):
        video_tokenizer_reconstruction(vqvae, classifier, videos, labels, device="cpu")


def test_the_video_evaluation_reports_the_same_videos_through_the_tokenizer(squares):
    videos, labels = squares
    pipeline, classifier = make_video_pipeline(), make_frame_classifier()
    results = evaluate_video_pipeline(pipeline, classifier, videos, labels, rows=["maskgit"], videos_per_class=2,
                                      batch_size=4, context_frames=CONTEXT_FRAMES, num_prediction_videos=2,
                                      device="cpu", progress=False)
    row = results["references"]["tokenizer_reconstruction_videos"]
    subset = real_subset_indices(torch.as_tensor(labels), 3, 2, len(labels))
    alone = video_tokenizer_reconstruction(pipeline.vqvae, classifier, videos[subset.numpy()], labels[subset.numpy()],
                                           batch_size=4, device="cpu")
    assert row["num_videos"] == 6
    assert row["frame_accuracy"] == alone["frame_accuracy"] and row["frame_difference"] == alone["frame_difference"]
    assert "the same real videos through the tokenizer (6)" in format_video_results_table(results)


def test_mgnt_evaluate_tokenizer_scores_a_video_tokenizer_or_a_pipelines(tmp_path, capsys):
    data = save_moving_squares_dataset(tmp_path / "data")
    pipeline = make_video_pipeline()
    pipeline.save_pretrained(tmp_path / "pipe")
    make_frame_classifier().save_pretrained(tmp_path / "classifier")
    common = ["--classifier", str(tmp_path / "classifier"), "--dataset", str(data), "--device", "cpu"]
    assert cli.main(["evaluate-tokenizer", str(tmp_path / "pipe"), *common, "--output", str(tmp_path / "p.json")]) == 0
    assert "| PSNR (mean MSE) dB |" in capsys.readouterr().out
    assert cli.main(["evaluate-tokenizer", str(tmp_path / "pipe" / "vqvae"), *common, "--limit-real", "4",
                     "--output", str(tmp_path / "v.json")]) == 0
    from_pipeline, from_folder = (json.loads((tmp_path / name).read_text()) for name in ("p.json", "v.json"))
    videos, labels = moving_squares(6)
    expected = video_tokenizer_reconstruction(pipeline.vqvae, make_frame_classifier(), videos, labels,
                                              device="cpu")
    assert from_pipeline["num_videos"] == 6 and from_pipeline["mse"] == pytest.approx(expected["mse"], rel=1e-6)
    assert from_pipeline["frame_accuracy"] == expected["frame_accuracy"]
    assert from_folder["num_videos"] == 4 and from_folder["settings"]["limit"] == 4


def test_mgnt_evaluate_tokenizer_scores_an_image_tokenizer(tmp_path, capsys):
    make_tiny_vqvae().save_pretrained(tmp_path / "vqvae")
    make_image_classifier().save_pretrained(tmp_path / "classifier")
    pixels, labels = make_reference(8)
    np.savez(tmp_path / "reference.npz", pixels=pixels.numpy(), labels=labels.numpy())
    assert cli.main(["evaluate-tokenizer", str(tmp_path / "vqvae"), "--classifier", str(tmp_path / "classifier"),
                     "--reference-images", str(tmp_path / "reference.npz"), "--device", "cpu",
                     "--output", str(tmp_path / "out.json")]) == 0
    results = json.loads((tmp_path / "out.json").read_text())
    assert results["num_images"] == 8 and results["mse"] > 0 and 0 <= results["class_accuracy"] <= 1
    assert f"MSE {results['mse']:.5f}" in capsys.readouterr().out


def test_a_folder_without_a_tokenizer_is_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["evaluate-tokenizer", str(tmp_path / "empty")]) == 2
    assert "holds neither a tokenizer (config.json) nor a pipeline's vqvae/config.json" in capsys.readouterr().err
    assert cli.main(["evaluate-tokenizer", str(tmp_path / "empty"), "--output", "out.txt"]) == 2
    assert "--output 'out.txt' must be a .json file" in capsys.readouterr().err
