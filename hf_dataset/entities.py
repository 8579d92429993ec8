"""Entities of brat annotations: :class:`Entity`, one span, and :class:`EntityTable`, many as compact columns."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

Fragment = tuple[int, int]


@dataclass(frozen=True, order=True)
class Entity:
    """One annotated span; several fragments when discontinuous. Offsets are end-exclusive.

    ``fragments`` are kept as listed; comparison and ordering use (``type``, ``sorted_fragments``).
    ``line`` is the .ann line the entity was read from (0 when it was not read from a file).
    """

    type: str
    fragments: tuple[Fragment, ...] = field(compare=False)
    id: str = field(default="", compare=False)
    text: str = field(default="", compare=False)
    line: int = field(default=0, compare=False, repr=False)
    sorted_fragments: tuple[Fragment, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sorted_fragments", tuple(sorted(self.fragments)))

    @property
    def start(self) -> int:
        return self.sorted_fragments[0][0]

    @property
    def end(self) -> int:
        return max(end for _, end in self.fragments)

    @classmethod
    def from_prediction(cls, entity: Mapping[str, Any]) -> Entity:
        """The entity of one radiology-ner pipeline output dict (``entity_group``, ``start``, ``end``)."""
        return cls(entity["entity_group"], ((entity["start"], entity["end"]),))


def fragment_text(text: str, fragments: Iterable[Fragment]) -> str:
    """The characters of an entity: its fragments' slices of ``text``, joined by a space in the listed order."""
    return " ".join(text[start:end] for start, end in fragments)


class EntityTable(Sequence[Entity]):
    """The entities of one report as compact columns, a few dozen bytes each instead of a Python object.

    A report of megabytes holds hundreds of thousands of entities; the reader keeps them here, and indexing
    gives an :class:`Entity` (its ``text`` sliced from the report) only when one is needed. Columns, in file
    order: ``types`` (a code into ``type_names``), ``counts`` (fragments), ``offsets`` (start, end of every
    fragment, as listed), ``lines``, and the ids.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.type_names: list[str] = []
        self._codes: dict[str, int] = {}
        self.types, self.counts, self.lines = array("i"), array("i"), array("i")
        self.offsets = array("q")
        self._first = array("q")  # per entity: its first fragment's index (offsets holds two numbers per fragment)
        self._id_parts: list[str] = []
        self._id_chunks: list[str] = []
        self._ids = ""
        self._id_ends = array("q")

    def append(self, entity_id: str, entity_type: str, fragments: Sequence[Fragment], line: int = 0) -> None:
        self.types.append(self._codes.setdefault(entity_type, len(self._codes)))
        if len(self._codes) > len(self.type_names):
            self.type_names.append(entity_type)
        self._first.append(len(self.offsets) // 2)
        self.counts.append(len(fragments))
        for fragment in fragments:
            self.offsets.extend(fragment)
        self.lines.append(line)
        self._id_parts.append(entity_id)
        self._id_ends.append((self._id_ends[-1] if self._id_ends else 0) + len(entity_id))
        if len(self._id_parts) >= 4096:  # ids in strings of 4096: no object per id
            self._id_chunks.append("".join(self._id_parts))
            self._id_parts.clear()

    @classmethod
    def of(cls, entities: Iterable[Entity], text: str) -> EntityTable:
        table = cls(text)
        for entity in entities:
            table.append(entity.id, entity.type, entity.fragments, entity.line)
        return table

    def __len__(self) -> int:
        return len(self.types)

    @overload
    def __getitem__(self, index: int) -> Entity: ...
    @overload
    def __getitem__(self, index: slice) -> list[Entity]: ...
    def __getitem__(self, index: int | slice) -> Entity | list[Entity]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]
        fragments = self.fragments(index)
        return Entity(
            self.type(index), fragments, self.id(index), fragment_text(self.text, fragments), self.lines[index]
        )

    def __iter__(self) -> Iterator[Entity]:
        return (self[i] for i in range(len(self)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def fragments(self, index: int) -> tuple[Fragment, ...]:
        first = self._first[index]
        pairs = self.offsets[2 * first : 2 * (first + self.counts[index])]
        return tuple(zip(pairs[::2], pairs[1::2]))

    def id(self, index: int) -> str:
        if self._id_parts or self._id_chunks:  # one string of every id, joined once when first read
            self._ids = "".join([self._ids, *self._id_chunks, *self._id_parts])
            self._id_chunks.clear()
            self._id_parts.clear()
        return self._ids[self._id_ends[index - 1] if index else 0 : self._id_ends[index]]

    def type(self, index: int) -> str:
        return self.type_names[self.types[index]]

    def hulls(self) -> tuple[np.ndarray, np.ndarray]:
        """The start and end of every entity's hull (its first fragment start to its last fragment end)."""
        if not len(self):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pairs = np.frombuffer(self.offsets, np.int64).reshape(-1, 2)
        first = np.frombuffer(self._first, np.int64)
        return np.minimum.reduceat(pairs[:, 0], first), np.maximum.reduceat(pairs[:, 1], first)

    def select(self, indices: Iterable[int]) -> EntityTable:
        """A table of the given entities, in the given order."""
        table = EntityTable(self.text)
        for i in indices:
            table.append(self.id(i), self.type(i), self.fragments(i), self.lines[i])
        return table
