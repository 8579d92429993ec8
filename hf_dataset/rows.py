"""One report to one dataset row, in memory that stays a small multiple of the row itself.

A report is layered in parts of about ``PART_CHARACTERS`` characters, cut at a space that no entity spans:
entities of different parts share no word, so layering each part alone gives the tags that layering the whole
report gives (:func:`parts`). The :class:`~hf_dataset.entities.Entity` objects and word lists of one part exist at a
time; words, tags and layers gather in compact arrays (:class:`ReportLayers`), and the row is assembled from them
as Arrow arrays (:func:`report_row`), with no Python object per word or entity.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import datasets
import numpy as np
import pyarrow as pa

from hf_dataset.entities import EntityTable, fragment_text
from hf_dataset.layers import Discontinuous, Encoding, decode, encode, label_names, spans_to_entities
from hf_pipeline.scoring import Report, score
from hf_pipeline.words import word_spans

PART_CHARACTERS = 1 << 16
COUNTS = ("encoded", "merged", "dropped", "misaligned", "discontinuous")  # what layering did, per entity
_SPACE = re.compile(r"\s")


@dataclass
class ReportLayers:
    """A report's words, tags (label ids per layer) and entity layers as arrays, with what layering did to its
    entities (the counts of :class:`~hf_dataset.layers.Encoding`) and the oracle's scores of its parts."""

    starts: array = field(default_factory=lambda: array("i"))
    ends: array = field(default_factory=lambda: array("i"))
    tags: list[array] = field(default_factory=list)
    layer_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    encoded: int = 0
    merged: int = 0
    dropped: int = 0
    misaligned: int = 0
    discontinuous: int = 0
    uncovered: list[int] = field(default_factory=list)  # entity indices in the report
    oracle: Report = field(default_factory=Report)

    def add(self, encoding: Encoding, members: np.ndarray, label_ids: dict[str, int]) -> None:
        """Append one part's encoding; ``members`` are its entities' indices in the report."""
        self.starts.extend(start for start, _ in encoding.words)
        self.ends.extend(end for _, end in encoding.words)
        for layer_tags, tags in zip(self.tags, encoding.tags):
            layer_tags.extend(map(label_ids.__getitem__, tags))
        self.layer_of[members] = encoding.layer_of
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(encoding, name))
        self.uncovered += [int(members[i]) for i in encoding.uncovered]


def layer_report(
    text: str, entities: EntityTable, types: Sequence[str], max_layers: int, mode: Discontinuous
) -> ReportLayers:
    """Layer a report part by part (:func:`parts`); the oracle scores each part's decode(encode(gold))."""
    label_ids = {name: index for index, name in enumerate(label_names(types))}
    layers = ReportLayers(tags=[array("h") for _ in range(max_layers)], layer_of=np.zeros(len(entities), np.int8))
    for begin, end, members in parts(text, entities, PART_CHARACTERS):
        gold = [entities[int(i)] for i in members]
        encoding = encode(text, gold, types, max_layers, mode, words=word_spans(text, begin, end))
        layers.add(encoding, members, label_ids)
        decoded = spans_to_entities(decode(encoding.tags), encoding.words)
        layers.oracle.add(score({"": gold}, {"": decoded}, types))
    return layers


def parts(text: str, entities: EntityTable, size: int = PART_CHARACTERS) -> Iterator[tuple[int, int, np.ndarray]]:
    """(first character, end character, indices of its entities in file order) for each part of a report.

    A part ends at the first space at least ``size`` characters after its start that no entity's hull (first to
    last character) covers; no word contains a space, so no word or entity crosses a cut.
    """
    starts, ends = entities.hulls()
    order = np.argsort(starts, kind="stable")
    sorted_starts = starts[order]
    reach = np.maximum.accumulate(ends[order]) if len(order) else ends  # the furthest end among the first k
    begin = 0
    while begin < len(text):
        cut = _free_space(text, begin + size, sorted_starts, reach)
        first, last = np.searchsorted(sorted_starts, [begin, cut])
        yield begin, cut, np.sort(order[first:last])
        begin = cut
    if not len(text):
        yield 0, 0, order


def _free_space(text: str, position: int, sorted_starts: np.ndarray, reach: np.ndarray) -> int:
    """The first space at or after ``position`` that no entity covers, or the end of the text."""
    while position < len(text):
        space = _SPACE.search(text, position)
        if space is None:
            return len(text)
        position = space.start()
        covering = int(np.searchsorted(sorted_starts, position, side="right")) - 1
        if covering < 0 or reach[covering] <= position:
            return position
        position = int(reach[covering])
    return len(text)


def report_row(
    report_id: str, text: str, entities: EntityTable, layers: ReportLayers, features: datasets.Features
) -> pa.Table:
    """The dataset row of one report (the schema of :func:`hf_dataset.builder.features`), built from arrays."""
    schema = features.arrow_schema
    words = len(layers.starts)
    starts, ends = np.frombuffer(layers.starts, np.int32), np.frombuffer(layers.ends, np.int32)
    tokens = _strings(text[start:end] for start, end in zip(layers.starts, layers.ends))
    offsets = _pairs(np.column_stack((starts, ends)).ravel())
    tags = [pa.array(np.frombuffer(layer_tags, np.int16).astype(np.int64)) for layer_tags in layers.tags]
    columns = [
        pa.array([report_id], pa.string()),
        pa.array([text], pa.string()),
        *(_one_list(values, words) for values in (tokens, offsets, *tags)),
        _one_list(_entity_structs(text, entities, layers, schema.field("entities").type.value_type), len(entities)),
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _entity_structs(text: str, entities: EntityTable, layers: ReportLayers, struct: pa.StructType) -> pa.Array:
    starts, ends = entities.hulls()
    counts = np.frombuffer(entities.counts, np.int32)
    fragments = pa.ListArray.from_arrays(
        np.concatenate(([0], np.cumsum(counts, dtype=np.int32))).astype(np.int32),
        _pairs(np.frombuffer(entities.offsets, np.int64).astype(np.int32)),
    )
    type_names = pa.array(entities.type_names, pa.string())
    columns = {
        "id": _strings(entities.id(i) for i in range(len(entities))),
        "type": pa.DictionaryArray.from_arrays(np.frombuffer(entities.types, np.int32), type_names).cast(pa.string()),
        "start": pa.array(starts.astype(np.int32)),
        "end": pa.array(ends.astype(np.int32)),
        "fragments": fragments,
        "text": _strings(fragment_text(text, entities.fragments(i)) for i in range(len(entities))),
        "layer": pa.array(layers.layer_of),
    }
    return pa.StructArray.from_arrays([columns[f.name] for f in struct], fields=list(struct))


def _pairs(flat: np.ndarray) -> pa.Array:
    """Consecutive (start, end) numbers as a list array of two-number lists."""
    return pa.ListArray.from_arrays(np.arange(0, len(flat) + 1, 2, dtype=np.int32), pa.array(flat, pa.int32()))


def _one_list(values: pa.Array, length: int) -> pa.Array:
    """A column of one row whose value is the list ``values``."""
    return pa.ListArray.from_arrays(pa.array([0, length], pa.int32()), values)


def _strings(strings: Iterable[str], batch: int = 1 << 16) -> pa.Array:
    """A string array built ``batch`` strings at a time (no list of every string at once)."""
    iterator = iter(strings)
    chunks = [pa.array([], pa.string())]
    while chunk := list(islice(iterator, batch)):
        chunks.append(pa.array(chunk, pa.string()))
    return pa.concat_arrays(chunks)
