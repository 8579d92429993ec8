"""Read and write brat standoff corpora (``.txt`` + ``.ann``), with validation that names file and line.

Reading gives one :class:`Document` per ``.txt``/``.ann`` pair::

    Document(id="sub/report_01",              # path relative to the corpus folder, no extension
             text="...",                      # the .txt exactly as stored (newline="": CRLF keeps its \\r)
             entities=[Entity(id="T3", type="Finding",
                              fragments=((25, 30), (10, 20)),   # as listed in the .ann, end-exclusive
                              text="text of 25:30 text of 10:20"), ...])

A discontinuous entity may list its fragments in any order; its text field joins them in the listed order.
``fragments`` keeps that order; ``sorted_fragments``, ``start`` and ``end`` (the hull) and equality use the
sorted fragments, so two entities with the same type and the same characters are equal.

Only ``T`` lines are entities. ``R``, ``A``, ``E``, ``N``, ``M``, ``#`` and ``*`` lines are skipped. A ``T`` line's
text field may contain tabs, start with a tab, or run over several physical lines (tools that write the
newline of a multi-line span verbatim); it is compared with the ``.txt`` slices after collapsing whitespace.
A UTF-8 byte order mark at the start of an ``.ann`` is ignored; at the start of a ``.txt`` it is kept as
character 0, as brat itself counts it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Fragment = tuple[int, int]

_OTHER_LINE = re.compile(r"^[RAENM#*]")
_ANNOTATION_START = re.compile(r"^[TRAENM#*][^\t]*\t")
_T_HEADER = re.compile(r"^(\S+) (\d+ \d+(?:;\d+ \d+)*)$")
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
SHOWN_PROBLEMS = 20


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


@dataclass
class Document:
    id: str
    text: str
    entities: list[Entity]


@dataclass(frozen=True)
class Problem:
    """An annotation that cannot be used as it is: where it is and why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class BratError(ValueError):
    """A corpus that cannot be read; the message lists every problem with file and line."""


@dataclass
class Corpus:
    """The documents of one folder, with the annotations that were skipped as invalid."""

    documents: list[Document]
    invalid: list[Problem] = field(default_factory=list)


def read_text(path: Path) -> str:
    """Read a UTF-8 file without newline translation; a clear error for any other encoding."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise BratError(
            f"{path}:{line}: not valid UTF-8 (byte {data[error.start]:#04x} at offset {error.start}). "
            "Convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8`, and check its offsets again."
        ) from None


def parse_ann(ann_text: str, text: str, path: str) -> tuple[list[Entity], list[Problem]]:
    """Parse the ``T`` lines of one ``.ann`` against its document text.

    Returns:
        The valid entities, and one :class:`Problem` per line that is malformed, points outside the text,
        or whose text differs from the document's slices.
    """
    entities: list[Entity] = []
    problems: list[Problem] = []
    for line_number, line in _logical_lines(ann_text.removeprefix("\ufeff")):
        if not line.strip() or _OTHER_LINE.match(line):
            continue
        entity, problem = _parse_t_line(line, text, line_number)
        if problem:
            problems.append(Problem(path, line_number, problem))
        elif entity:
            entities.append(entity)
    return entities, problems


def _logical_lines(ann_text: str) -> Iterable[tuple[int, str]]:
    """Physical lines joined where a ``T`` text field runs on over line breaks; yields (first line number, line).

    A text field shorter than its fragments takes the following physical lines, blank ones included, until it is
    long enough or a line starts a new annotation; the line breaks are kept as they are in the file.
    """
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(ann_text.split("\n"), start=1):
        if pending and not _ANNOTATION_START.match(raw) and _needs_more_text(pending[1]):
            pending = (pending[0], pending[1] + "\n" + raw)
            continue
        if pending:
            yield pending[0], pending[1].removesuffix("\r")
        pending = (number, raw)
    if pending:
        yield pending[0], pending[1].removesuffix("\r")


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


def _parse_t_line(line: str, text: str, line_number: int = 0) -> tuple[Entity | None, str | None]:
    parts = line.split("\t", 2)
    if not line.startswith("T") or len(parts) != 3:
        return None, (
            f"cannot read {line[:60]!r}: expected 'T<n><TAB>Type start end[;start end...]<TAB>text' "
            "(or an R/A/E/N/M/#/* line). Fix the line or delete it."
        )
    entity_id, header_text, ann_text = parts
    header = _T_HEADER.match(header_text)
    if not header:
        return None, (
            f"{entity_id}: cannot read type and offsets from {header_text!r}; expected 'Type start end' "
            "with fragments separated by ';'."
        )
    fragments = _fragments(header.group(2))
    for start, end in fragments:
        if not 0 <= start < end <= len(text):
            return None, (
                f"{entity_id}: fragment {start} {end} is empty or outside the text ({len(text)} characters). "
                "Was the .txt edited after annotation, or read with newline translation?"
            )
    slices = " ".join(text[start:end] for start, end in fragments)
    if _WHITESPACE.sub(" ", slices).strip() != _WHITESPACE.sub(" ", ann_text).strip():
        return None, (
            f"{entity_id}: the .ann says {ann_text.strip()[:60]!r} but the .txt has {slices[:60]!r} "
            f"at {header.group(2)}. "
            "Correct the offsets, or pass --skip_invalid to skip and count such entities."
        )
    return Entity(header.group(1), fragments, entity_id, slices, line_number), None


def read_corpus(folder: str | Path, skip_invalid: bool = False) -> Corpus:
    """Read every ``.txt``/``.ann`` pair below ``folder`` (recursively).

    Args:
        folder: the corpus folder.
        skip_invalid: skip invalid annotations and count them in ``Corpus.invalid`` instead of failing.

    Raises:
        BratError: a ``.txt`` without ``.ann`` or the reverse, a non-UTF-8 file, or (unless ``skip_invalid``)
            any invalid annotation; the message lists all of them with file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BratError(f"{folder} is not a folder; pass a folder of brat .txt/.ann files.")
    _check_pairs(folder)
    documents: list[Document] = []
    problems: list[Problem] = []
    for txt_path in sorted(folder.rglob("*.txt")):
        ann_path = txt_path.with_suffix(".ann")
        text = read_text(txt_path)
        entities, found = parse_ann(read_text(ann_path), text, str(ann_path))
        doc_id = txt_path.relative_to(folder).with_suffix("").as_posix()
        documents.append(Document(doc_id, text, entities))
        problems.extend(found)
    if problems and not skip_invalid:
        raise BratError(_problem_report(problems))
    return Corpus(documents, problems)


