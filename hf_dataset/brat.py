"""Read brat standoff corpora (``.txt`` + ``.ann`` folders), with validation that names file and line.

Reading gives one :class:`Document` per ``.txt``/``.ann`` pair::

    Document(id="sub/report_01",              # path relative to the corpus folder, no extension
             text="...",                      # the .txt exactly as stored (newline="": CRLF keeps its \\r)
             entities=[Entity(id="T3", type="Finding",
                              fragments=((25, 30), (10, 20)),   # as listed in the .ann, end-exclusive
                              text="text of 25:30 text of 10:20"), ...])

A discontinuous entity may list its fragments in any order; its text field joins them in the listed order.
``fragments`` keeps that order; ``sorted_fragments``, ``start`` and ``end`` (the hull) and equality use the
sorted fragments, so two entities with the same type and the same characters are equal.

The ``.ann`` lines themselves are read and written by :mod:`hf_dataset.ann`. A UTF-8 byte order mark at the start
of a ``.txt`` is kept as character 0, as brat itself counts it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hf_dataset.ann import Problem, parse_ann_table
from hf_dataset.entities import Entity, EntityTable

__all__ = [
    "BratError",
    "Corpus",
    "Document",
    "Source",
    "check_problems",
    "link_outside",
    "parse_ann_table",
    "read_corpus",
    "read_text",
    "scan_corpus",
]
SHOWN_PROBLEMS = 20


@dataclass
class Document:
    """One report; ``path`` is its ``.ann`` file (empty when it was not read from a folder).

    ``entities`` is a list, or, as read from a folder, an :class:`EntityTable` (a sequence of the same entities).
    """

    id: str
    text: str
    entities: Sequence[Entity]
    path: str = ""


class BratError(ValueError):
    """A corpus that cannot be read; the message lists every problem with file and line."""


@dataclass
class Corpus:
    """The documents of one folder, the annotations that were skipped as invalid, and unreadable files.

    ``invalid`` annotations may be skipped (``skip_invalid``); ``errors`` (a ``.txt`` without ``.ann`` or the
    reverse, a file that is not UTF-8) always stop a build. ``sources`` says where each document was read from
    (read by :func:`scan_corpus` with ``keep=False``, the corpus keeps only these) and ``type_names`` the entity
    types of its documents.
    """

    documents: list[Document]
    invalid: list[Problem] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    type_names: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Source:
    """Where one report is read from, and the size and modification time of its two files when first read."""

    id: str
    txt: Path
    ann: Path
    stamp: tuple[int, ...]

    @classmethod
    def of(cls, txt: Path, folder: Path) -> Source:
        ann = txt.with_suffix(".ann")
        return cls(txt.relative_to(folder).with_suffix("").as_posix(), txt, ann, _stamp(txt, ann))

    def read(self, types: Collection[str] | None = None) -> tuple[Document, list[Problem]]:
        """The document and its invalid annotations; with ``types``, entities of other types are invalid too.

        Raises:
            BratError: a file is not UTF-8.
        """
        text, ann_text = read_text(self.txt), read_text(self.ann)
        entities, problems = parse_ann_table(ann_text, text, str(self.ann))
        if types is not None:
            entities, outside = _keep_types(entities, types, str(self.ann))
            problems += outside
        return Document(self.id, text, entities, str(self.ann)), problems

    def read_again(self, types: Collection[str] | None = None) -> Document:
        """The document as :meth:`read` gave it, for a second pass over a corpus (its problems were counted in the
        first).

        Raises:
            BratError: a file changed since it was first read.
        """
        if _stamp(self.txt, self.ann) != self.stamp:
            raise BratError(f"{self.txt} or {self.ann} changed while the dataset was built from it; build again.")
        return self.read(types)[0]


def _stamp(*paths: Path) -> tuple[int, ...]:
    stats = [path.stat() for path in paths]
    return tuple(value for stat in stats for value in (stat.st_size, stat.st_mtime_ns))


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


def read_corpus(folder: str | Path, skip_invalid: bool = False) -> Corpus:
    """Read every ``.txt``/``.ann`` pair below ``folder`` (recursively).

    Args:
        folder: the corpus folder.
        skip_invalid: skip invalid annotations and list them in ``Corpus.invalid`` instead of failing.

    Raises:
        BratError: a ``.txt`` without ``.ann`` or the reverse, a non-UTF-8 file, or (unless ``skip_invalid``)
            any invalid annotation; the message lists all of them with file and line.
    """
    corpus = scan_corpus(folder)
    check_problems({str(folder): corpus}, skip_invalid)
    return corpus


def scan_corpus(folder: str | Path, types: Collection[str] | None = None, keep: bool = True) -> Corpus:
    """Read what can be read below ``folder``; every problem is collected in the corpus, none is raised.

    Args:
        folder: the corpus folder.
        types: the label set; entities of other types are moved to ``Corpus.invalid`` (kind ``"type"``).
        keep: keep the documents; with ``False`` the corpus keeps each report's :class:`Source` only (read it again
            with :meth:`Source.read_again`), so that a corpus of many reports is never held in memory whole.

    Raises:
        BratError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BratError(f"{folder} is not a folder; pass a folder of brat .txt/.ann files.")
    texts = sorted(path for path in folder.rglob("*.txt") if path.is_file())
    corpus = Corpus([], errors=_unpaired(folder, texts))
    for txt_path in texts:
        ann_path = txt_path.with_suffix(".ann")
        if not ann_path.is_file():
            continue
        outside = [(path, target) for path in (txt_path, ann_path) if (target := link_outside(path, folder))]
        if outside:
            corpus.errors += [
                f"{path} is a link to {target}, outside {folder}: the dataset would publish that file as a report. "
                "Copy the report into the corpus folder, or delete the link."
                for path, target in outside
            ]
            continue
        source = Source.of(txt_path, folder)
        try:
            document, found = source.read(types)
        except BratError as error:
            corpus.errors.append(str(error))
            continue
        corpus.type_names.update(document.entities.type_names)
        corpus.sources.append(source)
        if keep:
            corpus.documents.append(document)
        corpus.invalid.extend(found)
    if not texts:
        corpus.errors.append(f"{folder} holds no .txt/.ann pairs.")
    return corpus


