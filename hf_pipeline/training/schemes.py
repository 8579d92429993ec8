"""The training half of the labeling schemes: a report's entities as word labels of each tag sequence.

The decoding half travels with the bundle (``hf_pipeline.schemes``); a scheme here is registered under the name
``config.json["ner_scheme"]`` records (:data:`ENCODINGS`) and says which sequences a model learns
(``sequence_labels``), each report's word labels (``word_labels``), the gold entities validation scores against
(``gold``) and the oracle, ``decode(encode(gold))``, the ceiling of the scheme on a corpus (``oracle``):

- ``depth``: the dataset's own layered tags, ``ner_tags_<k>`` of the trained layers;
- ``type``: derived from the lossless ``entities`` column at training time (the dataset does not change): per
  entity type, the dataset's layering policy (``hf_dataset.layers.encode``) among that type's entities only, with as
  many sub-layers as the training split needs, at most ``max_sublayers``; what does not fit is dropped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets

from hf_dataset.entities import Entity
from hf_dataset.layers import Discontinuous, encode
from hf_pipeline.schemes import tags_to_entities, type_labels

logger = logging.getLogger("train")


def gold_entity(entity: dict[str, Any]) -> Entity:
    return Entity(entity["type"], tuple(map(tuple, entity["fragments"])), entity["id"], entity["text"])


class Encoding:
    """What every scheme shares: the oracle and the names a trained model is saved under."""

    name = ""
    sequence_labels: list[list[str]]
    layers: list[int]  # the nesting layers the bundle shows (depth: also the sequences)
    sequences: list[tuple[str, int]] | None = None  # type scheme: (type, sub-layer) of each sequence

    def word_labels(self, row: dict[str, Any]) -> list[list[int]]:
        raise NotImplementedError

    def gold(self, row: dict[str, Any]) -> list[Entity]:
        """The gold entities a model of this encoding is validated against: every entity of the report."""
        return [gold_entity(e) for e in row["entities"]]

    def oracle(self, row: dict[str, Any]) -> list[Entity]:
        """The report's gold entities encoded as this scheme's tags and decoded back (the scheme's ceiling)."""
        tags = [[labels[i] for i in ids] for labels, ids in zip(self.sequence_labels, self.word_labels(row))]
        spans = [tuple(span) for span in row["token_offsets"]]
        decoded, _ = tags_to_entities(tags, [[1.0] * len(spans)] * len(tags), spans)
        return [Entity(e.type, ((e.start, e.end),), id=f"T{n}") for n, e in enumerate(decoded, start=1)]


class DepthEncoding(Encoding):
    """The paper's nesting layers: exactly the dataset's ``ner_tags_<k>`` columns of ``layers``."""

    name = "depth"

    def __init__(self, dataset: datasets.DatasetDict, layers: Sequence[int], **_: Any) -> None:
        features = dataset["train"].features
        self.labels = features["ner_tags_1"].feature.names
        self.layers = list(layers)
        self.all_layers = sum(1 for name in features if name.startswith("ner_tags_")) == len(self.layers)
        self.sequence_labels = [list(self.labels) for _ in self.layers]

    def word_labels(self, row: dict[str, Any]) -> list[list[int]]:
        return [row[f"ner_tags_{layer}"] for layer in self.layers]

    def gold(self, row: dict[str, Any]) -> list[Entity]:
        """Every gold entity when all layers are trained together; else the entities encoded in these layers."""
        return [gold_entity(e) for e in row["entities"] if self.all_layers or e["layer"] in self.layers]


class TypeEncoding(Encoding):
    """One sequence per entity type, plus sub-layers where entities of one type overlap (as the train split needs,
    at most ``max_sublayers``)."""

    name = "type"

    def __init__(
        self,
        dataset: datasets.DatasetDict,
        layers: Sequence[int],
        max_sublayers: int = 3,
        discontinuous: Discontinuous = "hull",
        **_: Any,
    ) -> None:
        names = dataset["train"].features["ner_tags_1"].feature.names
        self.types = list(dict.fromkeys(label[2:] for label in names if label[:2] in ("B-", "I-")))
        self.layers = list(layers)
        self.max_sublayers = max_sublayers
        self.discontinuous = discontinuous
        depth = Counter({kind: 1 for kind in self.types})
        for row in dataset["train"]:
            for kind, encoding in self._encode(row, max_sublayers).items():
                depth[kind] = max(depth[kind], max(encoding.layer_of, default=1))
        self.sequences = [(kind, sub) for kind in self.types for sub in range(1, depth[kind] + 1)]
        self.sequence_labels = [type_labels(kind) for kind, _ in self.sequences]

    def _encode(self, row: dict[str, Any], sublayers: int | dict[str, int]) -> dict[str, Any]:
        """Per type, the dataset's layering policy over that type's entities of the report."""
        by_type: dict[str, list[Entity]] = {}
        for entity in row["entities"]:
            by_type.setdefault(entity["type"], []).append(gold_entity(entity))
        words = [tuple(span) for span in row["token_offsets"]]
        return {
            kind: encode(
                row["text"],
                entities,
                [kind],
                sublayers if isinstance(sublayers, int) else sublayers[kind],
                self.discontinuous,
                words,
            )
            for kind, entities in by_type.items()
            if kind in self.types
        }

    def word_labels(self, row: dict[str, Any]) -> list[list[int]]:
        depth = Counter(kind for kind, _ in self.sequences)
        encoded = self._encode(row, dict(depth))
        empty = [0] * len(row["token_offsets"])
        labels = []
        for kind, sub in self.sequences:
            names = type_labels(kind)
            tags = encoded[kind].tags[sub - 1] if kind in encoded else None
            labels.append([names.index(tag) for tag in tags] if tags else empty)
        return labels

    def statistics(self, split: datasets.Dataset) -> dict[str, int]:
        """How the split's entities fare under this encoding: encoded, merged duplicates, dropped for depth within
        their type, covering no word, and of another type than the dataset's label set."""
        depth = dict(Counter(kind for kind, _ in self.sequences))
        counts = Counter()
        for row in split:
            for encoding in self._encode(row, depth).values():
                counts.update(
                    encoded=encoding.encoded,
                    merged=encoding.merged,
                    dropped=encoding.dropped,
                    uncovered=len(encoding.uncovered),
                )
            counts["other_type"] += sum(1 for e in row["entities"] if e["type"] not in self.types)
        return dict(counts)


ENCODINGS: dict[str, type[Encoding]] = {"depth": DepthEncoding, "type": TypeEncoding}


def make_encoding(scheme: str, dataset: datasets.DatasetDict, layers: Sequence[int], **options: Any) -> Encoding:
    """The registered encoding of ``scheme`` for this dataset."""
    return ENCODINGS[scheme](dataset, layers, **options)
