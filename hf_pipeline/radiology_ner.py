"""The ``radiology-ner`` pipeline: overlapping entities from token classifiers that predict several tag sequences.

This module travels with every model bundle (it is copied next to ``config.json``, with the modules it imports:
``words.py``, words, windows, BIO decoding; ``schemes.py``, which sequences a bundle predicts and how their tags
become entities; ``heads.py``, ``crf.py`` and ``spans.py``, how each head decodes; ``int8.py``, ONNX Runtime for
``quantize="int8"``) and is loaded by ``pipeline("radiology-ner", model=..., trust_remote_code=True)``. It
therefore imports only torch, transformers, numpy, the standard library and those modules (``spans.py``, the span
head, also safetensors, which transformers itself requires).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pipelines.base import ChunkPipeline
from transformers.utils import cached_file

from .heads import DECODER_KEY, HEADS, Head, head_of
from .schemes import (
    ARCHITECTURE_KEY,
    LABELS_KEY,
    LAYERS_CONFIG_KEY,
    SCHEMES,
    check_labels,
    output_entities,
    scheme_of,
    sequence_labels,
    type_order,
)
from .words import invalid_text, locate_words, window_starts, word_spans

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
LAYER_FOLDER = "layer_{}"
# config.json keys of a bundle's root model (the scheme's and head's keys: schemes.py, heads.py):
WINDOW_KEY = "ner_window"  # the window length (tokens) the bundle was trained with: the default for prediction
VOCABULARY_KEY = "ner_vocabulary"  # a digest of the tokenizer's vocabulary the bundle was saved with
ARCHITECTURES = ("per_layer", "shared")
DECODERS = tuple(HEADS)
__all__ = ["DECODER_KEY", "LABELS_KEY", "SCHEMES", "Decoder", "RadiologyNerPipeline", "special_tokens"]
# Windows per forward pass by default: amortises the per-call cost on CPU and keeps a GPU busy.
DEFAULT_BATCH_SIZE = 32
QUANTIZATIONS = ("int8",)


def vocabulary_digest(tokenizer: PreTrainedTokenizerBase) -> str:
    """A digest of a tokenizer's vocabulary (token to id): what a bundle records to know its own tokenizer."""
    vocabulary = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """Token ids put before and after every window: ``[CLS]`` and ``[SEP]`` for BERT, ``<s>`` and ``</s>`` for
    RoBERTa and XLM-R, none where the tokenizer has no such token."""
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    return ([cls] if cls is not None else []), ([sep] if sep is not None else [])


