"""The ``radiology-ner`` pipeline: overlapping entities from one token classifier per layer.

This module travels with every model bundle (it is copied next to ``config.json``) and is loaded by
``pipeline("radiology-ner", model=..., trust_remote_code=True)``. It therefore imports only torch,
transformers, numpy and the standard library. It is also the one home of the word tokenizer and the
BIO decoder that the dataset builder uses, so training data and predictions share the same words.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.pipelines.base import ChunkPipeline

# Combining marks (accents typed as a separate code point) stay inside the word they modify.
# A byte order mark is not a token (brat counts it as character 0 of a file).
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0610-\u061a\u064b-\u065f"
    "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
)
# Letters and digits are separate words ("5mm" -> "5", "mm"): fewer gold boundaries fall inside a word.
_WORD_RE = re.compile(rf"(?:[^\W\d_]|[{_MARKS}])+|(?:\d|[{_MARKS}])+|[^\s{_MARKS}\ufeff]")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
LAYER_FOLDER = "layer_{}"
LAYERS_CONFIG_KEY = "ner_layers"
# config.json keys of a bundle's root model:
ARCHITECTURE_KEY = "ner_architecture"  # "per_layer" (one model per layer) or "shared" (one encoder, a head per layer)
LABELS_KEY = "ner_labels"  # shared: the label names of every layer (the classifier has layers x labels outputs)
WINDOW_KEY = "ner_window"  # the window length (tokens) the bundle was trained with: the default for prediction
ARCHITECTURES = ("per_layer", "shared")


def word_spans(text: str) -> list[tuple[int, int]]:
    """Split ``text`` into words and single punctuation marks, as end-exclusive character spans.

    A word is a run of letters (any script) or a run of decimal digits, with their combining marks; a letter
    glued to a digit starts a new word. Every other non-space character is a token of its own. Underscores
    count as punctuation.

    >>> text = "Quiste de 3,5mm en T12."
    >>> [text[s:e] for s, e in word_spans(text)]
    ['Quiste', 'de', '3', ',', '5', 'mm', 'en', 'T', '12', '.']
    """
    return [match.span() for match in _WORD_RE.finditer(text)]


@dataclass(frozen=True)
class Span:
    """A decoded entity in word indices: words ``first`` to ``last`` inclusive."""

    type: str
    first: int
    last: int


def decode_bio(tags: Sequence[str]) -> list[Span]:
    """Decode one layer of IOB2 tags into entities.

    ``B-T`` starts an entity; ``I-T`` continues it only right after ``B-T``/``I-T`` of the same type;
    an ``I-T`` after ``O`` or another type starts a new entity (lenient repair).

    >>> decode_bio(["B-Finding", "I-Finding", "O", "I-Degree", "B-Measure", "I-Degree"])
    [Span(type='Finding', first=0, last=1), Span(type='Degree', first=3, last=3), \
Span(type='Measure', first=4, last=4), Span(type='Degree', first=5, last=5)]
    """
    spans: list[Span] = []
    current: Span | None = None
    for index, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current.type == label and current.last == index - 1:
            current = Span(label, current.first, index)
            spans[-1] = current
        elif prefix in ("B", "I"):
            current = Span(label, index, index)
            spans.append(current)
        else:
            current = None
    return spans


def window_starts(num_tokens: int, window: int, overlap: int | None = None) -> list[int]:
    """Start positions of windows of ``window`` tokens covering ``num_tokens``, consecutive ones sharing
    ``overlap`` tokens (default: half a window); the last window ends at the last token.

    >>> window_starts(10, 4)
    [0, 2, 4, 6]
    >>> window_starts(3, 4)
    [0]
    >>> window_starts(10, 4, overlap=1)
    [0, 3, 6]
    """
    if num_tokens <= window:
        return [0]
    step = max(1, window - (window // 2 if overlap is None else overlap))
    starts = list(range(0, num_tokens - window, step))
    return starts + [num_tokens - window]


def locate_words(
    word_ids: Sequence[int | None], starts: Sequence[int], window: int, offset: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """The words that have a subword, and for each the (window index, position in that window) of its first
    subword in the window where it is farthest from an edge; ``offset`` counts the tokens put before each window.

    >>> locate_words([0, 0, 1, 2, 2, 3], [0, 2], 4, offset=1)
    ([0, 1, 2, 3], [(0, 1), (0, 3), (1, 2), (1, 4)])
    """
    first_token = _first_token_of_each_word(word_ids)
    words = sorted(first_token)
    located = []
    for word in words:
        chosen = best_window(first_token[word], starts, window)
        located.append((chosen, offset + first_token[word] - starts[chosen]))
    return words, located


def best_window(position: int, starts: Sequence[int], window: int) -> int:
    """Index of the window in which ``position`` is farthest from an edge (earliest on ties).

    >>> best_window(5, [0, 2, 4, 6], 4)  # windows 0-3, 2-5, 4-7, 6-9: in 4-7 it has a token on each side
    2
    """
    first, last = bisect.bisect_left(starts, position - window + 1), bisect.bisect_right(starts, position)
    return max(range(first, last), key=lambda i: min(position - starts[i], starts[i] + window - 1 - position))


class RadiologyNerPipeline(ChunkPipeline):
    """Overlapping named entities from a bundle of token classifiers, one per nesting layer.

    The bundle's root holds the layer-1 model and the tokenizer; ``layer_2/``, ``layer_3/`` hold the
    other layers. Every text is split into words once, tokenized once, cut into overlapping windows
    of at most the model's maximum length, and all layer models run on the same encodings.
    """

    def __init__(
        self,
        *args: Any,
        layer_models: Sequence[PreTrainedModel] | None = None,
        layer_revision: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        config = self.model.config
        self.architecture = getattr(config, ARCHITECTURE_KEY, None) or "per_layer"
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"config.json[{ARCHITECTURE_KEY!r}] is {self.architecture!r}; expected one of {ARCHITECTURES}. "
                "Save the bundle again with hf_pipeline.save_bundle."
            )
        if self.architecture == "shared":
            self.layer_models = [self.model]
            self.layer_numbers = list(getattr(config, LAYERS_CONFIG_KEY, None) or [1])
            self.labels = list(getattr(config, LABELS_KEY, None) or [])
            self._check_shared_layout()
        else:
            if layer_models is None:
                layer_models = self._load_other_layers(layer_revision)
            self.layer_models = [self.model, *layer_models]
            self.layer_numbers = list(getattr(config, LAYERS_CONFIG_KEY, None) or range(1, len(self.layer_models) + 1))
            self.labels = [config.id2label[i] for i in range(config.num_labels)]
            self._check_layers_agree()
        for model in self.layer_models[1:]:
            model.to(self.device).eval()
        self.max_window = self._max_window()
        trained_window = getattr(config, WINDOW_KEY, None)
        self.default_window = min(trained_window, self.max_window) if trained_window else self.max_window

    def _check_shared_layout(self) -> None:
        """A shared bundle's classifier must have one block of ``len(ner_labels)`` outputs per layer."""
        config = self.model.config
        expected = len(self.layer_numbers) * len(self.labels)
        if not self.labels or config.num_labels != expected:
            raise ValueError(
                f"This shared-encoder bundle lists layers {self.layer_numbers} and {len(self.labels)} labels per "
                f"layer in config.json ({LAYERS_CONFIG_KEY!r}, {LABELS_KEY!r}), so its classifier needs {expected} "
                f"outputs, but it has {config.num_labels}. Save the bundle again with hf_pipeline.save_bundle."
            )
        if self.tokenizer is not None and len(self.tokenizer) > config.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(self.tokenizer)} tokens but the model only {config.vocab_size}: "
                "this tokenizer does not belong to this bundle."
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
        if len(self.tokenizer) > root.vocab_size:
            raise ValueError(
                f"The tokenizer has {len(self.tokenizer)} tokens but the models only {root.vocab_size}: "
                "this tokenizer does not belong to this bundle."
            )

    def _max_window(self) -> int:
        limits = [self.model.config.max_position_embeddings, self.tokenizer.model_max_length]
        return int(min(limit for limit in limits if limit and limit > 0))

    def _sanitize_parameters(
        self, layers: Iterable[int] | None = None, max_length: int | None = None, **kwargs: Any
    ) -> tuple[dict, dict, dict]:
        preprocess: dict[str, Any] = {}
        postprocess: dict[str, Any] = {}
        if layers is not None:
            layers = sorted(set(layers))
            unknown = [n for n in layers if n not in self.layer_numbers]
            if unknown:
                raise ValueError(f"layers={unknown} not in this bundle; choose from {self.layer_numbers}.")
            postprocess["layers"] = layers
        if max_length is not None:
            if not 3 <= max_length <= self.max_window:
                raise ValueError(f"max_length must be between 3 and the model's maximum, {self.max_window}.")
            preprocess["max_length"] = max_length
        return preprocess, {}, postprocess

    def __call__(self, inputs: str | list[str] | Iterator[str], **kwargs: Any) -> Any:
        """Find overlapping entities in one text, a list of texts, or a generator of texts.

        Args:
            inputs: the report text(s): a str, a list, a generator, or a torch ``Dataset`` of str (e.g.
                ``KeyDataset(dataset, "text")``); generators and datasets give an iterator of results.
            layers: which layers to return (default: all of the bundle's layers).
            max_length: window length in tokens, special tokens included (default: the window the bundle was
                trained with, ``config.json["ner_window"]``, else the model's maximum).
            batch_size: how many windows run through the models at once.

        Returns:
            For each text a list of dicts sorted by (start, -end, layer), with keys
            ``entity_group`` (the type), ``score`` (mean probability of the entity's words in its layer),
            ``word`` (``text[start:end]``), ``start``, ``end`` (end-exclusive character offsets) and
            ``layer`` (1-based). One text gives one list; a list or generator gives one list per text.
        """
        streams = (torch.utils.data.Dataset, Iterator)
        if not isinstance(inputs, (str, list, tuple, *streams)):
            raise TypeError(f"radiology-ner expects a str or a list of str, got {type(inputs).__name__}.")
        if isinstance(inputs, (list, tuple)):
            for item in inputs:
                _check_text(item)
        return super().__call__(inputs, **kwargs)

    def preprocess(self, text: str, max_length: int | None = None) -> Iterator[dict[str, Any]]:
        _check_text(text)
        spans = word_spans(text)
        prefix, suffix = self._special_tokens()
        window = (max_length or self.default_window) - len(prefix) - len(suffix)
        encoding = self.tokenizer(
            [text[s:e] for s, e in spans] or [""],
            is_split_into_words=True,
            add_special_tokens=False,
            verbose=False,
        )
        token_ids = encoding["input_ids"] if spans else []
        word_ids = encoding.word_ids() if spans else []
        starts = window_starts(len(token_ids), window)
        for index, start in enumerate(starts):
            ids = prefix + token_ids[start : start + window] + suffix
            yield {
                "input_ids": torch.tensor([ids]),
                "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
                "window_start": start,
                "is_last": index == len(starts) - 1,
                "document": (text, spans, word_ids, starts, window) if index == 0 else None,
            }

    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """Token ids put before and after every window (``[CLS]`` and ``[SEP]`` for BERT)."""
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        return ([cls] if cls is not None else []), ([sep] if sep is not None else [])

    def _forward(self, model_inputs: dict[str, Any]) -> dict[str, Any]:
        window_start = model_inputs.pop("window_start")
        is_last = model_inputs.pop("is_last")
        document = model_inputs.pop("document")
        if self.architecture == "shared":  # one forward; the classifier's outputs are [layer, label] blocks
            logits = self.model(**model_inputs).logits
            batch, length, _ = logits.shape
            probabilities = logits.float().view(batch, length, len(self.layer_numbers), -1).softmax(-1).transpose(1, 2)
        else:
            probabilities = torch.stack(
                [model(**model_inputs).logits.float().softmax(-1) for model in self.layer_models], dim=1
            )
        return {"probabilities": probabilities, "window_start": window_start, "is_last": is_last, "document": document}

    def postprocess(self, all_outputs: list[dict[str, Any]], layers: Sequence[int] | None = None) -> list[dict]:
        text, spans, word_ids, starts, window = all_outputs[0]["document"]
        words, located = locate_words(word_ids, starts, window, offset=len(self._special_tokens()[0]))
        if not words:
            return []
        probabilities = [output["probabilities"][0].numpy() for output in all_outputs]  # [layer, token, label]
        entities = []
        for layer_index, layer_number in enumerate(self.layer_numbers):
            if layers is not None and layer_number not in layers:
                continue
            word_probs = np.array([probabilities[w][layer_index, p] for w, p in located]).reshape(len(words), -1)
            best = word_probs.argmax(-1)
            tags = [self.labels[int(label)] for label in best]
            scores = word_probs[np.arange(len(words)), best]
            for span in decode_bio(tags):
                start, end = spans[words[span.first]][0], spans[words[span.last]][1]
                entities.append(
                    {
                        "entity_group": span.type,
                        "score": float(np.mean(scores[span.first : span.last + 1])),
                        "word": text[start:end],
                        "start": start,
                        "end": end,
                        "layer": layer_number,
                    }
                )
        return sorted(entities, key=lambda e: (e["start"], -e["end"], e["layer"]))


def _check_text(text: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"radiology-ner expects each input to be a str, got {type(text).__name__}.")


def _first_token_of_each_word(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Position of the first subword of every word that has one (some words tokenize to nothing)."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


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
