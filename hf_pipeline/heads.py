"""Heads: how a model's outputs become entities; it travels with every bundle.

A head is registered under the name ``config.json["ner_decoder"]`` records; the pipeline and validation during
training both go through it: ``window_outputs`` turns a window's logits into what is read per word (the
probabilities of each tag sequence's labels, or the span head's word representations), and ``entities`` turns the
words' outputs into entities.

- ``softmax``: each word's most probable label; its score is that probability;
- ``crf``: Viterbi over the sequence's transition matrix (``config.json["ner_crf_transitions"]``, one per sequence,
  ``crf.py``): IOB2-valid by construction; a word's score is its label's marginal probability under the CRF;
- ``span``: no tag sequences: every span of up to K words is scored for every type (``spans.py``).

The tag heads' entities are merged across sequences by the scheme (``schemes.tags_to_entities``). The training half
of each head (its loss) is ``hf_pipeline.training.heads``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .crf import TRANSITIONS_KEY, layer_transitions, marginals, viterbi
from .schemes import Predicted, config_choice, tags_to_entities, type_order
from .spans import load_parameters, outputs_of, span_entities

DECODER_KEY = "ner_decoder"


ReadFile = Callable[[str], str]  # a bundle file's name to a local path (the bundle folder or the Hub cache)
Spans = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class Head:
    """A registered head.

    - ``window_outputs(logits, sequences)``: ``[batch, token, outputs]`` logits to ``[batch, token, sequence,
      feature]`` (``sequences``: how many tag sequences the outputs hold);
    - ``entities(word_outputs, labels, parameters, spans)``: ``[word, sequence, feature]`` to entities, and how many
      duplicates predicted by two sequences were merged;
    - ``parameters(configs, labels, read_file)``: what decoding needs besides the outputs, read once when a bundle is
      loaded;
    - ``outputs(labels, parameters)``: how many classifier outputs a shared bundle of this head has.
    """

    name: str
    window_outputs: Callable[[torch.Tensor, int], torch.Tensor]
    entities: Callable[[np.ndarray, Sequence[Sequence[str]], Any, Spans], tuple[list[Predicted], int]]
    parameters: Callable[[Sequence[Any], Sequence[Sequence[str]], ReadFile], Any]
    outputs: Callable[[Sequence[Sequence[str]], Any], int]


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


def _no_parameters(configs: Sequence[Any], labels: Sequence[Sequence[str]], read_file: ReadFile = str) -> list[Any]:
    return [None] * len(labels)


def _crf_parameters(configs: Sequence[Any], labels: Sequence[Sequence[str]], read_file: ReadFile = str) -> list[Any]:
    """One transition matrix per sequence, from the models' configs (a shared model's lists them all)."""
    found = [matrix for config in configs for matrix in getattr(config, TRANSITIONS_KEY, None) or []]
    return layer_transitions(found, list(range(1, len(labels) + 1)), labels[0] if labels else [])


def label_probabilities(logits: torch.Tensor, sequences: int) -> torch.Tensor:
    """``[batch, token, sequence, label]`` probabilities from ``[batch, token, sequence * label]`` logits."""
    return logits.float().view(*logits.shape[:2], sequences, -1).softmax(-1)


def tag_head(name: str, decode: Callable[..., tuple[np.ndarray, np.ndarray]], parameters: Callable[..., Any]) -> Head:
    """A head that decodes tag sequences: its entities are each sequence's, merged by the scheme."""

    def entities(probabilities: np.ndarray, labels: Sequence[Sequence[str]], parameters: Any, spans: Spans) -> Any:
        best, scores = decode(probabilities, labels, parameters)
        tags = [[names[int(label)] for label in row] for names, row in zip(labels, best)]
        return tags_to_entities(tags, scores, spans)

    return Head(name, label_probabilities, entities, parameters, lambda labels, _: sum(map(len, labels)))


def _span_entities(outputs: np.ndarray, labels: Sequence[Sequence[str]], parameters: Any, spans: Spans) -> Any:
    return span_entities(outputs[:, 0], type_order(labels), parameters, spans), 0


def _span_parameters(configs: Sequence[Any], labels: Sequence[Sequence[str]], read_file: ReadFile) -> Any:
    return load_parameters(configs[0], read_file)


HEADS: dict[str, Head] = {
    "softmax": tag_head("softmax", _softmax_decode, _no_parameters),
    "crf": tag_head("crf", _crf_decode, _crf_parameters),
    "span": Head(
        "span",
        lambda logits, sequences: logits.float()[:, :, None],
        _span_entities,
        _span_parameters,
        lambda labels, parameters: outputs_of(parameters.weights),
    ),
}


def head_of(config: Any) -> Head:
    """The head a bundle decodes with (``softmax`` for bundles saved before heads were recorded), checked."""
    return HEADS[config_choice(config, DECODER_KEY, tuple(HEADS), "softmax")]
