"""Validation figures while training: window predictions put back on words and decoded exactly as the pipeline
does (argmax, or Viterbi for a CRF head), scored with the task's scorer against the gold of the trained layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from transformers import EvalPrediction

from hf_dataset.brat import Entity
from hf_pipeline.crf import viterbi
from hf_pipeline.model_card import entity_types
from hf_pipeline.scoring import score
from hf_pipeline.training.crf import LayeredCrf
from hf_pipeline.training.data import DocumentWindows
from hf_pipeline.words import decode_bio, locate_words


def word_entities(
    label_ids: Sequence[int], words: Sequence[int], offsets: Sequence[Sequence[int]], labels: Sequence[str]
) -> list[Entity]:
    """Entities of one layer from a label id per located word, decoded exactly as the pipeline decodes them."""
    spans = decode_bio([labels[i] for i in label_ids])
    return [Entity(s.type, ((offsets[words[s.first]][0], offsets[words[s.last]][1]),)) for s in spans]


def entity_metrics(
    split: datasets.Dataset,
    documents: Sequence[DocumentWindows],
    layers: Sequence[int],
    labels: list[str],
    crf: LayeredCrf | None = None,
) -> Callable[[EvalPrediction], dict[str, float]]:
    """compute_metrics for the Trainer: the task's exact and lenient F1 of what the bundle will predict.

    Window predictions are put back on words as the pipeline does (each word from the window where it is
    farthest from an edge), decoded with the pipeline's decoder, and scored with the official scorer against
    the gold entities encoded in the trained layers. ``exact_f1`` picks the checkpoint kept: the figure the
    bundle is judged by, unlike token-level seqeval. Per-layer figures are ``layer_<k>_exact_f1``. With a
    ``crf``, the predictions are log-probabilities (:func:`log_probabilities_per_layer`) decoded by Viterbi with
    the CRF's current transitions.
    """
    types = entity_types(labels)
    gold = {layer: layer_gold(split, layer) for layer in layers}

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        predictions = prediction.predictions  # [window, token, layer] argmax, or [window, token, layer, label]
        transitions = crf.transitions.detach().cpu().numpy() if crf is not None else None
        predicted: dict[int, dict[str, list[Entity]]] = {layer: {} for layer in layers}
        first_window = 0
        for row, windows in zip(split, documents):
            words, located = locate_words(windows.word_ids, windows.starts, windows.window, offset=windows.offset)
            where = np.array(located, dtype=np.int64).reshape(-1, 2)
            for index, layer in enumerate(layers):
                word_predictions = predictions[first_window + where[:, 0], where[:, 1], index]
                if transitions is not None:
                    word_predictions = viterbi(word_predictions.astype(np.float64), transitions[index], labels)
                predicted[layer][row["id"]] = word_entities(
                    word_predictions.tolist(), words, row["token_offsets"], labels
                )
            first_window += len(windows.starts)
        metrics = {}
        for layer in layers:
            report = score(gold[layer], predicted[layer], types).to_dict()
            metrics[f"layer_{layer}_exact_f1"] = report["exact"]["f1"]
        every_layer = {doc: [e for k in layers for e in predicted[k][doc]] for doc in predicted[layers[0]]}
        every_gold = {doc: [e for k in layers for e in gold[k][doc]] for doc in gold[layers[0]]}
        report = score(every_gold, every_layer, types).to_dict()
        metrics.update(exact_f1=report["exact"]["f1"], lenient_f1=report["lenient"]["f1"])
        return metrics

    return compute


def argmax_per_layer(layers: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """preprocess_logits_for_metrics: keep each layer's best label id, not the logits."""

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.view(*logits.shape[:2], layers, -1).argmax(-1)

    return reduce


def log_probabilities_per_layer(layers: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """preprocess_logits_for_metrics for a CRF head: each layer's label log-probabilities (the emissions)."""

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.float().view(*logits.shape[:2], layers, -1).log_softmax(-1)

    return reduce


def gold_entity(entity: dict[str, Any]) -> Entity:
    return Entity(entity["type"], tuple(map(tuple, entity["fragments"])), entity["id"], entity["text"])


def layer_gold(split: datasets.Dataset, layer: int) -> dict[str, list[Entity]]:
    """Per report, the gold entities the dataset encoded in ``layer``."""
    return {row["id"]: [gold_entity(e) for e in row["entities"] if e["layer"] == layer] for row in split}
