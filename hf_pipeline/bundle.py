"""Save and load a model bundle: one folder (one Hub repo) holding every layer model.

Layout::

    config.json            layer-1 model, with custom_pipelines["radiology-ner"] and ner_layers
    model.safetensors
    span_head.safetensors  span head only: the head's own weights (spans.py)
    tokenizer files
    radiology_ner.py       the pipeline module (remote code), with the modules it imports (PIPELINE_MODULES): words.py
                           (words, windows, BIO), schemes.py (tag sequences to entities), heads.py, crf.py and
                           spans.py (decoding), int8.py (ONNX Runtime int8)
    onnx/                  optional: the int8 graphs (add_int8) for quantize="int8"
    layer_2/, layer_3/     the other layer models, each with its own copy of the tokenizer
    README.md              the model card

A ``shared`` bundle (``config.json["ner_architecture"] == "shared"``) holds one encoder whose token classifier has
one block of outputs per tag sequence (sequence-major) and no layer folders: one forward serves every sequence, and
``AutoModelForTokenClassification`` still loads it. Its sequences are the scheme's (``ner_scheme``, ``schemes.py``):
``depth``, one per layer over ``ner_labels``; ``type``, one per entity type and sub-layer (``ner_sequences``);
``span``, none: the classifier gives each token a start and an end representation that the span head scores.
``per_layer`` (the paper's method, depth scheme only) is the default.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import Pipeline, PreTrainedModel, PreTrainedTokenizerBase, pipeline

from hf_pipeline import crf, handler, heads, int8, radiology_ner, schemes, spans, words
from hf_pipeline.heads import DECODER_KEY
from hf_pipeline.model_card import write_model_card
from hf_pipeline.radiology_ner import (
    LAYER_FOLDER,
    VOCABULARY_KEY,
    WINDOW_KEY,
    RadiologyNerPipeline,
    vocabulary_digest,
)
from hf_pipeline.schemes import (
    ARCHITECTURE_KEY,
    LABELS_KEY,
    LAYERS_CONFIG_KEY,
    SCHEME_KEY,
    SEQUENCES_KEY,
    scheme_of,
    sequence_labels,
)

TASK = "radiology-ner"
PIPELINE_FILE = Path(radiology_ner.__file__).name
# The code a bundle carries: the pipeline module, every module it imports, and the Inference Endpoints handler.
PIPELINE_MODULES = tuple(m.__file__ for m in (radiology_ner, words, schemes, heads, crf, spans, int8, handler))
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
    window: int | None = None,
) -> Path:
    """Write the layer models and the tokenizer as one bundle that ``pipeline("radiology-ner")`` loads.

    Args:
        models: one token-classification model per entry of ``layers``, all with the same labels; or one
            shared-encoder model made by :func:`make_shared_config` (its config says so).
        tokenizer: the tokenizer every model was trained with; saved at the root and in each layer folder.
        output_dir: the bundle folder (created; existing files of the same names are overwritten).
        layers: the layer number of each model (of each head, for a shared model); layer 1 comes first.
        window: the window length (tokens, special tokens included) the models were trained with; the
            pipeline predicts with it by default (``config.json["ner_window"]``).

    Returns:
        The bundle folder.
    """
    layers = list(layers)
    root_model = models[0] if models else None
    shared = root_model is not None and getattr(root_model.config, ARCHITECTURE_KEY, None) == "shared"
    if shared and (len(models) != 1 or list(getattr(root_model.config, LAYERS_CONFIG_KEY)) != layers):
        raise ValueError(f"A shared-encoder bundle is one model whose config lists layers {layers}; got {len(models)}.")
    if not shared and (len(models) != len(layers) or not layers or layers[0] != 1):
        raise ValueError(f"Give one model per layer, layer 1 first; got {len(models)} models for layers {layers}.")
    output_dir = Path(output_dir)
    root_model.config.custom_pipelines = CUSTOM_PIPELINE
    setattr(root_model.config, LAYERS_CONFIG_KEY, layers)
    setattr(root_model.config, ARCHITECTURE_KEY, "shared" if shared else "per_layer")
    has_crf = [getattr(model.config, crf.TRANSITIONS_KEY, None) is not None for model in models]
    if any(has_crf) and not all(has_crf):
        raise ValueError("Every layer model must have a CRF head (ner_crf_transitions in its config), or none.")
    decoder = "crf" if all(has_crf) else "softmax"
    if scheme_of(root_model.config) == "span":
        if getattr(root_model, spans.WEIGHTS_ATTRIBUTE, None) is None:
            raise ValueError(
                "A span-scheme model carries its span head's weights (trained by train.py); this has none."
            )
        decoder = "span"
    setattr(root_model.config, DECODER_KEY, decoder)
    setattr(root_model.config, SCHEME_KEY, scheme_of(root_model.config))
    if window:
        setattr(root_model.config, WINDOW_KEY, int(window))
    setattr(root_model.config, VOCABULARY_KEY, vocabulary_digest(tokenizer))
    shutil.rmtree(output_dir / int8.INT8_FOLDER, ignore_errors=True)  # int8 graphs of earlier weights: stale
    root_model.save_pretrained(output_dir)
    spans.save_weights(root_model, output_dir)
    tokenizer.save_pretrained(output_dir)
    for module in PIPELINE_MODULES:
        shutil.copyfile(module, output_dir / Path(module).name)
    for number, model in zip(layers[1:], models[1:]):
        folder = output_dir / LAYER_FOLDER.format(number)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    if not (output_dir / "README.md").exists():
        write_model_card(
            output_dir,
            labels=all_labels(root_model.config, len(models)),
            base_model=getattr(root_model.config, "_name_or_path", None) or None,
            dataset=None,
            architecture="shared" if shared else "per_layer",
            decoder=getattr(root_model.config, DECODER_KEY),
            scheme=scheme_of(root_model.config),
        )
    return output_dir


def add_int8(bundle_dir: str | Path) -> list[Path]:
    """Export the bundle's models as int8 ONNX graphs into ``bundle_dir/onnx/``, which the pipeline then uses for
    ``quantize="int8"`` with no export step (needs onnxruntime, onnx and onnxscript)."""
    recognizer = load_pipeline(bundle_dir)
    files = int8.graph_files(recognizer.architecture, recognizer.layer_numbers)
    return [
        int8.export_int8(model, Path(bundle_dir) / relative, recognizer.max_window)
        for model, relative in zip(recognizer.layer_models, files)
    ]


def all_labels(config: Any, models: int = 1) -> list[str]:
    """Every IOB2 label name a bundle predicts, ``O`` first, each once (the model card lists their types)."""
    return list(dict.fromkeys(["O", *(label for labels in sequence_labels(config, models) for label in labels)]))


def make_shared_config(
    config: Any, labels: Sequence[str], layers: Sequence[int], type_sequences: Sequence[Sequence] | None = None
) -> None:
    """Turn a token-classification config into a shared-encoder one, with one block of outputs per tag sequence.

    Depth scheme (default): one sequence per entry of ``layers``, each over ``labels``; outputs named
    ``L<layer>-<label>``. Type scheme: ``type_sequences`` lists ``[type, sub-layer]`` of each sequence, each over
    ``O``, ``B-<type>``, ``I-<type>`` (outputs ``S<index>-<label>``); ``layers`` are the nesting layers the
    bundle's output is shown in (the Space has a view per layer).
    """
    setattr(config, ARCHITECTURE_KEY, "shared")
    setattr(config, LAYERS_CONFIG_KEY, list(layers))
    if type_sequences is None:
        setattr(config, SCHEME_KEY, "depth")
        setattr(config, LABELS_KEY, list(labels))
        names = [f"L{layer}-{label}" for layer in layers for label in labels]
    else:
        setattr(config, SCHEME_KEY, "type")
        setattr(config, SEQUENCES_KEY, [[kind, int(sub)] for kind, sub in type_sequences])
        names = [f"S{index}-{label}" for index, block in enumerate(sequence_labels(config)) for label in block]
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: index for index, name in enumerate(names)}


def make_span_config(
    config: Any,
    types: Sequence[str],
    layers: Sequence[int],
    max_words: int,
    dims: int,
    same_type_overlaps: bool,
    scorer: str,
) -> None:
    """Turn a token-classification config into a span-head one: ``2 x dims`` classifier outputs per token (the start
    and end representations the span head reads, ``spans.py``), the types it scores, the longest span ``max_words``
    (words), whether two entities of one type may overlap and how spans are scored (``scorer``, one of
    ``spans.SCORER_WEIGHTS``). ``layers``: the nesting layers its output is shown in."""
    setattr(config, ARCHITECTURE_KEY, "shared")
    setattr(config, LAYERS_CONFIG_KEY, list(layers))
    setattr(config, SCHEME_KEY, "span")
    setattr(config, spans.TYPES_KEY, list(types))
    setattr(config, spans.MAX_WORDS_KEY, int(max_words))
    setattr(config, spans.OVERLAPS_KEY, bool(same_type_overlaps))
    setattr(config, spans.SCORER_KEY, scorer)
    names = [f"{part}-{index}" for part in ("start", "end") for index in range(dims)]
    config.num_labels = len(names)
    config.id2label = dict(enumerate(names))
    config.label2id = {name: index for index, name in enumerate(names)}


def split_shared(model: PreTrainedModel) -> list[PreTrainedModel]:
    """Per-sequence copies of a shared-encoder model: the same encoder, each with its own sequence's classifier rows.

    Every copy is a plain token classifier (``id2label`` = the sequence's labels: a layer's, or ``O``, ``B-T``,
    ``I-T`` for a type-scheme sequence) that the stock ``token-classification`` pipeline runs. For a depth-scheme
    model, ``save_bundle(split_shared(m), ...)`` is a per-layer bundle that predicts exactly what the shared bundle
    predicts (at three times the cost).
    """
    config = model.config
    if scheme_of(config) == "span":
        raise ValueError("A span-head model has no tag sequences to split: it scores spans, not tags.")
    copies = []
    first = 0
    for index, labels in enumerate(sequence_labels(config)):
        layer_model = copy.deepcopy(model)
        rows = slice(first, first + len(labels))
        first += len(labels)
        classifier = layer_model.classifier
        classifier.weight.data = classifier.weight.data[rows].clone()
        classifier.bias.data = classifier.bias.data[rows].clone()
        classifier.out_features = len(labels)
        layer_config = layer_model.config
        layer_config.num_labels = len(labels)
        layer_config.id2label = dict(enumerate(labels))
        layer_config.label2id = {label: i for i, label in enumerate(labels)}
        for key in (ARCHITECTURE_KEY, LABELS_KEY, SCHEME_KEY, SEQUENCES_KEY):
            if hasattr(layer_config, key):
                delattr(layer_config, key)
        transitions = getattr(config, crf.TRANSITIONS_KEY, None)
        if transitions is not None:
            setattr(layer_config, crf.TRANSITIONS_KEY, [transitions[index]])
        copies.append(layer_model)
    return copies


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
