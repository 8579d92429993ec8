"""Validation figures while training, computed the way the bundle predicts: the validation reports are cut into the
pipeline's windows (its default stride), each word is read from the window where it is farthest from an edge, and
the words' outputs are decoded by the pipeline's own :class:`~hf_pipeline.radiology_ner.Decoder` (the head's
decoding with the model's current parameters, the scheme's merge), then scored with the task's scorer. A head with
score thresholds (the span head) is decoded once at the lowest and scored at each: the best is reported, with its
threshold (``span_threshold``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import datasets
import numpy as np
import torch
from transformers import EvalPrediction

from hf_dataset.entities import Entity
from hf_pipeline.heads import HEADS
from hf_pipeline.radiology_ner import Decoder
from hf_pipeline.schemes import type_order
from hf_pipeline.scoring import score
from hf_pipeline.training.data import DocumentWindows
from hf_pipeline.training.schemes import Encoding
from hf_pipeline.words import locate_words


def entity_metrics(
    split: datasets.Dataset,
    documents: Sequence[DocumentWindows],
    encoding: Encoding,
    head: str,
    parameters: Callable[[], Any],
    thresholds: Sequence[float] = (),
) -> Callable[[EvalPrediction], dict[str, float]]:
    """compute_metrics for the Trainer: the task's exact and lenient F1 (and nested / flat exact F1) of what the
    bundle will predict; ``exact_f1`` picks the checkpoint kept. ``parameters()`` gives the head's decoding
    parameters of the model being trained (a CRF's current transitions)."""
    gold = {row["id"]: encoding.gold(row) for row in split}
    types = type_order(encoding.sequence_labels)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        probabilities = prediction.predictions  # [window, token, sequence, feature]
        decoder = Decoder(HEADS[head], parameters(), encoding.sequence_labels)
        predicted: dict[str, list[Entity]] = {}
        scores: dict[str, list[float]] = {}
        first_window = 0
        for row, windows in zip(split, documents):
            words, located = locate_words(windows.word_ids, windows.starts, windows.window, offset=windows.offset)
            where = np.array(located, dtype=np.int64).reshape(-1, 2)
            word_probabilities = probabilities[first_window + where[:, 0], where[:, 1]]
            offsets = [tuple(row["token_offsets"][word]) for word in words]
            entities, _ = decoder(row["text"], offsets, word_probabilities)
            predicted[row["id"]] = [Entity.from_prediction(e) for e in entities]
            scores[row["id"]] = [e["score"] for e in entities]
            first_window += len(windows.starts)
        reports = {
            threshold: score(gold, _at_least(predicted, scores, threshold), types).to_dict()
            for threshold in thresholds or (None,)
        }
        best = max(reports, key=lambda threshold: reports[threshold]["exact"]["f1"])
        report = reports[best]
        figures = {
            "exact_f1": report["exact"]["f1"],
            "lenient_f1": report["lenient"]["f1"],
            "nested_exact_f1": report["nested"]["exact"]["f1"],
            "flat_exact_f1": report["flat"]["exact"]["f1"],
        }
        return figures if best is None else {**figures, "span_threshold": best}

    return compute


def _at_least(
    predicted: dict[str, list[Entity]], scores: dict[str, list[float]], threshold: float | None
) -> dict[str, list[Entity]]:
    if threshold is None:
        return predicted
    return {key: [e for e, s in zip(entities, scores[key]) if s >= threshold] for key, entities in predicted.items()}


def window_outputs(head: str, sequences: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """preprocess_logits_for_metrics: what the head reads per word, as the pipeline computes it."""

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return HEADS[head].window_outputs(logits, sequences)

    return reduce
