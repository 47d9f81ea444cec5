"""mgnt_hf: MaGNeTS (Masked Generative Nested Transformers with Decode Time Scaling) on Hugging Face.

Every component module is imported eagerly: saved pipelines name these module paths in
`model_index.json` and diffusers does not import them itself.
"""

from transformers import AutoConfig, AutoModel

from .configuration_mgnt import MGNTConfig
from .modeling_mgnt import MGNTKVCache, MGNTTransformer, MGNTTransformerOutput, count_forward_flops
from .configuration_vq import MGNTVQConfig
from .modeling_vq import MGNTVQModel, MGNTVQModelOutput
from .configuration_feature_classifier import MGNTFeatureClassifierConfig
from .modeling_feature_classifier import MGNTFeatureClassifier
from .scheduling_mgnt import WIDTH_SCHEDULE_PRESETS, MGNTScheduler, MGNTSchedulerOutput
from .pipeline_mgnt import MGNTPipeline, MGNTPipelineOutput
from .pipeline_mgnt_inpaint import MGNTInpaintPipeline, MGNTInpaintPipelineOutput
from .pipeline_mgnt_video import MGNTVideoPipeline, MGNTVideoPipelineOutput
from .video_utils import export_to_video
from .resources import shipped

AutoConfig.register("mgnt", MGNTConfig, exist_ok=True)
AutoModel.register(MGNTConfig, MGNTTransformer, exist_ok=True)
AutoConfig.register("mgnt_vq", MGNTVQConfig, exist_ok=True)
AutoModel.register(MGNTVQConfig, MGNTVQModel, exist_ok=True)
AutoConfig.register("mgnt_feature_classifier", MGNTFeatureClassifierConfig, exist_ok=True)
AutoModel.register(MGNTFeatureClassifierConfig, MGNTFeatureClassifier, exist_ok=True)

__version__ = "0.1.0"

__all__ = [
    "MGNTConfig",
    "MGNTKVCache",
    "MGNTTransformer",
    "MGNTTransformerOutput",
    "count_forward_flops",
    "MGNTVQConfig",
    "MGNTVQModel",
    "MGNTVQModelOutput",
    "MGNTFeatureClassifier",
    "MGNTFeatureClassifierConfig",
    "MGNTScheduler",
    "MGNTSchedulerOutput",
    "WIDTH_SCHEDULE_PRESETS",
    "MGNTPipeline",
    "MGNTPipelineOutput",
    "MGNTInpaintPipeline",
    "MGNTInpaintPipelineOutput",
    "MGNTVideoPipeline",
    "MGNTVideoPipelineOutput",
    "export_to_video",
    "shipped",
]
