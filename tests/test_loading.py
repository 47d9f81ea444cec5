"""A damaged or inconsistent saved pipeline is refused before any weights load (issue 15, item 5): never random
weights, never a raw traceback, never a pickle."""

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import make_tiny_transformer, make_tiny_vqvae
from mgnt_hf import MGNTConfig, MGNTPipeline, MGNTScheduler, MGNTTransformer, MGNTVideoPipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "tiny"
    MGNTPipeline(transformer=make_tiny_transformer(), vqvae=make_tiny_vqvae(), scheduler=MGNTScheduler()) \
        .save_pretrained(folder)
    return folder


@pytest.fixture
def damaged(saved, tmp_path):
    """A fresh copy of the saved pipeline to damage."""
    folder = tmp_path / "damaged"
    shutil.copytree(saved, folder)
    return folder


def edit_config(folder, component, **changes):
    path = folder / component / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_an_intact_folder_loads_the_saved_weights(saved):
    pipe = MGNTPipeline.from_pretrained(saved)
    saved_weights = load_file(saved / "transformer" / "model.safetensors")
    assert all(torch.equal(tensor, saved_weights[name]) for name, tensor in pipe.transformer.state_dict().items())


@pytest.mark.parametrize("component, cut", [("transformer", "half"), ("vqvae", "all")])
def test_a_truncated_or_empty_weights_file_is_an_os_error_naming_it(damaged, component, cut):
    path = damaged / component / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    with pytest.raises(OSError, match=f"{component}/model.safetensors .* is not a complete safetensors file"):
        MGNTPipeline.from_pretrained(damaged)


@pytest.mark.parametrize("changes, message", [
    # Both components changed together, so the pipeline's own codebook check passes and the weights check speaks.
    ({"transformer": {"codebook_size": 32}, "vqvae": {"codebook_size": 32}},
     r"transformer/config.json does not fit its weights: codebook_size is 32 there, but model.safetensors was saved "
     r"with codebook_size 16"),
    ({"transformer": {"num_classes": 5, "id2label": None, "label2id": None}},
     r"num_classes is 5 there, but model.safetensors was saved with num_classes 3"),
    ({"transformer": {"intermediate_size": 256}},
     r"intermediate_size is 256 there, but model.safetensors was saved with intermediate_size 128"),
    ({"vqvae": {"embedding_dim": 16}},
     r"embedding_dim is 16 there, but model.safetensors was saved with embedding_dim 8"),
])
def test_a_config_that_disagrees_with_its_weights_names_the_field_and_both_values(damaged, changes, message):
    for component, fields in changes.items():
        edit_config(damaged, component, **fields)
    with pytest.raises(ValueError, match=message):
        MGNTPipeline.from_pretrained(damaged)


@pytest.mark.parametrize("changes, message", [
    ({"codebook_size": 32}, "the tokenizer has codebook_size 16 but the transformer 32"),
    ({"token_grid": [8, 8]}, r"the tokenizer makes token grids \(4, 4\) but the transformer takes \(8, 8\)"),
])
def test_the_pipelines_consistency_checks_run_before_the_weights(damaged, changes, message):
    edit_config(damaged, "transformer", **changes)
    with pytest.raises(ValueError, match=message):
        MGNTPipeline.from_pretrained(damaged)


def test_more_layers_than_the_weights_hold_is_refused_not_random(damaged):
    edit_config(damaged, "transformer", num_hidden_layers=3)
    with pytest.raises(OSError, match=r"lack 16 tensors .*: layers\.2\.attention\.k_proj\.bias, .* they would start "
                                      r"random"):
        MGNTPipeline.from_pretrained(damaged)


def test_fewer_layers_than_the_weights_hold_is_refused(damaged):
    edit_config(damaged, "transformer", num_hidden_layers=1)
    with pytest.raises(OSError, match=r"hold 16 tensors that .* does not use: layers\.1\."):
        MGNTPipeline.from_pretrained(damaged)


def test_a_deleted_tensor_is_refused(damaged):
    path = damaged / "transformer" / "model.safetensors"
    weights = load_file(path)
    del weights["final_norm.bias"]
    save_file(weights, path, metadata={"format": "pt"})
    with pytest.raises(OSError, match=r"lack 1 tensor that .*: final_norm\.bias"):
        MGNTPipeline.from_pretrained(damaged)


@pytest.mark.parametrize("eps", [0, -1e-6, float("nan")])
def test_layer_norm_eps_must_be_positive(eps, damaged):
    with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0"):
        MGNTConfig(layer_norm_eps=eps)
    edit_config(damaged, "transformer", layer_norm_eps=eps)
    with pytest.raises(ValueError, match="layer_norm_eps must be a finite number > 0"):
        MGNTPipeline.from_pretrained(damaged)


def test_model_index_naming_the_tokenizer_as_the_transformer_is_a_value_error(damaged):
    index_path = damaged / "model_index.json"
    index = json.loads(index_path.read_text())
    index["transformer"] = ["mgnt_hf.modeling_vq", "MGNTVQModel"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match="names mgnt_hf.modeling_vq.MGNTVQModel as the transformer; it must be a "
                                         "MGNTTransformer"):
        MGNTPipeline.from_pretrained(damaged)


def test_an_image_pipeline_folder_is_not_a_video_pipeline(saved):
    with pytest.raises(ValueError, match="MGNTVideoPipeline needs a video tokenizer"):
        MGNTVideoPipeline.from_pretrained(saved)


def test_a_pickle_next_to_stray_safetensors_is_never_loaded(damaged, monkeypatch):
    folder = damaged / "transformer"
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    os.rename(folder / "model.safetensors", folder / "stray.safetensors")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called: a pickle was about to be read")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(OSError, match="has no model.safetensors .* never a pickled pytorch_model.bin"):
        MGNTPipeline.from_pretrained(damaged)
    with pytest.raises(OSError, match="has no model.safetensors"):
        MGNTTransformer.from_pretrained(folder)


def test_use_safetensors_false_is_refused(saved):
    with pytest.raises(ValueError, match="use_safetensors=False is not allowed"):
        MGNTPipeline.from_pretrained(saved, use_safetensors=False)
    with pytest.raises(ValueError, match="use_safetensors=False is not allowed"):
        MGNTTransformer.from_pretrained(saved / "transformer", use_safetensors=False)


def test_a_bare_model_names_its_damaged_file(damaged):
    path = damaged / "transformer" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(OSError, match="transformer/model.safetensors .* is not a complete safetensors file"):
        MGNTTransformer.from_pretrained(damaged / "transformer")


@pytest.mark.parametrize("keyword, name", [("torch_dtype", "float16"), ("dtype", "torch.float16")])
def test_a_dtype_name_loads_that_dtype(saved, keyword, name):
    pipe = MGNTPipeline.from_pretrained(saved, **{keyword: name})
    assert pipe.transformer.dtype == torch.float16 and pipe.vqvae.dtype == torch.float16


@pytest.mark.parametrize("value", ["half-ish", "int8", 16])
def test_a_dtype_that_is_not_a_floating_dtype_is_refused(saved, value):
    with pytest.raises(ValueError, match="torch_dtype must be a floating torch.dtype or its name"):
        MGNTPipeline.from_pretrained(saved, torch_dtype=value)
