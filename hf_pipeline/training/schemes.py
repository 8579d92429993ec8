"""The training half of the labeling schemes: a report's entities as word labels of each tag sequence.

The decoding half travels with the bundle (``hf_pipeline.schemes``); a scheme here is registered under the name
``config.json["ner_scheme"]`` records (:data:`ENCODINGS`) and says which sequences a model learns
(``sequence_labels``), each report's word labels (``word_labels``), the gold entities validation scores against
(``gold``) and the oracle, ``decode(encode(gold))``, the ceiling of the scheme on a corpus (``oracle``):

- ``depth``: the dataset's own layered tags, ``ner_tags_<k>`` of the trained layers;
- ``type``: derived from the lossless ``entities`` column at training time (the dataset does not change): per
  entity type, the dataset's layering policy (``hf_dataset.layers.encode``) among that type's entities only, with as
  many sub-layers as the training split needs, at most ``max_sublayers``; what does not fit is dropped and counted;
- ``span``: no tag sequences: each word carries, for each span width ``k < K``, the set of types of the gold
  entities over words ``i..i+k`` (a bit mask, one bit per type); entities longer than ``K`` words are the span
  head's ceiling loss, counted in the oracle. ``K`` covers 99.9% of the training entities unless given.

Each encoding also turns a token-classification config into its bundle's (``configure``).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import datasets

from hf_dataset.entities import Entity
from hf_dataset.layers import Discontinuous, WordIndex, encode, label_names, word_ranges
from hf_pipeline.bundle import make_shared_config, make_span_config
from hf_pipeline.model_card import entity_types
from hf_pipeline.schemes import tags_to_entities, type_labels
from hf_pipeline.spans import without_same_type_overlaps

logger = logging.getLogger("train")


def gold_entity(entity: dict[str, Any]) -> Entity:
    return Entity(entity["type"], tuple(map(tuple, entity["fragments"])), entity["id"], entity["text"])


class Encoding:
    """What every scheme shares: the oracle and the names a trained model is saved under."""

    name = ""
    sequence_labels: list[list[str]]
    layers: list[int]  # the nesting layers the bundle shows (depth: also the sequences)
    sequences: list[tuple[str, int]] | None = None  # type scheme: (type, sub-layer) of each sequence

    @property
    def title(self) -> str:
        """What a shared model of this encoding learns, for the log."""
        return f"{self.name} scheme, {len(self.sequence_labels)} tag sequences"

    def word_labels(self, row: dict[str, Any]) -> list[list[int]]:
        raise NotImplementedError

    def configure(self, config: Any) -> None:
        """Make a token-classification config this encoding's shared-encoder bundle config."""
        make_shared_config(config, self.sequence_labels[0], self.layers, self.sequences)

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
        self.types = entity_types(dataset["train"].features["ner_tags_1"].feature.names)
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


SPAN_COVERAGE = 0.999  # the share of training entities K covers by default
SAME_TYPE_OVERLAP_SHARE = 0.01  # the share of training entities overlapping one of their type that lets them overlap
MAX_SPAN_TYPES = 62  # a word's label is a bit mask over the types (int64)
SPAN_DIMS = 128  # default size of the start and end representations
SPAN_SCORER = "mlp_mean"  # the default scorer: the best of the three on the quality benchmark (docs/quality.md)
SPAN_POSITIVE_WEIGHT = 5.0  # a gold span-type pair's weight in the loss (docs/quality.md: validation +1.5 over 1)


