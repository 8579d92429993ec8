"""Overlapping NER for Spanish radiology reports: the pipeline, the bundle and the scorer.

``import hf_pipeline`` registers the ``radiology-ner`` task with transformers.
"""

from transformers import AutoModelForTokenClassification
from transformers.pipelines import PIPELINE_REGISTRY

from hf_pipeline.bundle import TASK, load_pipeline, save_bundle
from hf_pipeline.radiology_ner import RadiologyNerPipeline, decode_bio, word_spans

PIPELINE_REGISTRY.register_pipeline(
    TASK, pipeline_class=RadiologyNerPipeline, pt_model=AutoModelForTokenClassification, type="text"
)

__all__ = ["TASK", "RadiologyNerPipeline", "decode_bio", "load_pipeline", "save_bundle", "word_spans"]
