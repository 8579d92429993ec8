"""The span head: every candidate span of up to ``K`` words is scored for every entity type (torch); it travels
with every bundle and is what training, validation and the pipeline all score spans with.

The encoder is a stock ``AutoModelForTokenClassification`` whose classifier gives each token ``2 x D`` outputs: a
start and an end representation (``D`` each, taken at each word's first subword, through a GELU). The head's own
weights sit beside the model in ``span_head.safetensors``; ``config.json["ner_span_scorer"]`` says how they score
the span of words ``i..j = i+k`` for type ``t`` (a logit: its sigmoid is the entity's ``score``):

- ``biaffine`` (Yu et al. 2020; a bundle without the key): ``s_i U_t e_j + a_t s_i + b_t e_j + width[k, t] +
  bias[t]``, from ``bilinear`` ``[type, D, D]``, ``start`` and ``end`` ``[type, D]``, ``width`` ``[K, type]``,
  ``bias`` ``[type]``;
- ``mlp`` (an MLP over [start; end; width], as in SpanNER and PURE): ``output_t . gelu(S s_i + E e_j + W_k + c) +
  bias[t]``, from ``start_in`` and ``end_in`` ``[D, D]``, ``width_in`` ``[K, D]``, ``hidden_bias`` ``[D]``,
  ``output`` ``[type, D]``, ``bias`` ``[type]``; the hidden layer is shared by every type;
- ``mlp_mean``: ``mlp`` plus ``M mean(x_i..x_j)``, the mean of the ``2 x D`` representations of the span's words
  (``inside_in`` ``[D, 2D]``), so that every word of a span counts, not only its two ends.

Types are scored independently, so one span can be two types (12% of CT-EBM-SP's entities share their span with an
entity of another type).

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
SCORER_KEY = "ner_span_scorer"  # how the weights score a span (a bundle without it: biaffine)
SCORER_WEIGHTS = {
    "biaffine": ("bilinear", "start", "end", "width", "bias"),
    "mlp": ("start_in", "end_in", "width_in", "hidden_bias", "output", "bias"),
    "mlp_mean": ("start_in", "end_in", "width_in", "inside_in", "hidden_bias", "output", "bias"),
}
WEIGHTS_ATTRIBUTE = "span_head_weights"  # a trained model's head weights (name to tensor), saved beside it
BLOCK_WORDS = 512  # words scored at once when decoding: bounds memory on long texts


def span_logits(features: torch.Tensor, weights: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[batch, word, width, type]`` logits of the spans starting at each word, from ``[batch, word, 2D]`` word
    outputs; width ``k`` is the span of words ``i..i+k`` (positions past the last word are padding: mask them). The
    scorer is the one the weights are for (:data:`SCORER_WEIGHTS`)."""
    hidden = F.gelu(features.float())
    scorer = biaffine_logits if "bilinear" in weights else mlp_logits
    return scorer(hidden, weights, max_words_of(weights))


def outputs_of(weights: dict[str, torch.Tensor]) -> int:
    """``2 x D``, the classifier outputs per token the weights read (a start and an end representation)."""
    return 2 * weights["start" if "start" in weights else "start_in"].shape[1]


def max_words_of(weights: dict[str, torch.Tensor]) -> int:
    """K, the longest span the weights score (their width weights have a row per width)."""
    return weights["width" if "width" in weights else "width_in"].shape[0]


def _at_ends(values: torch.Tensor, max_words: int) -> list[torch.Tensor]:
    """Per width ``k``, ``values`` ``[batch, word, ...]`` at each span's last word ``i + k`` (zero past the end)."""
    words = values.shape[1]
    padded = F.pad(values, (0, 0) * (values.dim() - 2) + (0, max_words - 1))
    return [padded[:, k : k + words] for k in range(max_words)]


def biaffine_logits(hidden: torch.Tensor, weights: dict[str, torch.Tensor], max_words: int) -> torch.Tensor:
    dims = hidden.shape[-1] // 2
    starts, ends = hidden[..., :dims], hidden[..., dims:]
    left = torch.einsum("bwd,tde->bwte", starts, weights["bilinear"])  # [batch, word, type, D]
    start_part = starts @ weights["start"].T + weights["bias"]  # [batch, word, type]
    scores = [torch.einsum("bwte,bwe->bwt", left, end) + end @ weights["end"].T for end in _at_ends(ends, max_words)]
    return torch.stack(scores, dim=2) + start_part[:, :, None] + weights["width"]


