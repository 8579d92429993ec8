"""The span head: every candidate span of up to ``K`` words is scored for every entity type (torch); it travels
with every bundle and is what training, validation and the pipeline all score spans with.

The encoder is a stock ``AutoModelForTokenClassification`` whose classifier gives each token ``2 x D`` outputs: a
start and an end representation (``D`` each, taken at each word's first subword, through a GELU). The head's own
weights sit beside the model in ``span_head.safetensors``:

- ``bilinear`` ``[type, D, D]``, ``start`` and ``end`` ``[type, D]``, ``width`` ``[K, type]``, ``bias`` ``[type]``;
- the score of words ``i..i+k`` for type ``t`` is ``s_i U_t e_(i+k) + a_t s_i + b_t e_(i+k) + width[k, t] + bias[t]``
  (biaffine, Yu et al. 2020), a logit: its sigmoid is the entity's ``score``. Types are scored independently, so
  one span can be two types (12% of CT-EBM-SP's entities share their span with an entity of another type).

Windows are the pipeline's: each word's representations are read in the window where that word sits farthest from
an edge, as every head reads its words, and a span is scored from the representations of its first and last words
(for a span near a window boundary they may come from two overlapping windows; each is read with the most context
either side that the windows offer).

Decoding keeps the spans whose probability reaches ``config.json["ner_span_threshold"]`` (chosen on validation);
where two kept spans of one type overlap, the higher-scoring one wins unless the training data had such overlaps
(``ner_span_same_type_overlaps``). Memory and time grow linearly with the text: words are scored in blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .schemes import SPAN_TYPES_KEY as TYPES_KEY
from .schemes import Predicted

MAX_WORDS_KEY = "ner_span_max_words"  # K: the longest span (in words) the head scores
THRESHOLD_KEY = "ner_span_threshold"  # the probability a span needs to be returned (chosen on validation)
OVERLAPS_KEY = "ner_span_same_type_overlaps"  # whether two entities of one type may overlap
WEIGHTS_FILE = "span_head.safetensors"
WEIGHT_NAMES = ("bilinear", "start", "end", "width", "bias")
WEIGHTS_ATTRIBUTE = "span_head_weights"  # a trained model's head weights (name to tensor), saved beside it
BLOCK_WORDS = 512  # words scored at once when decoding: bounds memory on long texts


def span_logits(features: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[batch, word, width, type]`` logits of the spans starting at each word, from ``[batch, word, 2D]`` word
    outputs; width ``k`` is the span of words ``i..i+k`` (positions past the last word are padding: mask them)."""
    hidden = F.gelu(features.float())
    dims = hidden.shape[-1] // 2
    starts, ends = hidden[..., :dims], hidden[..., dims:]
    max_words = weights["width"].shape[0]
    left = torch.einsum("bwd,tde->bwte", starts, weights["bilinear"])  # [batch, word, type, D]
    start_part = starts @ weights["start"].T + weights["bias"]  # [batch, word, type]
    ends = F.pad(ends, (0, 0, 0, max_words - 1))  # the end word of width k at i + k
    scores = [
        torch.einsum("bwte,bwe->bwt", left, ends[:, k : k + starts.shape[1]])
        + ends[:, k : k + starts.shape[1]] @ weights["end"].T
        for k in range(max_words)
    ]
    return torch.stack(scores, dim=2) + start_part[:, :, None] + weights["width"]


def valid_spans(words: int | torch.Tensor, max_words: int, length: int | None = None) -> torch.Tensor:
    """``[word, width]`` True where span ``i..i+k`` ends inside the ``words`` words; for a tensor of word counts
    (one per window, each window's words first, over ``length`` positions), ``[window, word, width]``."""
    words = torch.as_tensor(words)
    length = int(words.max()) if length is None else length
    ends = torch.arange(length, device=words.device)[:, None] + torch.arange(max_words, device=words.device)
    return ends < words[..., None, None]


@dataclass(frozen=True)
class SpanParameters:
    """What decoding needs besides the word outputs: the head's weights and the bundle's span settings."""

    weights: dict[str, torch.Tensor]
    threshold: float
    same_type_overlaps: bool


def load_parameters(config: Any, read_file: Callable[[str], str]) -> SpanParameters:
    """The span head of a bundle: its weights file and its config keys, checked against each other."""
    from safetensors.torch import load_file

    path = read_file(WEIGHTS_FILE)
    try:
        weights = load_file(path)
    except Exception as error:  # noqa: BLE001 - a damaged file of any kind gets the same one-line answer
        raise ValueError(f"{WEIGHTS_FILE}: cannot be read ({error}). Copy it from the training run again.") from None
    check_weights(weights, config)
    threshold = getattr(config, THRESHOLD_KEY, None)
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not 0 < threshold < 1:
        raise ValueError(
            f"config.json[{THRESHOLD_KEY!r}] is {threshold!r}; expected a probability between 0 and 1 (exclusive), "
            "the span threshold chosen on validation. Save the bundle again from its training run."
        )
    overlaps = getattr(config, OVERLAPS_KEY, None)
    if not isinstance(overlaps, bool):
        raise ValueError(
            f"config.json[{OVERLAPS_KEY!r}] is {overlaps!r}; expected true or false (whether two entities of one type "
            "may overlap, from the training data). Save the bundle again from its training run."
        )
    return SpanParameters({name: weights[name].float() for name in WEIGHT_NAMES}, float(threshold), overlaps)


