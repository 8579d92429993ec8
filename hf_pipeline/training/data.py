"""Training data: the layered dataset, reports cut into labelled windows, batches, and the softmax head's loss.

Every report becomes overlapping windows of at most ``max_seq_length`` tokens (nothing is truncated); each token
carries one label per tag sequence of the scheme (``hf_pipeline.training.schemes``), on the first subword of each
word (-100 elsewhere), so one batch trains every sequence of a shared encoder, or the one layer of a per-layer model.
Validation windows overlap as the pipeline's do (its default stride), so validation reads each word where the
bundle will.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

import hf_dataset
from hf_pipeline.hub import UnusableError, cached_snapshot, check_usable, offline_variable
from hf_pipeline.radiology_ner import special_tokens
from hf_pipeline.training.arguments import DataArguments
from hf_pipeline.words import window_starts

SAMPLE_LICENSE = "apache-2.0"  # the bundled synthetic sample was written for this project
UNKNOWN_LICENSE = "unknown"  # never a permissive default for a user's corpus


def load_data(args: DataArguments) -> datasets.DatasetDict:
    """The layered dataset: built from --brat_dir, loaded from --dataset, or built from the bundled sample."""
    if args.dataset:
        try:
            check_usable(
                args.dataset,
                "dataset",
                "--dataset",
                advice="or give a folder written by `python -m hf_dataset build`, or --brat_dir to build one.",
            )
        except UnusableError as error:
            raise SystemExit(str(error)) from None
        is_hub_id = not Path(args.dataset).is_dir()
        snapshot = cached_snapshot(args.dataset, "dataset") if is_hub_id and offline_variable() else None
        try:
            return datasets.load_dataset(snapshot or args.dataset)
        except (ConnectionError, OSError, ValueError) as error:
            raise SystemExit(
                f"Cannot load the dataset {args.dataset!r}: {error}\nGive a folder written by "
                "`python -m hf_dataset build`, or --brat_dir to build one on the fly."
            ) from None
    try:
        dataset, _ = hf_dataset.build(args.brat_dir, args.types, args.max_layers, args.discontinuous, args.skip_invalid)
    except (hf_dataset.BratError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return dataset


def dataset_license(args: DataArguments) -> str:
    """The license in the dataset card (``README.md`` of a dataset folder or Hub repo); the bundled sample's own
    license when training on it; ``unknown`` for a brat folder or a card without one."""
    if not args.dataset:
        return SAMPLE_LICENSE if not args.brat_dir else UNKNOWN_LICENSE
    from huggingface_hub import DatasetCard

    readme = Path(args.dataset) / "README.md"
    try:
        card = DatasetCard.load(readme if readme.is_file() else args.dataset)
    except Exception:  # noqa: BLE001 - any failure to read a card means the license is not known
        return UNKNOWN_LICENSE
    return card.data.get("license") or UNKNOWN_LICENSE


def label_list(dataset: datasets.DatasetDict) -> list[str]:
    return dataset["train"].features["ner_tags_1"].feature.names


def tag_layers(dataset: datasets.DatasetDict) -> int:
    """How many ``ner_tags_<k>`` columns the dataset has."""
    return sum(1 for name in dataset["train"].features if name.startswith("ner_tags_"))


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """A label on the first subword of each word, -100 on continuation subwords and special tokens.

    >>> align_labels([None, 0, 0, 1, None], [3, 5])
    [-100, 3, -100, 5, -100]
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else word_labels[word])
        previous = word
    return labels


@dataclass
class DocumentWindows:
    """How one report was cut into windows: what evaluation needs to put window predictions back on words."""

    word_ids: list[int | None]
    starts: list[int]
    window: int
    offset: int  # tokens put before each window (the CLS token)


def windowed_features(
    words: list[str],
    layer_labels: Sequence[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stride: int | None,
) -> tuple[list[dict[str, list]], DocumentWindows]:
    """One report as overlapping windows of at most ``max_length`` tokens; nothing is truncated.

    ``layer_labels`` holds one word-label list per tag sequence; each token's ``labels`` entry lists its
    label in every sequence (-100 on special tokens and continuation subwords). ``stride``: tokens shared by
    consecutive windows (``None``: the pipeline's default).
    """
    encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
    ids, word_ids = encoding["input_ids"], encoding.word_ids()
    labels = list(zip(*(align_labels(word_ids, word_labels) for word_labels in layer_labels)))
    prefix, suffix = special_tokens(tokenizer)
    window = max_length - len(prefix) - len(suffix)
    starts = window_starts(len(ids), window, overlap=stride)
    edge = [(-100,) * len(layer_labels)]
    features = []
    for start in starts:
        input_ids = [*prefix, *ids[start : start + window], *suffix]
        features.append(
            {
                "input_ids": input_ids,
                "attention_mask": [1] * len(input_ids),
                "labels": [
                    list(row) for row in edge * len(prefix) + labels[start : start + window] + edge * len(suffix)
                ],
            }
        )
    return features, DocumentWindows(word_ids, starts, window, len(prefix))


def windowed_split(
    split: datasets.Dataset,
    word_labels: Callable[[dict[str, Any]], list[list[int]]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stride: int | None,
) -> tuple[datasets.Dataset, list[DocumentWindows]]:
    """Every report of a split as windows labelled with ``word_labels(row)`` (one list per tag sequence), and how
    each report was cut (``stride`` as in :func:`windowed_features`)."""
    rows, documents = [], []
    for example in split:
        features, windows = windowed_features(example["tokens"], word_labels(example), tokenizer, max_length, stride)
        rows += features
        documents.append(windows)
    return datasets.Dataset.from_list(rows), documents


class LayeredCollator:
    """Pads windows and their ``[token, layer]`` labels (with -100) into one batch."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [feature["labels"] for feature in features]
        inputs = [{k: v for k, v in feature.items() if k != "labels"} for feature in features]
        batch = self.tokenizer.pad(inputs, return_tensors="pt")
        padded = torch.full((len(labels), batch["input_ids"].shape[1], len(labels[0][0])), -100, dtype=torch.long)
        for row, rows in enumerate(labels):
            padded[row, : len(rows)] = torch.tensor(rows, dtype=torch.long)
        batch["labels"] = padded
        return batch


def layered_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Sum over tag sequences of each one's mean token cross-entropy. The classifier's outputs are
    ``[sequence, label]`` blocks; ``labels`` is ``[batch, token, sequence]`` (one sequence: the stock
    token-classification loss)."""
    logits = outputs.logits
    layers = labels.shape[-1]
    per_layer = logits.view(*logits.shape[:2], layers, -1)
    return sum(
        F.cross_entropy(per_layer[:, :, k].reshape(-1, per_layer.shape[-1]), labels[:, :, k].reshape(-1))
        for k in range(layers)
    )