def mlp_logits(hidden: torch.Tensor, weights: dict[str, torch.Tensor], max_words: int) -> torch.Tensor:
    dims = hidden.shape[-1] // 2
    start_part = hidden[..., :dims] @ weights["start_in"].T + weights["hidden_bias"]  # [batch, word, D]
    end_parts = _at_ends(hidden[..., dims:] @ weights["end_in"].T, max_words)
    if "inside_in" in weights:  # the mean over words i..i+k, from running sums
        inside = F.pad((hidden @ weights["inside_in"].T).cumsum(1), (0, 0, 1, 0))  # [batch, 1 + word, D]
        sums = _at_ends(inside[:, 1:], max_words)
        end_parts = [end + (total - inside[:, :-1]) / (k + 1) for k, (end, total) in enumerate(zip(end_parts, sums))]
    scores = [
        F.gelu(start_part + end + weights["width_in"][k]) @ weights["output"].T for k, end in enumerate(end_parts)
    ]
    return torch.stack(scores, dim=2) + weights["bias"]


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
    names = check_weights(weights, config)
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
    return SpanParameters({name: weights[name].float() for name in names}, float(threshold), overlaps)


def scorer_of(config: Any) -> str:
    """The config's span scorer (``biaffine`` for a bundle saved before there was a choice)."""
    scorer = getattr(config, SCORER_KEY, "biaffine")
    if scorer not in SCORER_WEIGHTS:
        raise ValueError(
            f"config.json[{SCORER_KEY!r}] is {scorer!r}; expected one of {sorted(SCORER_WEIGHTS)}. The bundle comes "
            "from a newer release (upgrade radiology-ner) or was edited: save it again from its training run."
        )
    return scorer


def weight_shapes(scorer: str, types: int, dims: int, max_words: int) -> dict[str, tuple[int, ...]]:
    """The shape of each weight of ``scorer`` for ``types`` types, ``D = dims`` and ``K = max_words``."""
    shapes = {
        "bilinear": (types, dims, dims),
        "start": (types, dims),
        "end": (types, dims),
        "width": (max_words, types),
        "start_in": (dims, dims),
        "end_in": (dims, dims),
        "width_in": (max_words, dims),
        "inside_in": (dims, 2 * dims),
        "hidden_bias": (dims,),
        "output": (types, dims),
        "bias": (types,),
    }
    return {name: shapes[name] for name in SCORER_WEIGHTS[scorer]}


def check_weights(weights: dict[str, torch.Tensor], config: Any) -> tuple[str, ...]:
    """The weights file must hold every weight of the config's scorer and no other, finite, shaped for its types, K
    and classifier outputs; returns the weights' names."""
    types = len(getattr(config, TYPES_KEY, None) or [])
    max_words = getattr(config, MAX_WORDS_KEY, None)
    if type(max_words) is not int or max_words < 1:
        raise ValueError(
            f"config.json[{MAX_WORDS_KEY!r}] is {max_words!r}; expected the longest span the head scores, in words (a "
            "whole number of at least 1). Save the bundle again from its training run."
        )
    scorer = scorer_of(config)
    expected = weight_shapes(scorer, types, config.num_labels // 2, max_words)
    for name, shape in expected.items():
        found = tuple(weights[name].shape) if name in weights else None
        if found != shape or not torch.isfinite(weights[name]).all():
            raise ValueError(
                f"{WEIGHTS_FILE}: {name!r} is {'missing' if found is None else f'of shape {found}'} or not finite; "
                f"this bundle's config.json ({scorer} scorer, {types} types, {MAX_WORDS_KEY} {max_words}, "
                f"{config.num_labels} classifier outputs) needs {shape}. The file comes from another model or was "
                "damaged: copy it from the training run again."
            )
    unused = sorted(set(weights) - set(expected))
    if unused:
        raise ValueError(
            f"{WEIGHTS_FILE}: holds {', '.join(map(repr, unused))}, which this bundle's config.json ({scorer} scorer) "
            "does not use; the file comes from another model or the config was edited: copy both from the training "
            "run again."
        )
    return tuple(expected)


def decode_spans(
    word_outputs: np.ndarray, types: Sequence[str], parameters: SpanParameters, threshold: float | None = None
) -> list[tuple[str, int, int, float]]:
    """``(type, first word, last word, probability)`` of every span kept, from ``[word, 2D]`` word outputs."""
    weights = parameters.weights
    max_words = max_words_of(weights)
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
