"""Save and load a model bundle: one folder (one Hub repo) holding every layer model.

Layout::

    config.json            layer-1 model, with custom_pipelines["radiology-ner"] and ner_layers
    model.safetensors
    tokenizer files
    radiology_ner.py       the pipeline module (remote code)
    layer_2/, layer_3/     the other layer models, each with its own copy of the tokenizer
    README.md              the model card
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase, pipeline

from hf_pipeline import radiology_ner
from hf_pipeline.model_card import write_model_card
from hf_pipeline.radiology_ner import LAYER_FOLDER, LAYERS_CONFIG_KEY, RadiologyNerPipeline

TASK = "radiology-ner"
PIPELINE_FILE = Path(radiology_ner.__file__).name
CUSTOM_PIPELINE = {
    TASK: {
        "impl": f"{Path(PIPELINE_FILE).stem}.{RadiologyNerPipeline.__name__}",
        "pt": ["AutoModelForTokenClassification"],
        "type": "text",
    }
}


def save_bundle(
    models: Sequence[PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | Path,
    layers: Sequence[int] = (1, 2, 3),
) -> Path:
    """Write the layer models and the tokenizer as one bundle that ``pipeline("radiology-ner")`` loads.

    Args:
        models: one token-classification model per entry of ``layers``, all with the same labels.
        tokenizer: the tokenizer every model was trained with; saved at the root and in each layer folder.
        output_dir: the bundle folder (created; existing files of the same names are overwritten).
        layers: the layer number of each model; layer 1 must come first, it is the bundle's root.

    Returns:
        The bundle folder.
    """
    layers = list(layers)
    if len(models) != len(layers) or not layers or layers[0] != 1:
        raise ValueError(f"Give one model per layer, layer 1 first; got {len(models)} models for layers {layers}.")
    output_dir = Path(output_dir)
    root_model = models[0]
    root_model.config.custom_pipelines = CUSTOM_PIPELINE
    setattr(root_model.config, LAYERS_CONFIG_KEY, layers)
    root_model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    shutil.copyfile(radiology_ner.__file__, output_dir / PIPELINE_FILE)
    for number, model in zip(layers[1:], models[1:]):
        folder = output_dir / LAYER_FOLDER.format(number)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    if not (output_dir / "README.md").exists():
        write_model_card(
            output_dir,
            labels=[root_model.config.id2label[i] for i in sorted(root_model.config.id2label)],
            base_model=getattr(root_model.config, "_name_or_path", None) or None,
            dataset=None,
        )
    return output_dir


def load_pipeline(model: str | Path, revision: str | None = None, **kwargs: Any) -> Pipeline:
    """``pipeline("radiology-ner", model=...)`` with this project's pipeline class instead of remote code.

    transformers reads ``config.json["custom_pipelines"]`` before its local task registry and then insists on
    ``trust_remote_code=True``; naming the class explicitly runs the installed code and needs no remote code.
    ``revision`` applies to every layer (transformers would pass it to layer 1 only).
    """
    return pipeline(
        TASK,
        model=str(model),
        pipeline_class=RadiologyNerPipeline,
        revision=revision,
        layer_revision=revision,
        **kwargs,
    )