class RadiologyNerPipeline(ChunkPipeline):
    """Overlapping named entities from a bundle of token classifiers that predict several IOB2 tag sequences.

    The sequences are the bundle's scheme (``schemes.py``: nesting layers, or entity types); a shared bundle
    predicts all of them with one encoder, a per-layer bundle holds one model per layer (the root holds layer 1
    and the tokenizer, ``layer_2/``, ``layer_3/`` the others). Every text is split into words once, tokenized
    once, cut into overlapping windows of at most the model's maximum length, and every model runs on the same
    encodings; the head (``heads.py``) decodes each sequence and the scheme merges them into entities.
    """

    def __init__(
        self,
        *args: Any,
        layer_models: Sequence[PreTrainedModel] | None = None,
        layer_revision: str | None = None,
        quantize: str | None = None,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("batch_size") is None:
            kwargs["batch_size"] = DEFAULT_BATCH_SIZE
        super().__init__(*args, **kwargs)
        config = self.model.config
        if self.tokenizer is None:
            raise ValueError("This bundle has no readable tokenizer: save it again with hf_pipeline.save_bundle.")
        self.architecture = getattr(config, ARCHITECTURE_KEY, None) or "per_layer"
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"config.json[{ARCHITECTURE_KEY!r}] is {self.architecture!r}; expected one of {ARCHITECTURES}. "
                "Save the bundle again with hf_pipeline.save_bundle."
            )
        self.scheme = scheme_of(config)
        if self.architecture == "shared":
            self.layer_models = [self.model]
        else:
            if self.scheme != "depth":
                raise ValueError(
                    f"A per_layer bundle holds one model per nesting layer (scheme 'depth'); this one says scheme "
                    f"{self.scheme!r}. Train the {self.scheme} scheme with --architecture shared."
                )
            if layer_models is None:
                layer_models = self._load_other_layers(layer_revision)
            self.layer_models = [self.model, *layer_models]
        self.layer_numbers = list(getattr(config, LAYERS_CONFIG_KEY, None) or range(1, len(self.layer_models) + 1))
        self.sequence_labels = sequence_labels(config, len(self.layer_models))
        self.head = head_of(config)
        self.decoder = self.head.name
        if (self.scheme == "span") != (self.decoder == "span"):
            raise ValueError(
                f"config.json says scheme {self.scheme!r} and decoder {self.decoder!r}: the span head and the span "
                "scheme go together. Save the bundle again with hf_pipeline.save_bundle."
            )
        check_labels(self.sequence_labels)
        self._check_tokenizer_fits()
        self.head_parameters = self.head.parameters(
            [m.config for m in self.layer_models], self.sequence_labels, self._bundle_file(layer_revision)
        )
        if self.architecture == "shared":
            self._check_shared_layout()
        else:
            self._check_layers_agree()
        self.decode_words = Decoder(self.head, self.head_parameters, self.sequence_labels)
        self.merged_duplicates = 0  # entities predicted by two sequences, returned once (counted over every call)
        for model in self.layer_models[1:]:
            model.to(self.device).eval()
        self.max_window = self._max_window()
        trained_window = getattr(config, WINDOW_KEY, None)
        if trained_window is not None and (type(trained_window) is not int or trained_window < 3):
            raise ValueError(
                f"config.json[{WINDOW_KEY!r}] is {trained_window!r}; expected the window length in tokens the bundle "
                "was trained with (a whole number of at least 3). Fix or remove the key."
            )
        self.default_window = min(trained_window, self.max_window) if trained_window else self.max_window
        self.quantization = quantize
        self.int8_models: list[Any] | None = None
        if quantize is not None:
            self._quantize(quantize, layer_revision or _revision_of_this_module(self.model.name_or_path))

    def _quantize(self, quantize: str, revision: str | None) -> None:
        """int8 with ONNX Runtime (``int8.py``): the bundle's int8 graphs, or ones exported now."""
        if quantize not in QUANTIZATIONS:
            raise ValueError(f"quantize={quantize!r}: choose one of {QUANTIZATIONS}, or None for full precision.")
        if self.device.type != "cpu":
            raise ValueError(f"quantize={quantize!r} runs on CPU only; this pipeline is on {self.device}.")
        from .int8 import graph_files, load_int8

        files = graph_files(self.architecture, self.layer_numbers)
        self.int8_models = load_int8(self.layer_models, files, self.model.name_or_path, self.max_window, revision)

    def _check_shared_layout(self) -> None:
        """A shared bundle's classifier must have one block of labels per tag sequence, all of the same size."""
        config = self.model.config
        sizes = {len(labels) for labels in self.sequence_labels}
        expected = self.head.outputs(self.sequence_labels, self.head_parameters)
        if not self.sequence_labels or 0 in sizes or len(sizes) != 1 or config.num_labels != expected:
            raise ValueError(
                f"This shared-encoder bundle ({self.scheme} scheme, {self.decoder} head) lists "
                f"{len(self.sequence_labels)} tag sequences of {sorted(sizes)} labels in config.json, so its "
                f"classifier needs {expected} outputs, but it has {config.num_labels}. Save the bundle again with "
                "hf_pipeline.save_bundle."
            )

    def _bundle_file(self, revision: str | None) -> Any:
        """A function from a file name of the bundle to its local path (a folder's file, or the Hub cache's)."""
        source = self.model.name_or_path
        revision = revision or _revision_of_this_module(source)
        return lambda name: cached_file(source, name, revision=revision)

    def _check_tokenizer_fits(self) -> None:
        """Every token id of the tokenizer must have an embedding (every layer shares layer 1's vocabulary), and the
        tokenizer must be the one the bundle was saved with (``config.json["ner_vocabulary"]``, a digest)."""
        vocab_size = self.model.config.vocab_size
        if len(self.tokenizer) > vocab_size:
            raise ValueError(
                f"The tokenizer has {len(self.tokenizer)} tokens but the model only {vocab_size}: "
                "this tokenizer does not belong to this bundle."
            )
        recorded = getattr(self.model.config, VOCABULARY_KEY, None)
        if recorded is not None and recorded != vocabulary_digest(self.tokenizer):
            raise ValueError(
                f"The tokenizer files ({len(self.tokenizer)} tokens) are not the ones this bundle was saved with "
                f"(config.json[{VOCABULARY_KEY!r}] records another vocabulary): they are missing, damaged or come from "
                "another model. Copy the tokenizer files of the training run back, or save the bundle again."
            )

    def _load_other_layers(self, revision: str | None) -> list[PreTrainedModel]:
        """Load ``layer_2/`` ... from the bundle the root model came from, at the same revision."""
        source = self.model.name_or_path
        numbers = [n for n in getattr(self.model.config, LAYERS_CONFIG_KEY, [1]) if n != 1]
        revision = revision or _revision_of_this_module(source)
        models = []
        for number in numbers:
            folder = LAYER_FOLDER.format(number)
            if os.path.isdir(source) and not os.path.isfile(os.path.join(source, folder, "config.json")):
                raise OSError(
                    f"The bundle {source} lists layer {number} in config.json[{LAYERS_CONFIG_KEY!r}] but has no "
                    f"{folder}/config.json. Save the bundle again with hf_pipeline.save_bundle, or remove "
                    f"{number} from {LAYERS_CONFIG_KEY}."
                )
            self._check_tokenizer_matches(
                AutoTokenizer.from_pretrained(source, subfolder=folder, revision=revision), number
            )
            models.append(
                AutoModelForTokenClassification.from_pretrained(
                    source, subfolder=folder, revision=revision, dtype=self.model.dtype
                )
            )
        return models

    def _check_tokenizer_matches(self, layer_tokenizer: PreTrainedTokenizerBase, number: int) -> None:
        """The layer's own tokenizer copy must have the root tokenizer's vocabulary (also catches a missing copy)."""
        if layer_tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise ValueError(
                f"The tokenizer in {LAYER_FOLDER.format(number)}/ has a different vocabulary from the bundle's root "
                f"tokenizer ({len(layer_tokenizer)} vs {len(self.tokenizer)} tokens): every layer must be fine-tuned "
                "from the same tokenizer. Save the bundle again with hf_pipeline.save_bundle."
            )

    def _check_layers_agree(self) -> None:
        root = self.model.config
        if len(self.layer_numbers) != len(self.layer_models):
            raise ValueError(
                f"config.json[{LAYERS_CONFIG_KEY!r}] lists layers {self.layer_numbers} but "
                f"{len(self.layer_models)} models were given."
            )
        for number, model in zip(self.layer_numbers[1:], self.layer_models[1:]):
            config = model.config
            if config.vocab_size != root.vocab_size:
                raise ValueError(
                    f"Layer {number} has a vocabulary of {config.vocab_size} tokens but layer 1 has "
                    f"{root.vocab_size}: every layer must be fine-tuned from the same tokenizer. Retrain "
                    "the layer from the same base model."
                )
            if dict(config.id2label) != dict(root.id2label):
                raise ValueError(
                    f"Layer {number} has labels {sorted(config.id2label.values())} but layer 1 has "
                    f"{sorted(root.id2label.values())}: every layer must use the dataset's one label set."
                )

    def _max_window(self) -> int:
        limits = [self.model.config.max_position_embeddings, self.tokenizer.model_max_length]
        return int(min(limit for limit in limits if limit and limit > 0))

    def get_inference_context(self) -> type[torch.inference_mode]:
        return torch.inference_mode

    def _sanitize_parameters(
        self,
        layers: Iterable[int] | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            names = ", ".join(sorted(kwargs))
            raise TypeError(
                f"radiology-ner got unexpected arguments: {names}. It takes layers, max_length, stride, "
                "batch_size and num_workers."
            )
        preprocess: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if layers is not None:
            layers = sorted(set(layers))
            if not all(isinstance(n, int) and n >= 1 for n in layers):
                raise ValueError(f"layers={layers}: nesting layers are whole numbers from 1 (outermost).")
            postprocess["layers"] = layers
        if max_length is not None:
            if not 3 <= max_length <= self.max_window:
                raise ValueError(f"max_length must be between 3 and the model's maximum, {self.max_window}.")
            preprocess["max_length"] = max_length
        if stride is not None:
            if stride < 0:
                raise ValueError(f"stride={stride}: the overlap of consecutive windows is a number of tokens >= 0.")
            preprocess["stride"] = stride
        return preprocess, {}, postprocess

    def __call__(self, inputs: str | Sequence[str] | Iterable[str], **kwargs: Any) -> Any:
        """Find overlapping entities in one text, a list of texts, or a stream of texts.

        Args:
            inputs: the report text(s): a str; a list or tuple (run shortest first, so that a batch holds windows
                of similar length, and returned in input order); any iterator or generator, or a torch
                ``Dataset`` of str (e.g. ``KeyDataset(dataset, "text")``), which give an iterator of results.
            layers: which nesting layers to return (default: every entity; 1 is outermost).
            max_length: window length in tokens, special tokens included (default: the window the bundle was
                trained with, ``config.json["ner_window"]``, else the model's maximum).
            stride: tokens shared by consecutive windows of a long text (default: 64, at most a fifth of the
                window; a word is read in the window where it is farthest from an edge).
            batch_size: how many windows run through the models at once (default 32).

        Returns:
            For each text a list of dicts sorted by (start, -end, layer), with keys
            ``entity_group`` (the type), ``score`` (mean probability of the entity's words in its sequence;
            the span head: the span's probability), ``word`` (``text[start:end]``), ``start``, ``end``
            (end-exclusive character offsets) and
            ``layer`` (the nesting depth the dataset's layering policy gives the entity among this text's
            entities, 1 outermost). One text gives one list; a list or generator gives one list per text.
        """
        if isinstance(inputs, (list, tuple)):
            for item in inputs:
                _check_text(item)
            if not inputs:
                return []
            order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
            results = super().__call__([inputs[i] for i in order], **kwargs)
            in_input_order: list[Any] = [None] * len(inputs)
            for position, result in zip(order, results):
                in_input_order[position] = result
            return in_input_order
        if isinstance(inputs, Iterator) and not isinstance(inputs, GeneratorType):
            inputs = (text for text in inputs)  # transformers streams generators and datasets only
        if not isinstance(inputs, (str, GeneratorType, torch.utils.data.Dataset)):
            raise TypeError(f"radiology-ner expects a str or a list of str, got {type(inputs).__name__}.")
        return super().__call__(inputs, **kwargs)

    def preprocess(
        self, text: str, max_length: int | None = None, stride: int | None = None
    ) -> Iterator[dict[str, Any]]:
        _check_text(text)
        spans = word_spans(text)
        prefix, suffix = special_tokens(self.tokenizer)
        window = (max_length or self.default_window) - len(prefix) - len(suffix)
        if stride is not None and stride >= window:
            raise ValueError(f"stride={stride} must be smaller than the window ({window} tokens without specials).")
        encoding = self.tokenizer(
            [text[s:e] for s, e in spans] or [""],
            is_split_into_words=True,
            add_special_tokens=False,
            verbose=False,
        )
        token_ids = encoding["input_ids"] if spans else []
        word_ids = encoding.word_ids() if spans else []
        starts = window_starts(len(token_ids), window, stride)
        document = _Document(text, spans, word_ids, starts, window)
        for index, start in enumerate(starts):
            ids = prefix + token_ids[start : start + window] + suffix
            yield {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                "is_last": index == len(starts) - 1,
                "document": document if index == 0 else None,
            }

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        is_last = model_inputs.pop("is_last")
        document = model_inputs.pop("document")
        if self.architecture == "shared":  # one forward; the head reads the classifier's outputs
            outputs = self.head.window_outputs(self._logits(0, model_inputs), len(self.sequence_labels))
        else:
            outputs = torch.cat(
                [self.head.window_outputs(self._logits(i, model_inputs), 1) for i in range(len(self.layer_models))],
                dim=2,
            )
        return {"probabilities": outputs.transpose(1, 2), "is_last": is_last, "document": document}

    def _logits(self, index: int, model_inputs: dict[str, Any]) -> torch.Tensor:
        """The logits of the ``index``-th model: its int8 graph when quantized, else the torch model."""
        if self.int8_models is not None:
            return self.int8_models[index](**model_inputs)
        return self.layer_models[index](**model_inputs).logits

    def postprocess(self, all_outputs: list[dict[str, Any]], layers: Sequence[int] | None = None) -> list[dict]:
        document: _Document = all_outputs[0]["document"]
        text, spans = document.text, document.spans
        words, located = locate_words(
            document.word_ids, document.starts, document.window, offset=len(special_tokens(self.tokenizer)[0])
        )
        if not words:
            return []
        word_probabilities = _word_probabilities([output["probabilities"][0] for output in all_outputs], located)
        entities, merged = self.decode_words(text, [spans[word] for word in words], word_probabilities)
        self.merged_duplicates += merged
        return [e for e in entities if layers is None or e["layer"] in layers]


@dataclass(frozen=True)
class Decoder:
    """Words' ``[word, sequence, feature]`` outputs to output entities: the head finds the entities (a tag head
    decodes each sequence and the scheme merges them), and each gets its nesting layer. The pipeline and validation
    during training both decode through this."""

    head: Head
    parameters: Any
    sequence_labels: Sequence[Sequence[str]]

    def __call__(
        self, text: str, spans: Sequence[tuple[int, int]], word_probabilities: np.ndarray
    ) -> tuple[list[dict[str, Any]], int]:
        """The entities (output dicts) and how many duplicates predicted by two sequences were merged."""
        entities, merged = self.head.entities(word_probabilities, self.sequence_labels, self.parameters, spans)
        return output_entities(text, entities, type_order(self.sequence_labels)), merged


@dataclass(frozen=True)
class _Document:
    """A text's words, subwords and windows, carried with its first window (an object, not a tuple, so that
    transformers does not walk its lists element by element each time it moves a batch between devices)."""

    text: str
    spans: list[tuple[int, int]]
    word_ids: list[int | None]
    starts: list[int]
    window: int


def _word_probabilities(window_probabilities: Sequence[torch.Tensor], located: Sequence[tuple[int, int]]) -> Any:
    """``[word, layer, label]`` probabilities, each word read at its (window, position) in ``located``."""
    where = np.array(located).reshape(-1, 2)
    result = np.empty((len(where), *window_probabilities[0].shape[::2]), dtype=np.float32)  # [word, layer, label]
    for window in np.unique(where[:, 0]):
        rows = np.flatnonzero(where[:, 0] == window)
        result[rows] = window_probabilities[window][:, where[rows, 1]].transpose(0, 1).numpy()
    return result


def _check_text(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"radiology-ner expects each input to be a str, got {type(text).__name__}.")
    problem = invalid_text(text)
    if problem:
        raise ValueError(f"The text has {problem}.")


def _revision_of_this_module(source: str) -> str | None:
    """The commit this module was loaded from, when transformers fetched it from a Hub repo.

    ``pipeline(..., revision=...)`` resolves the revision to a commit and stores remote code under a
    folder named by that commit, but does not pass the revision on to the pipeline class. Reading it
    back here makes the other layers load from the very same commit as layer 1.
    """
    folder = Path(__file__).resolve().parent.name
    if not os.path.isdir(source) and _COMMIT_RE.match(folder):
        return folder
    return None