def check_weights(weights: dict[str, torch.Tensor], config: Any) -> None:
    """The weights file must hold every weight, finite, shaped for the config's types, K and classifier outputs."""
    types = len(getattr(config, TYPES_KEY, None) or [])
    max_words = getattr(config, MAX_WORDS_KEY, None)
    if type(max_words) is not int or max_words < 1:
        raise ValueError(
            f"config.json[{MAX_WORDS_KEY!r}] is {max_words!r}; expected the longest span the head scores, in words (a "
            "whole number of at least 1). Save the bundle again from its training run."
        )
    dims = config.num_labels // 2
    expected = {
        "bilinear": (types, dims, dims),
        "start": (types, dims),
        "end": (types, dims),
        "width": (max_words, types),
        "bias": (types,),
    }
    for name, shape in expected.items():
        found = tuple(weights[name].shape) if name in weights else None
        if found != shape or not torch.isfinite(weights[name]).all():
            raise ValueError(
                f"{WEIGHTS_FILE}: {name!r} is {'missing' if found is None else f'of shape {found}'} or not finite; "
                f"this bundle's config.json ({types} types, {MAX_WORDS_KEY} {max_words}, {config.num_labels} "
                f"classifier outputs) needs {shape}. The file comes from another model or was damaged: copy it "
                "from the training run again."
            )


def decode_spans(
    word_outputs: np.ndarray, types: Sequence[str], parameters: SpanParameters, threshold: float | None = None
) -> list[tuple[str, int, int, float]]:
    """``(type, first word, last word, probability)`` of every span kept, from ``[word, 2D]`` word outputs."""
    weights = parameters.weights
    max_words = weights["width"].shape[0]
    features = torch.from_numpy(np.ascontiguousarray(word_outputs, dtype=np.float32))[None]
    words = features.shape[1]
    cut = parameters.threshold if threshold is None else threshold
    found = []
    with torch.inference_mode():
        for first in range(0, words, BLOCK_WORDS):
            block = features[:, first : first + BLOCK_WORDS + max_words - 1]
            probabilities = span_logits(block, weights)[0, :BLOCK_WORDS].sigmoid()
            probabilities[~valid_spans(block.shape[1], max_words)[: probabilities.shape[0]]] = 0
            for start, width, kind in torch.nonzero(probabilities >= cut).tolist():
                score = float(probabilities[start, width, kind])
                found.append((types[kind], first + start, first + start + width, score))
    return found if parameters.same_type_overlaps else without_same_type_overlaps(found)


def without_same_type_overlaps(spans: Sequence[tuple[str, int, int, float]]) -> list[tuple[str, int, int, float]]:
    """Of spans of one type that overlap, the higher-scoring (greedy by score, ties to the earlier span).

    >>> without_same_type_overlaps([("A", 0, 2, 0.9), ("A", 1, 3, 0.95), ("B", 0, 2, 0.6), ("A", 5, 5, 0.7)])
    [('B', 0, 2, 0.6), ('A', 1, 3, 0.95), ('A', 5, 5, 0.7)]
    """
    kept: list[tuple[str, int, int, float]] = []
    for span in sorted(spans, key=lambda s: (-s[3], s[1], s[2])):
        if not any(k[0] == span[0] and k[1] <= span[2] and span[1] <= k[2] for k in kept):
            kept.append(span)
    return sorted(kept, key=lambda s: (s[1], -s[2], s[0]))


def span_entities(
    word_outputs: np.ndarray,
    types: Sequence[str],
    parameters: SpanParameters,
    spans: Sequence[tuple[int, int]],
    threshold: float | None = None,
) -> list[Predicted]:
    """The entities the head keeps, with character offsets (``spans``: each word's)."""
    return [
        Predicted(kind, spans[first][0], spans[last][1], score)
        for kind, first, last, score in decode_spans(word_outputs, types, parameters, threshold)
    ]


def save_weights(model: Any, folder: Any) -> None:
    """Write a trained model's span head weights beside it (``span_head.safetensors``), if it has a span head."""
    from pathlib import Path

    from safetensors.torch import save_file

    weights = getattr(model, WEIGHTS_ATTRIBUTE, None)
    if weights is not None:
        save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(Path(folder) / WEIGHTS_FILE))


def load_weights(model: Any, folder: Any) -> None:
    """Give a model saved by training its span head weights back (a no-op for a model without a span head)."""
    from pathlib import Path

    from safetensors.torch import load_file

    path = Path(folder) / WEIGHTS_FILE
    if path.is_file():
        setattr(model, WEIGHTS_ATTRIBUTE, load_file(str(path)))
