"""Heads: how each tag sequence's word probabilities become tags (numpy only); it travels with every bundle.

A head is registered under the name ``config.json["ner_decoder"]`` records, and the pipeline, validation during
training and the oracle all decode through :func:`decode_sequences`:

- ``softmax``: each word's most probable label; its score is that probability;
- ``crf``: Viterbi over the sequence's transition matrix (``config.json["ner_crf_transitions"]``, one per sequence,
  ``crf.py``): IOB2-valid by construction; a word's score is its label's marginal probability under the CRF.

The training half of each head (its loss) is ``hf_pipeline.training.heads``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .crf import TRANSITIONS_KEY, layer_transitions, marginals, viterbi
from .schemes import config_choice

DECODER_KEY = "ner_decoder"


@dataclass(frozen=True)
class Head:
    """A registered head: decodes the ``[word, sequence, label]`` probabilities of every tag sequence at once into
    ``[sequence, word]`` label ids and word scores."""

    name: str
    decode: Callable[[np.ndarray, Sequence[Sequence[str]], Sequence[Any]], tuple[np.ndarray, np.ndarray]]
    parameters: Callable[[Sequence[Any], Sequence[Sequence[str]]], list[Any]]


def _softmax_decode(probabilities: np.ndarray, labels: Sequence[Sequence[str]], _: Any) -> tuple[np.ndarray, ...]:
    best = probabilities.argmax(-1).T  # [sequence, word]
    return best, np.take_along_axis(probabilities.transpose(1, 0, 2), best[..., None], -1)[..., 0]


def _crf_decode(
    probabilities: np.ndarray, labels: Sequence[Sequence[str]], transitions: Sequence[Any]
) -> tuple[np.ndarray, ...]:
    """Viterbi and the marginals of every sequence at once (their labels have the same IOB2 shape: checked when
    the bundle is loaded)."""
    emissions = np.log(np.maximum(probabilities, 1e-30)).astype(np.float64).transpose(1, 0, 2)
    matrices = np.stack([np.asarray(matrix, dtype=np.float64) for matrix in transitions])
    best = viterbi(emissions, matrices, labels[0])
    scores = marginals(emissions, matrices, labels[0])
    return best, np.take_along_axis(scores, best[..., None], -1)[..., 0]


def _no_parameters(configs: Sequence[Any], labels: Sequence[Sequence[str]]) -> list[Any]:
    return [None] * len(labels)


def _crf_parameters(configs: Sequence[Any], labels: Sequence[Sequence[str]]) -> list[Any]:
    """One transition matrix per sequence, from the models' configs (a shared model's lists them all)."""
    found = [matrix for config in configs for matrix in getattr(config, TRANSITIONS_KEY, None) or []]
    return layer_transitions(found, list(range(1, len(labels) + 1)), labels[0] if labels else [])


HEADS: dict[str, Head] = {
    "softmax": Head("softmax", _softmax_decode, _no_parameters),
    "crf": Head("crf", _crf_decode, _crf_parameters),
}


def head_of(config: Any) -> Head:
    """The head a bundle decodes with (``softmax`` for bundles saved before heads were recorded), checked."""
    return HEADS[config_choice(config, DECODER_KEY, tuple(HEADS), "softmax")]


def decode_sequences(
    head: Head, word_probabilities: np.ndarray, labels: Sequence[Sequence[str]], parameters: Sequence[Any]
) -> tuple[list[list[str]], np.ndarray]:
    """Every sequence's tags and word scores from ``[word, sequence, label]`` probabilities."""
    best, scores = head.decode(word_probabilities, labels, parameters)
    return [[names[int(label)] for label in row] for names, row in zip(labels, best)], scores