class SpanEncoding(Encoding):
    """The span head's targets: per word and width ``k``, a bit mask of the types of the gold entities over words
    ``i..i+k``."""

    name = "span"
    title = "span head"

    def __init__(
        self,
        dataset: datasets.DatasetDict,
        layers: Sequence[int],
        max_span_words: int | None = None,
        discontinuous: Discontinuous = "hull",
        span_dims: int = SPAN_DIMS,
        span_scorer: str = SPAN_SCORER,
        span_positive_weight: float = SPAN_POSITIVE_WEIGHT,
        **_: Any,
    ) -> None:
        self.types = entity_types(dataset["train"].features["ner_tags_1"].feature.names)
        if len(self.types) > MAX_SPAN_TYPES:
            raise ValueError(
                f"The span head scores at most {MAX_SPAN_TYPES} types; this dataset has {len(self.types)}."
            )
        self.layers = list(layers)
        self.discontinuous = discontinuous
        self.dims = span_dims
        self.scorer = span_scorer
        self.positive_weight = span_positive_weight  # training only: the loss's weight of a gold span
        self.sequence_labels = [label_names(self.types)]
        lengths: Counter = Counter()
        overlapping = total = 0
        for row in dataset["train"]:
            found = self.word_spans(row)
            lengths.update(last - first + 1 for _, first, last in found)
            overlapping += sum(1 for span in found if _overlaps_same_type(span, found))
            total += len(found)
        self.max_words = max_span_words or _covering(lengths, SPAN_COVERAGE)
        self.same_type_overlaps = overlapping >= SAME_TYPE_OVERLAP_SHARE * max(total, 1)

    def word_spans(self, row: dict[str, Any]) -> list[tuple[int, int, int]]:
        """``(type index, first word, last word)`` of the report's entities of a known type that cover a word (a
        discontinuous entity: as the dataset encodes it, its hull or each fragment with ``--discontinuous split``),
        each once."""
        words = WordIndex.of([tuple(span) for span in row["token_offsets"]])
        found = {}
        for entity in row["entities"]:
            if entity["type"] in self.types:
                for first, last in word_ranges(gold_entity(entity), words, self.discontinuous):
                    found[(self.types.index(entity["type"]), first, last)] = None
        return list(found)

    def word_labels(self, row: dict[str, Any]) -> list[list[int]]:
        labels = [[0] * len(row["token_offsets"]) for _ in range(self.max_words)]
        for kind, first, last in self.word_spans(row):
            if last - first < self.max_words:
                labels[last - first][first] |= 1 << kind
        return labels

    def configure(self, config: Any) -> None:
        make_span_config(
            config, self.types, self.layers, self.max_words, self.dims, self.same_type_overlaps, self.scorer
        )

    def oracle(self, row: dict[str, Any]) -> list[Entity]:
        """The gold spans the head can return: at most ``K`` words, same-type overlaps resolved as decoding does."""
        offsets = row["token_offsets"]
        spans = [
            (self.types[kind], first, last, 1.0)
            for kind, first, last in self.word_spans(row)
            if last - first < self.max_words
        ]
        if not self.same_type_overlaps:
            spans = without_same_type_overlaps(spans)
        return [
            Entity(kind, ((offsets[first][0], offsets[last][1]),), id=f"T{n}")
            for n, (kind, first, last, _) in enumerate(spans, start=1)
        ]

    def statistics(self, split: datasets.Dataset) -> dict[str, int]:
        """How the split's entities fare: within ``K`` words, longer (the ceiling loss), of another type."""
        counts = Counter()
        for row in split:
            for _, first, last in self.word_spans(row):
                counts["longer_than_k" if last - first >= self.max_words else "within_k"] += 1
            counts["other_type"] += sum(1 for e in row["entities"] if e["type"] not in self.types)
        return dict(counts)


def _covering(lengths: Counter, share: float) -> int:
    """The smallest length that covers ``share`` of the counted lengths (1 when none).

    >>> _covering(Counter({1: 90, 2: 9, 7: 1}), 0.99)
    2
    """
    total, covered = sum(lengths.values()), 0
    for length in sorted(lengths):
        covered += lengths[length]
        if covered >= math.ceil(share * total):
            return length
    return 1


def _overlaps_same_type(span: tuple[int, int, int], spans: Sequence[tuple[int, int, int]]) -> bool:
    kind, first, last = span
    return any(o != span and o[0] == kind and o[1] <= last and first <= o[2] for o in spans)


ENCODINGS: dict[str, type[Encoding]] = {"depth": DepthEncoding, "type": TypeEncoding, "span": SpanEncoding}


def make_encoding(scheme: str, dataset: datasets.DatasetDict, layers: Sequence[int], **options: Any) -> Encoding:
    """The registered encoding of ``scheme`` for this dataset."""
    return ENCODINGS[scheme](dataset, layers, **options)