def link_outside(path: Path, folder: Path) -> Path | None:
    """Where ``path`` really is when a symbolic link (``path`` itself or a folder on the way) leads out of
    ``folder``; ``None`` when it stays inside."""
    target = path.resolve()
    return None if target.is_relative_to(folder.resolve()) else target


def _unpaired(folder: Path, texts: Sequence[Path]) -> list[str]:
    stems = {path.with_suffix("") for path in texts}
    annotations = {path.with_suffix("") for path in folder.rglob("*.ann") if path.is_file()}
    unpaired = [f"{stem}.txt has no .ann" for stem in sorted(stems - annotations)]
    unpaired += [f"{stem}.ann has no .txt" for stem in sorted(annotations - stems)]
    if unpaired:
        unpaired[-1] += (
            "\nEvery report needs both files: create an empty .ann for a report without entities, "
            "or remove the stray file."
        )
    return unpaired


def check_problems(corpora: Mapping[str, Corpus], skip_invalid: bool = False) -> None:
    """Raise one :class:`BratError` that lists every problem of every corpus (split), or return.

    Unreadable files always fail; invalid annotations fail unless ``skip_invalid``, when they stay listed in
    ``Corpus.invalid`` to be counted and itemised.
    """
    sections = [_problem_section(name, corpus, skip_invalid) for name, corpus in corpora.items()]
    types = Counter(p.entity_type for c in corpora.values() for p in c.invalid if p.kind == "type")
    if types and not skip_invalid:
        listed = ", ".join(f"{name} ({count})" for name, count in types.most_common())
        sections.append(
            f"{types.total()} entities have types outside the label set: {listed}. Pass --types auto to take "
            "the types from the corpus, or list them in --types."
        )
    sections = [section for section in sections if section]
    if not sections:
        return
    advice = "Fix them"
    if not any(corpus.errors for corpus in corpora.values()):
        advice += (
            ", or pass --skip_invalid (skip_invalid=True) to skip them: every skipped annotation is then listed"
            " with file, line and id in statistics.json"
        )
    raise BratError("\n".join(sections) + f"\n{advice}.")


def _problem_section(name: str, corpus: Corpus, skip_invalid: bool) -> str:
    lines = []
    if corpus.errors:
        lines.append(f"{name}: {len(corpus.errors)} file problem(s):\n  " + "\n  ".join(corpus.errors))
    annotations = [p for p in corpus.invalid if p.kind == "annotation"]
    if annotations and not skip_invalid:
        lines.append(f"{name}: {_problem_list(annotations)}")
    return "\n".join(lines)


def _problem_list(problems: Sequence[Problem]) -> str:
    shown = "\n  ".join(str(problem) for problem in problems[:SHOWN_PROBLEMS])
    more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
    files = len({problem.path for problem in problems})
    return f"{len(problems)} invalid annotation(s) in {files} file(s):\n  {shown}{more}"


def _keep_types(table: EntityTable, types: Collection[str], path: str) -> tuple[EntityTable, list[Problem]]:
    """The entities whose type is in ``types``, and the others as problems (kind ``"type"``)."""
    allowed = set(types)
    if set(table.type_names) <= allowed:
        return table, []
    kept = [table.type(i) in allowed for i in range(len(table))]
    problems = [
        Problem(path, table.lines[i], f"type {name} is not in the label set", table.id(i), "type", name)
        for i, name in ((i, table.type(i)) for i, keep in enumerate(kept) if not keep)
    ]
    return table.select(i for i, keep in enumerate(kept) if keep), problems
