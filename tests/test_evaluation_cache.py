"""`mgnt evaluate` does not redo the tokenizer's reconstruction of the reference images at every call (issue 15,
item 11): its scores are cached next to the reference statistics, keyed by the tokenizer, classifier and images."""

import json

import pytest
import torch

from evaluation_helpers import make_image_classifier, make_image_pipeline, make_reference
from mgnt_hf.evaluation import cached_tokenizer_reconstruction, evaluate_pipeline, reference_statistics
from mgnt_hf.evaluation import image as image_evaluation


@pytest.fixture
def counted_reconstructions(monkeypatch):
    calls = []
    reconstruct = image_evaluation.tokenizer_reconstruction

    def counting(*args, **kwargs):
        calls.append(args)
        return reconstruct(*args, **kwargs)

    monkeypatch.setattr(image_evaluation, "tokenizer_reconstruction", counting)
    return calls


def test_a_second_evaluation_reads_the_reconstruction_from_the_cache(tmp_path, counted_reconstructions):
    reference, labels = make_reference()
    pipe, classifier = make_image_pipeline(), make_image_classifier()
    settings = dict(rows=["maskgit"], samples_per_class=1, batch_size=8, device="cpu", reference=reference,
                    reference_labels=labels, cache_dir=tmp_path, grid_images_per_class=0, progress=False)
    first = evaluate_pipeline(pipe, classifier, **settings)
    second = evaluate_pipeline(pipe, classifier, **settings)
    assert len(counted_reconstructions) == 1
    assert second["tokenizer"] == first["tokenizer"]
    (cached,) = tmp_path.glob("tokenizer-*.json")
    assert json.loads(cached.read_text()) == first["tokenizer"]


def test_another_tokenizer_or_other_images_are_not_served_from_the_cache(tmp_path, counted_reconstructions):
    reference, labels = make_reference()
    pipe, classifier = make_image_pipeline(), make_image_classifier()
    statistics = reference_statistics(classifier, reference)
    first = cached_tokenizer_reconstruction(pipe.vqvae, classifier, reference, statistics, labels, tmp_path, 16)
    with torch.no_grad():
        pipe.vqvae.quantizer.codebook.weight.mul_(2)
    cached_tokenizer_reconstruction(pipe.vqvae, classifier, reference, statistics, labels, tmp_path, 16)
    other_images = reference.flip(0)
    cached_tokenizer_reconstruction(pipe.vqvae, classifier, other_images, statistics, labels, tmp_path, 16)
    assert len(counted_reconstructions) == 3 and len(list(tmp_path.glob("tokenizer-*.json"))) == 3
    assert first["num_images"] == reference.shape[0]


def test_without_a_cache_dir_it_is_computed_every_time(counted_reconstructions):
    reference, labels = make_reference(num_images=8)
    pipe, classifier = make_image_pipeline(), make_image_classifier()
    statistics = reference_statistics(classifier, reference)
    for _ in range(2):
        cached_tokenizer_reconstruction(pipe.vqvae, classifier, reference, statistics, labels, None, 8)
    assert len(counted_reconstructions) == 2
