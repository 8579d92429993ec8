"""The saved bundle scored on every split, as a user will run it: the pipeline predicts each report, the brat
predictions are written, and the task's scorer compares them with the gold entities (micro, per type, nested and
flat, and per layer: the predictions of each nesting layer against the gold the dataset encodes in that layer); the
oracle (decode(encode(gold)) with the scheme trained) is the ceiling of the scheme."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from hf_dataset.ann import write_ann
from hf_dataset.builder import oracle_f1
from hf_dataset.entities import Entity
from hf_pipeline import load_pipeline
from hf_pipeline.model_card import entity_types
from hf_pipeline.scoring import score
from hf_pipeline.training.schemes import Encoding, gold_entity

logger = logging.getLogger("train")


def gold_entities(split: datasets.Dataset) -> dict[str, list[Entity]]:
    return {row["id"]: [gold_entity(e) for e in row["entities"]] for row in split}


def layer_gold(split: datasets.Dataset, layer: int) -> dict[str, list[Entity]]:
    """Per report, the gold entities the dataset encoded in ``layer``."""
    return {row["id"]: [gold_entity(e) for e in row["entities"] if e["layer"] == layer] for row in split}


def per_layer_scores(
    split: datasets.Dataset, outputs: Sequence[list[dict]], layers: Sequence[int], types: list[str]
) -> dict[str, Any]:
    """Each layer's predictions scored against the gold entities the dataset encoded in that layer."""
    figures = {}
    for layer in layers:
        gold = layer_gold(split, layer)
        predicted = {
            row["id"]: [Entity.from_prediction(e) for e in entities if e["layer"] == layer]
            for row, entities in zip(split, outputs)
        }
        report = score(gold, predicted, types).to_dict()
        figures[str(layer)] = {key: report[key] for key in ("exact", "lenient", "gold", "predicted")}
    return figures


def evaluate_bundle(
    bundle: Path, dataset: datasets.DatasetDict, out: Path, batch_size: int, encoding: Encoding
) -> dict[str, Any]:
    """Predict every split with the pipeline, write brat predictions, and score them with the task's scorer; the
    oracle is ``encoding``'s (the scheme trained)."""
    recognizer = load_pipeline(bundle, device=-1 if not torch.cuda.is_available() else 0)
    results = {}
    for name, split in dataset.items():
        folder = out / "predictions" / name
        predicted = {}
        merged_before = recognizer.merged_duplicates
        outputs = recognizer(list(split["text"]), batch_size=batch_size)
        for row, entities in zip(split, outputs):
            predicted[row["id"]] = [Entity.from_prediction(e) for e in entities]
            path = folder / f"{row['id']}.ann"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_ann(path, row["text"], predicted[row["id"]])
        gold = gold_entities(split)
        types = entity_types(split.features["ner_tags_1"].feature.names)
        result = score(gold, predicted, types).to_dict()
        result["oracle"] = oracle_f1(gold, {row["id"]: encoding.oracle(row) for row in split}, types)
        result["per_layer"] = per_layer_scores(split, outputs, recognizer.layer_numbers, types)
        result["merged_duplicates"] = recognizer.merged_duplicates - merged_before
        results[name] = result
        logger.info("%s: exact F1 %.4f, lenient F1 %.4f", name, result["exact"]["f1"], result["lenient"]["f1"])
    return results


def results_table(results: dict[str, Any]) -> str:
    """The final figures, one row per split: the bundle's exact / lenient F1, each layer's, and the oracle."""
    layers = sorted({layer for r in results.values() for layer in r.get("per_layer", {})}, key=int)
    header = ["split", "exact F1", "lenient F1", *(f"layer {k} exact / lenient" for k in layers), "oracle exact F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for split, r in results.items():
        per_layer = [
            f"{r['per_layer'][k]['exact']['f1']:.4f} / {r['per_layer'][k]['lenient']['f1']:.4f}" for k in layers
        ]
        cells = [split, f"{r['exact']['f1']:.4f}", f"{r['lenient']['f1']:.4f}", *per_layer]
        lines.append("| " + " | ".join(cells + [f"{r['oracle']['exact_f1']:.4f}"]) + " |")
    return "\n".join(lines)
