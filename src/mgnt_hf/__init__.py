"""mgnt_hf: MaGNeTS (Masked Generative Nested Transformers with Decode Time Scaling) on Hugging Face.

Importing the package is cheap: the names below load on first use (PEP 562 `__getattr__`), so the `mgnt` command
answers `--help` without importing torch. The first name used imports every component module, as an eager import
would. Saved pipelines name their component modules in `model_index.json` (e.g. `mgnt_hf.modeling_mgnt`); diffusers
imports those modules itself. Each model module registers its config and model with transformers' `AutoConfig` and
`AutoModel` when it is imported, so `from mgnt_hf import MGNTTransformer` (or any other name, or a pipeline load)
makes `AutoModel.from_pretrained` know saved mgnt_hf models; a bare `import mgnt_hf` does not import them yet.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "MGNTConfig": "configuration_mgnt",
    "MGNTKVCache": "modeling_mgnt",
    "MGNTTransformer": "modeling_mgnt",
    "MGNTTransformerOutput": "modeling_mgnt",
    "count_forward_flops": "modeling_mgnt",
    "MGNTVQConfig": "configuration_vq",
    "MGNTVQModel": "modeling_vq",
    "MGNTVQModelOutput": "modeling_vq",
    "MGNTFeatureClassifier": "modeling_feature_classifier",
    "MGNTFeatureClassifierConfig": "configuration_feature_classifier",
    "MGNTScheduler": "scheduling_mgnt",
    "MGNTSchedulerOutput": "scheduling_mgnt",
    "WIDTH_SCHEDULE_PRESETS": "scheduling_mgnt",
    "MGNTPipeline": "pipeline_mgnt",
    "MGNTPipelineOutput": "pipeline_mgnt",
    "MGNTInpaintPipeline": "pipeline_mgnt_inpaint",
    "MGNTInpaintPipelineOutput": "pipeline_mgnt_inpaint",
    "MGNTVideoPipeline": "pipeline_mgnt_video",
    "MGNTVideoPipelineOutput": "pipeline_mgnt_video",
    "export_to_video": "video_utils",
    "shipped": "resources",
}
# What an eager import of the package loaded (and registered with the Auto classes): loaded at the first name used.
_COMPONENT_MODULES = ("modeling_mgnt", "modeling_vq", "modeling_feature_classifier", "pipeline_mgnt",
                      "pipeline_mgnt_inpaint", "pipeline_mgnt_video")

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mgnt_hf' has no attribute {name!r}")
    for module in _COMPONENT_MODULES:
        importlib.import_module(f".{module}", __name__)
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