def _check_pairs(folder: Path) -> None:
    texts = {path.with_suffix("") for path in folder.rglob("*.txt")}
    annotations = {path.with_suffix("") for path in folder.rglob("*.ann")}
    unpaired = [f"{stem}.txt has no .ann" for stem in sorted(texts - annotations)]
    unpaired += [f"{stem}.ann has no .txt" for stem in sorted(annotations - texts)]
    if unpaired:
        raise BratError(
            f"{len(unpaired)} unpaired file(s) in {folder}:\n  "
            + "\n  ".join(unpaired)
            + "\nEvery report needs both files: create an empty .ann for a report without entities, "
            "or remove the stray file."
        )
    if not texts:
        raise BratError(f"{folder} holds no .txt/.ann pairs.")


def _problem_report(problems: Sequence[Problem]) -> str:
    shown = "\n  ".join(str(problem) for problem in problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    files = len({problem.path for problem in problems})
    return (
        f"{len(problems)} invalid annotation(s) in {files} file(s):\n  {shown}{more}\n"
        "Fix them, or pass --skip_invalid (skip_invalid=True) to skip and count them."
    )


def check_types(corpus: Corpus, types: Sequence[str], skip_invalid: bool = False) -> None:
    """Fail on entity types outside ``types``, or (``skip_invalid``) remove them and count them as invalid."""
    allowed = set(types)
    unknown = Counter(e.type for doc in corpus.documents for e in doc.entities if e.type not in allowed)
    if not unknown:
        return
    if not skip_invalid:
        listed = ", ".join(f"{name} ({count})" for name, count in unknown.most_common())
        raise BratError(
            f"The corpus has entity types outside the label set: {listed}. Pass --types auto to take the types "
            "from the corpus, list them in --types, or pass --skip_invalid to skip and count these entities."
        )
    for doc in corpus.documents:
        for entity in doc.entities:
            if entity.type not in allowed:
                corpus.invalid.append(Problem(doc.id, 0, f"{entity.id}: type {entity.type} not in the label set"))
        doc.entities = [e for e in doc.entities if e.type in allowed]


def write_ann(path: str | Path, text: str, entities: Iterable[Entity]) -> None:
    """Write entities as a brat ``.ann``; ids ``T1..Tn`` in order, text taken from the document.

    Line breaks inside an entity's text are written as spaces so every annotation stays on one line;
    :func:`parse_ann` compares text modulo whitespace, so the file reads back to the same entities.
    """
    lines = []
    for number, entity in enumerate(entities, start=1):
        offsets = ";".join(f"{start} {end}" for start, end in entity.fragments)
        surface = " ".join(text[start:end] for start, end in entity.fragments)
        lines.append(f"T{number}\t{entity.type} {offsets}\t{_LINE_BREAKS.sub(' ', surface)}\n")
    Path(path).write_text("".join(lines), encoding="utf-8", newline="")
