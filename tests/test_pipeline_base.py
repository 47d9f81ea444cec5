"""The pipelines' structure: image and video pipelines are siblings on MGNTBasePipeline, share the Hub mixin and
their card templates are shipped; the module paths that saved `model_index.json` files name still load the same
classes."""

import importlib
import json

import pytest

import mgnt_hf
from mgnt_hf import (MGNTInpaintPipeline, MGNTPipeline, MGNTScheduler, MGNTTransformer, MGNTVideoPipeline,
                     MGNTVQModel, shipped)
from mgnt_hf.hub_utils import MGNTHubMixin
from mgnt_hf.pipeline_mgnt_base import MGNTBasePipeline
from mgnt_hf.resources import DEFAULT_PIPELINE, DEFAULT_VIDEO_PIPELINE, IMAGE_CARD_TEMPLATE, VIDEO_CARD_TEMPLATE


PIPELINES = (MGNTPipeline, MGNTVideoPipeline, MGNTInpaintPipeline)


def test_the_image_video_and_inpainting_pipelines_are_siblings_on_the_base():
    for pipeline_class in PIPELINES:
        assert issubclass(pipeline_class, MGNTBasePipeline)
        assert not any(issubclass(pipeline_class, other) for other in PIPELINES if other is not pipeline_class)


def test_every_pipeline_loads_and_publishes_through_the_hub_mixin():
    for pipeline_class in PIPELINES:
        assert issubclass(pipeline_class, MGNTHubMixin)
        for name in ("from_pretrained", "download", "create_model_card", "push_to_hub"):
            assert getattr(pipeline_class, name).__qualname__ == f"MGNTHubMixin.{name}"


def test_each_pipeline_names_a_shipped_card_template():
    assert MGNTPipeline.model_card_template == IMAGE_CARD_TEMPLATE
    assert MGNTVideoPipeline.model_card_template == VIDEO_CARD_TEMPLATE
    assert MGNTInpaintPipeline.model_card_template == IMAGE_CARD_TEMPLATE  # the same model as MGNTPipeline
    for template in (IMAGE_CARD_TEMPLATE, VIDEO_CARD_TEMPLATE):
        text = shipped(template).read_text()
        assert text.startswith("---\n{{ card_data }}\n---\n") and "{{ license }}" in text


@pytest.mark.parametrize("module, name, expected", [
    ("mgnt_hf.pipeline_mgnt", "MGNTPipeline", MGNTPipeline),
    ("mgnt_hf.pipeline_mgnt_video", "MGNTVideoPipeline", MGNTVideoPipeline),
    ("mgnt_hf.pipeline_mgnt_inpaint", "MGNTInpaintPipeline", MGNTInpaintPipeline),
    ("mgnt_hf.modeling_mgnt", "MGNTTransformer", MGNTTransformer),
    ("mgnt_hf.modeling_vq", "MGNTVQModel", MGNTVQModel),
    ("mgnt_hf.scheduling_mgnt", "MGNTScheduler", MGNTScheduler),
])
def test_module_paths_of_saved_pipelines_resolve_to_the_same_classes(module, name, expected):
    assert getattr(importlib.import_module(module), name) is expected
    assert expected.__module__ == module  # what save_pretrained writes into model_index.json


@pytest.mark.parametrize("folder, pipeline_class", [(DEFAULT_PIPELINE, MGNTPipeline),
                                                    (DEFAULT_VIDEO_PIPELINE, MGNTVideoPipeline)])
def test_every_module_a_shipped_model_index_names_loads_its_class(folder, pipeline_class):
    index = json.loads((shipped(folder) / "model_index.json").read_text())
    assert getattr(importlib.import_module(index["_module"]), index["_class_name"]) is pipeline_class
    for component in ("transformer", "vqvae", "scheduler"):
        module, name = index[component]
        assert getattr(importlib.import_module(module), name) is getattr(mgnt_hf, name)

