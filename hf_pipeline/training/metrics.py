"""Validation figures while training, computed the way the bundle predicts: the validation reports are cut into the
pipeline's windows (its default stride), each word is read from the window where it is farthest from an edge, and
the words' probabilities are decoded by the pipeline's own :class:`~hf_pipeline.radiology_ner.Decoder` (the head's
decoding with the model's current parameters, the scheme's merge), then scored with the task's scorer."""

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
    parameters: Callable[[], list[Any]],
) -> Callable[[EvalPrediction], dict[str, float]]:
    """compute_metrics for the Trainer: the task's exact and lenient F1 (and nested / flat exact F1) of what the
    bundle will predict; ``exact_f1`` picks the checkpoint kept. ``parameters()`` gives the head's decoding
    parameters of the model being trained (a CRF's current transitions)."""
    gold = {row["id"]: encoding.gold(row) for row in split}
    types = type_order(encoding.sequence_labels)

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        probabilities = prediction.predictions  # [window, token, sequence, label]
        decoder = Decoder(HEADS[head], parameters(), encoding.sequence_labels)
        predicted: dict[str, list[Entity]] = {}
        first_window = 0
        for row, windows in zip(split, documents):
            words, located = locate_words(windows.word_ids, windows.starts, windows.window, offset=windows.offset)
            where = np.array(located, dtype=np.int64).reshape(-1, 2)
            word_probabilities = probabilities[first_window + where[:, 0], where[:, 1]]
            offsets = [tuple(row["token_offsets"][word]) for word in words]
            entities, _ = decoder(row["text"], offsets, word_probabilities)
            predicted[row["id"]] = [Entity.from_prediction(e) for e in entities]
            first_window += len(windows.starts)
        report = score(gold, predicted, types).to_dict()
        return {
            "exact_f1": report["exact"]["f1"],
            "lenient_f1": report["lenient"]["f1"],
            "nested_exact_f1": report["nested"]["exact"]["f1"],
            "flat_exact_f1": report["flat"]["exact"]["f1"],
        }

    return compute


def probabilities_per_sequence(sequences: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """preprocess_logits_for_metrics: each sequence's label probabilities, as the pipeline computes them."""

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.float().view(*logits.shape[:2], sequences, -1).softmax(-1)

    return reduce
