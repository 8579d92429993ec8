"""The brat ``.ann`` format: parse the ``T`` lines of one file against its text, and write entities back.

Only ``T`` lines are entities. ``R``, ``A``, ``E``, ``N``, ``M``, ``#`` and ``*`` lines are skipped. A ``T`` line's
text field may contain tabs, start with a tab, or run over several physical lines (tools that write the
newline of a multi-line span verbatim); it is compared with the ``.txt`` slices after collapsing whitespace.
A UTF-8 byte order mark at the start of an ``.ann`` is ignored. A line that cannot be used is a :class:`Problem`
(file, line, id, why), never an exception: the corpus reader (:mod:`hf_dataset.brat`) decides what stops a build.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hf_dataset.entities import Entity, EntityTable, Fragment, fragment_text
from hf_pipeline.words import ann_text

_OTHER_LINE = re.compile(r"^[RAENM#*]")
_ANNOTATION_START = re.compile(r"^[TRAENM#*][^\t]*\t")
_T_HEADER = re.compile(r"^(\S+) (\d+ \d+(?:;\d+ \d+)*)$")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Problem:
    """An annotation that cannot be used as it is: where it is (file, line, id) and why.

    ``kind`` is ``"annotation"`` for a line that cannot be read or does not match the text, ``"type"`` for an
    entity whose type is outside the label set, ``"layering"`` for an entity that covers no word.
    """

    path: str
    line: int
    message: str
    entity_id: str = ""
    kind: str = "annotation"
    entity_type: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}: " if self.line else f"{self.path}: "
        return f"{where}{self.entity_id + ': ' if self.entity_id else ''}{self.message}"

    def to_dict(self, root: str | Path | None = None) -> dict[str, str | int]:
        """The JSON form kept in ``statistics.json``: ``file`` (relative to ``root`` when under it), ``line``,
        ``id``, ``reason``."""
        path = Path(self.path)
        inside = root is not None and path.is_relative_to(root)
        file = path.relative_to(root).as_posix() if inside else self.path
        return {"file": file, "line": self.line, "id": self.entity_id, "reason": self.message}


def parse_ann(ann_text: str, text: str, path: str) -> tuple[list[Entity], list[Problem]]:
    """Parse the ``T`` lines of one ``.ann`` against its document text.

    Returns:
        The valid entities, and one :class:`Problem` per line that is malformed, points outside the text,
        whose text differs from the document's slices, or that reuses the id of an earlier line (the
        problem names both lines; the earlier entity is kept).
    """
    table, problems = parse_ann_table(ann_text, text, path)
    return list(table), problems


def parse_ann_table(ann_text: str, text: str, path: str) -> tuple[EntityTable, list[Problem]]:
    """:func:`parse_ann` into an :class:`EntityTable`: no Python object per entity."""
    table = EntityTable(text)
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    for line_number, line in _logical_lines(ann_text.removeprefix("\ufeff")):
        if not line.strip() or _OTHER_LINE.match(line):
            continue
        entity_id = line.split("\t", 1)[0] if "\t" in line else ""
        if entity_id in first_line:
            problems.append(Problem(path, line_number, _duplicate_id(first_line[entity_id]), entity_id))
            continue
        if entity_id:
            first_line[entity_id] = line_number
        parsed, problem = _parse_t_line(line, text)
        if problem:
            problems.append(Problem(path, line_number, problem, entity_id))
        elif parsed:
            table.append(entity_id, *parsed, line_number)
    return table, problems


def _duplicate_id(first: int) -> str:
    return (
        f"the same id is already used on line {first}. Give every annotation its own id, "
        "or pass --skip_invalid to keep the first one and skip this one."
    )


def _logical_lines(ann_text: str) -> Iterable[tuple[int, str]]:
    """Physical lines joined where a ``T`` text field runs on over line breaks; yields (first line number, line).

    A text field shorter than its fragments takes the following physical lines, blank ones included, until it is
    long enough or a line starts a new annotation; the line breaks are kept as they are in the file.
    """
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(_physical_lines(ann_text), start=1):
        if pending and not _ANNOTATION_START.match(raw) and _needs_more_text(pending[1]):
            pending = (pending[0], pending[1] + "\n" + raw)
            continue
        if pending:
            yield pending[0], pending[1].removesuffix("\r")
        pending = (number, raw)
    if pending:
        yield pending[0], pending[1].removesuffix("\r")


def _physical_lines(text: str) -> Iterator[str]:
    """``text.split("\\n")``, one line at a time (a large ``.ann`` is not copied into a list of lines)."""
    start = 0
    while start <= len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end
        yield text[start:end]
        start = end + 1


def _needs_more_text(line: str) -> bool:
    """True for a ``T`` line whose text field is shorter than its fragments say."""
    parts = line.removesuffix("\r").split("\t", 2)
    header = _T_HEADER.match(parts[1]) if len(parts) == 3 and line.startswith("T") else None
    if not header:
        return False
    fragments = _fragments(header.group(2))
    expected = sum(end - start for start, end in fragments) + len(fragments) - 1
    return len(parts[2]) < expected


def _fragments(offsets: str) -> tuple[Fragment, ...]:
    """The fragments of a ``start end;start end`` field, in the order listed."""
    pairs = (piece.split() for piece in offsets.split(";"))
    return tuple((int(start), int(end)) for start, end in pairs)


def _parse_t_line(line: str, text: str) -> tuple[tuple[str, tuple[Fragment, ...]] | None, str | None]:
    """(type, fragments) of a valid ``T`` line, or the problem with it."""
    parts = line.split("\t", 2)
    if not line.startswith("T") or len(parts) != 3:
        return None, (
            f"cannot read {line[:60]!r}: expected 'T<n><TAB>Type start end[;start end...]<TAB>text' "
            "(or an R/A/E/N/M/#/* line). Fix the line or delete it."
        )
    _, header_text, ann_text = parts
    header = _T_HEADER.match(header_text)
    if not header:
        return None, (
            f"cannot read type and offsets from {header_text!r}; expected 'Type start end' "
            "with fragments separated by ';'."
        )
    fragments = _fragments(header.group(2))
    for start, end in fragments:
        if not 0 <= start < end <= len(text):
            return None, (
                f"fragment {start} {end} is empty or outside the text ({len(text)} characters). "
                "Was the .txt edited after annotation, or read with newline translation?"
            )
    slices = fragment_text(text, fragments)
    if _WHITESPACE.sub(" ", slices).strip() != _WHITESPACE.sub(" ", ann_text).strip():
        return None, (
            f"the .ann says {ann_text.strip()[:60]!r} but the .txt has {slices[:60]!r} "
            f"at {header.group(2)}. "
            "Correct the offsets, or pass --skip_invalid to skip and count such entities."
        )
    return (header.group(1), fragments), None


def write_ann(path: str | Path, text: str, entities: Iterable[Entity]) -> None:
    """Write entities as a brat ``.ann``; ids ``T1..Tn`` in order, text taken from the document.

    Line breaks inside an entity's text are written as spaces so every annotation stays on one line;
    :func:`parse_ann` compares text modulo whitespace, so the file reads back to the same entities.
    """
    Path(path).write_text(
        ann_text(text, ((entity.type, entity.fragments) for entity in entities)), encoding="utf-8", newline=""
    )
