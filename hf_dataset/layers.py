"""Entities to layered IOB2 word tags and back: the policies of the dataset card, in one place.

- Words come from :func:`hf_pipeline.radiology_ner.word_spans`; an entity covers the words it overlaps, and a
  boundary inside a word is *misaligned* (expanded to the word, and counted).
- Discontinuous entities are encoded as their hull (``hull``) or one span per fragment (``split``).
- Exact duplicates (same type, same fragments) are merged. The rest are sorted by (start, longer first,
  type order) and each goes to the lowest layer where it overlaps no word already taken; an entity that fits
  in no layer of ``max_layers`` is dropped for depth. Entities are never split across layers.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from hf_dataset.entities import Entity
from hf_pipeline.words import Span, decode_bio, word_spans

Discontinuous = Literal["hull", "split"]
WordRange = tuple[int, int]  # first and last word, inclusive


def label_names(types: Sequence[str]) -> list[str]:
    """The ClassLabel names of every layer: ``O`` then ``B-T``, ``I-T`` per type, in the given order."""
    return ["O"] + [f"{prefix}-{name}" for name in types for prefix in ("B", "I")]


@dataclass
class Encoding:
    """One document's layered tags and what happened to each of its entities."""

    words: list[tuple[int, int]]
    tags: list[list[str]]
    layer_of: list[int]  # per input entity: 1-based layer, or 0 when dropped for depth
    encoded: int = 0
    merged: int = 0
    dropped: int = 0
    misaligned: int = 0
    discontinuous: int = 0
    uncovered: list[int] = field(default_factory=list)  # entities that cover no word (only spaces)


@dataclass(frozen=True)
class WordIndex:
    """The words of one document with their start and end offsets as sorted lists, built once for bisect."""

    spans: Sequence[tuple[int, int]]
    starts: list[int]
    ends: list[int]

    @classmethod
    def of(cls, words: Sequence[tuple[int, int]] | WordIndex) -> WordIndex:
        if isinstance(words, WordIndex):
            return words
        return cls(words, [start for start, _ in words], [end for _, end in words])


def word_ranges(entity: Entity, words: Sequence[tuple[int, int]] | WordIndex, mode: Discontinuous) -> list[WordRange]:
    """The word ranges an entity is encoded as: one hull, or one per fragment (overlapping ones joined).

    Pass a :class:`WordIndex` when calling this for many entities of one document: O(log words) each.
    """
    index = WordIndex.of(words)
    fragments = [(entity.start, entity.end)] if mode == "hull" else list(entity.sorted_fragments)
    ranges: list[WordRange] = []
    for start, end in fragments:
        first, last = bisect.bisect_right(index.ends, start), bisect.bisect_left(index.starts, end) - 1
        if first > last:
            continue
        if ranges and first <= ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(last, ranges[-1][1]))
        else:
            ranges.append((first, last))
    return ranges


def is_misaligned(entity: Entity, words: Sequence[tuple[int, int]] | WordIndex) -> bool:
    """True when a fragment boundary falls strictly inside a word."""
    index = WordIndex.of(words)
    for boundary in (offset for fragment in entity.fragments for offset in fragment):
        word = bisect.bisect_right(index.starts, boundary) - 1
        if word >= 0 and index.starts[word] < boundary < index.ends[word]:
            return True
    return False


def encode(
    text: str,
    entities: Sequence[Entity],
    types: Sequence[str],
    max_layers: int = 3,
    mode: Discontinuous = "hull",
    words: list[tuple[int, int]] | None = None,
) -> Encoding:
    """Give every entity a layer and write each layer as IOB2 tags over the words of ``text``.

    ``words``: the words to tag, when not every word of ``text`` (a part of a report that the entities do not
    leave: see :mod:`hf_dataset.rows`).
    """
    words = word_spans(text) if words is None else words
    index_of_words = WordIndex.of(words)
    order = {name: index for index, name in enumerate(types)}
    tags = [["O"] * len(words) for _ in range(max_layers)]
    taken: list[set[int]] = [set() for _ in range(max_layers)]
    encoding = Encoding(words, tags, [0] * len(entities))
    first_of: dict[Entity, int] = {}
    ranked = sorted(range(len(entities)), key=lambda i: _rank(entities[i], order))
    for index in ranked:
        entity = entities[index]
        encoding.discontinuous += len(entity.fragments) > 1
        encoding.misaligned += is_misaligned(entity, index_of_words)
        if entity in first_of:
            encoding.layer_of[index] = encoding.layer_of[first_of[entity]]
            encoding.merged += 1
            continue
        first_of[entity] = index
        ranges = word_ranges(entity, index_of_words, mode)
        if not ranges:
            encoding.uncovered.append(index)
            continue
        covered = {word for first, last in ranges for word in range(first, last + 1)}
        layer = next((n for n in range(max_layers) if not covered & taken[n]), None)
        if layer is None:
            encoding.dropped += 1
            continue
        taken[layer] |= covered
        encoding.layer_of[index] = layer + 1
        encoding.encoded += 1
        for first, last in ranges:
            tags[layer][first] = f"B-{entity.type}"
            for word in range(first + 1, last + 1):
                tags[layer][word] = f"I-{entity.type}"
    return encoding


def _rank(entity: Entity, order: dict[str, int]) -> tuple[int, int, int, tuple]:
    return (entity.start, -(entity.end - entity.start), order.get(entity.type, len(order)), entity.sorted_fragments)


def decode(tags: Sequence[Sequence[str]]) -> list[tuple[int, Span]]:
    """Decode every layer; returns (1-based layer, word span) pairs."""
    return [(layer, span) for layer, layer_tags in enumerate(tags, start=1) for span in decode_bio(layer_tags)]


def spans_to_entities(spans: Sequence[tuple[int, Span]], words: Sequence[tuple[int, int]]) -> list[Entity]:
    """Word spans back to character-offset entities (one fragment: first word start to last word end)."""
    return [
        Entity(span.type, ((words[span.first][0], words[span.last][1]),), id=f"T{number}")
        for number, (_, span) in enumerate(spans, start=1)
    ]
