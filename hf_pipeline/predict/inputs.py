"""Reports to predict, read one at a time: a folder of ``.txt``, one ``.txt``, JSONL, Parquet, CSV, a dataset.

Every source yields :class:`Row` in a fixed order, so that a row's position decides which process predicts it and
which output shard holds it, run after run. Nothing holds every text: folders are walked one listing at a time,
JSONL is read line by line, Parquet, CSV, JSON tables, dataset folders and Hub datasets are read with ``datasets``
(memory-mapped, or streamed with ``streaming=True``) in batches.

Ids: a folder gives each report's path below it without ``.txt``; a JSONL line its ``id`` field, else its line
number (1-based); a dataset row its ``id_column``, else its row number (0-based). :func:`check_ids` refuses empty,
duplicate and (where ids name files) path-escaping ids before anything is predicted.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hf_dataset.brat import read_text
from hf_pipeline.hub import UnusableError, cached_snapshot, check_usable, looks_local, offline_variable
from hf_pipeline.words import invalid_text

TABLE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json"}  # read by these datasets builders
FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet", ".csv")
ID_LIMIT = 200  # bytes per path component: file systems allow 255 for the whole name, ".ann" and temp suffix included
BATCH = 512


class InputError(ValueError):
    """Input that cannot be predicted; the message says where and what to do."""


@dataclass(frozen=True)
class Row:
    """One report: its position in the input (0-based), its id, its text, and where it is (for messages)."""

    position: int
    id: str
    text: str
    where: str

    def __post_init__(self) -> None:
        problem = invalid_text(self.text)
        if problem:
            raise InputError(f"{self.where} (id {self.id!r}): the text has {problem}, then rerun to resume.")


@dataclass(frozen=True)
class RowId:
    position: int
    id: str
    where: str


class Source:
    """Reports in a fixed order; ``ids()`` is a cheaper pass that reads no text where it can."""

    description: str

    def ids(self) -> Iterator[RowId]:
        raise NotImplementedError

    def rows(self, wanted: Callable[[int], bool]) -> Iterator[Row]:
        """Rows whose position ``wanted`` accepts, in order."""
        raise NotImplementedError


class FolderSource(Source):
    """Every ``.txt`` file below a folder, in sorted path order, found by a walk that keeps one listing at a time."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.description = str(folder)
        if next(self._files(), None) is None:
            raise InputError(f"{folder}: no .txt file found below this folder; give a folder of reports (.txt).")

    def _files(self, folder: Path | None = None) -> Iterator[Path]:
        """Files named ``*.txt`` in the order of ``sorted(folder.rglob("*.txt"))``; a folder named x.txt is walked."""
        with os.scandir(folder or self.folder) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
        for entry in entries:
            if entry.is_dir():
                yield from self._files(Path(entry.path))
            elif entry.name.endswith(".txt") and entry.is_file():
                yield Path(entry.path)

    def _id(self, path: Path) -> str:
        return path.relative_to(self.folder).with_suffix("").as_posix()

    def ids(self) -> Iterator[RowId]:
        for position, path in enumerate(self._files()):
            yield RowId(position, self._id(path), str(path))

    def rows(self, wanted: Callable[[int], bool]) -> Iterator[Row]:
        for position, path in enumerate(self._files()):
            if wanted(position):
                yield Row(position, self._id(path), read_text(path), str(path))


class TextFileSource(Source):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = str(path)

    def ids(self) -> Iterator[RowId]:
        yield RowId(0, self.path.stem, str(self.path))

    def rows(self, wanted: Callable[[int], bool]) -> Iterator[Row]:
        if wanted(0):
            yield Row(0, self.path.stem, read_text(self.path), str(self.path))


class JsonlSource(Source):
    """One JSON object per line with a ``text`` field; read line by line (only ``\\n`` ends a line)."""

    def __init__(self, path: Path, text_column: str = "text", id_column: str = "id") -> None:
        self.path = path
        self.description = str(path)
        self.text_column = text_column
        self.id_column = id_column

    def _records(self) -> Iterator[tuple[int, int, dict[str, Any]]]:
        position = 0
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                line = _decode(raw, f"{self.path}:{number}")
                if not line.strip():
                    continue
                yield position, number, self._parse(line, number)
                position += 1

    def _parse(self, line: str, number: int) -> dict[str, Any]:
        where = f"{self.path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: expected a JSON object with a {self.text_column!r} field ({error}).") from None
        if not isinstance(record, dict) or self.text_column not in record:
            raise InputError(f"{where}: expected a JSON object with a {self.text_column!r} field.")
        if not isinstance(record[self.text_column], str):
            found = type(record[self.text_column]).__name__
            raise InputError(f"{where}: {self.text_column!r} must be a string, got {found}.")
        return record

    def _id(self, record: dict[str, Any], number: int) -> str:
        return id_text(record.get(self.id_column, number), f"{self.path}:{number}")

    def ids(self) -> Iterator[RowId]:
        for position, number, record in self._records():
            yield RowId(position, self._id(record, number), f"{self.path}:{number}")

    def rows(self, wanted: Callable[[int], bool]) -> Iterator[Row]:
        for position, number, record in self._records():
            if wanted(position):
                where = f"{self.path}:{number}"
                yield Row(position, self._id(record, number), record[self.text_column], where)


class DatasetSource(Source):
    """A ``datasets`` split (``Dataset`` memory-mapped or ``IterableDataset`` streamed), read in batches."""

    def __init__(self, dataset: Any, description: str, text_column: str, id_column: str, explicit_id: bool) -> None:
        columns = dataset.column_names
        if columns is not None and text_column not in columns:
            raise InputError(
                f"{description} has no column {text_column!r} (columns: {', '.join(columns)}); "
                "name the one holding the reports with --text_column."
            )
        if columns is not None and explicit_id and id_column not in columns:
            raise InputError(
                f"{description} has no column {id_column!r} (columns: {', '.join(columns)}); "
                "name the id column with --id_column, or leave it out to use row numbers."
            )
        self.dataset = dataset
        self.description = description
        self.text_column = text_column
        self.id_column = id_column if columns is None or id_column in columns else None

    def _batches(self, columns: list[str]) -> Iterator[tuple[int, dict[str, list[Any]]]]:
        position = 0
        for batch in self.dataset.select_columns(columns).iter(batch_size=BATCH):
            yield position, batch
            position += len(batch[columns[0]])

    def _where(self, position: int) -> str:
        return f"{self.description} row {position}"

    def ids(self) -> Iterator[RowId]:
        if self.id_column is None and hasattr(self.dataset, "__len__"):  # memory-mapped: rows are numbered
            yield from (RowId(position, str(position), self._where(position)) for position in range(len(self.dataset)))
            return
        column = self.id_column or self.text_column
        for start, batch in self._batches([column]):
            for position, value in enumerate(batch[column], start=start):
                where = self._where(position)
                yield RowId(position, id_text(value, where) if self.id_column else str(position), where)

    def rows(self, wanted: Callable[[int], bool]) -> Iterator[Row]:
        columns = [self.text_column] + ([self.id_column] if self.id_column else [])
        for start, batch in self._batches(columns):
            for offset, text in enumerate(batch[self.text_column]):
                position = start + offset
                if not wanted(position):
                    continue
                where = self._where(position)
                if not isinstance(text, str):
                    found = "empty (null)" if text is None else f"a {type(text).__name__}"
                    raise InputError(f"{where}: {self.text_column!r} is {found}; every report must be a string.")
                doc_id = id_text(batch[self.id_column][offset], where) if self.id_column else str(position)
                yield Row(position, doc_id, text, where)


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{where}: not valid UTF-8 (byte {raw[error.start]:#04x}); convert the file to UTF-8."
        ) from None


def id_text(value: Any, where: str) -> str:
    """A row's id as a string: str and int ids are kept, anything else (None, floats, lists) is refused."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        found = "null" if value is None else f"a {type(value).__name__}"
        raise InputError(f"{where}: the id is {found}; ids must be strings or integers.")
    return str(value)


def open_input(
    name: str,
    split: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    streaming: bool = False,
) -> Source:
    """The source behind ``--input``: a local folder or file, or a Hub dataset id.

    Raises:
        InputError: the input does not exist, is empty, or lacks the named columns or split.
    """
    path = Path(name)
    if path.is_dir():
        if _is_table_folder(path):
            return _dataset_source(str(path), {}, split, text_column, id_column, streaming)
        return FolderSource(path)
    if path.is_file():
        if path.suffix == ".jsonl":
            return JsonlSource(path, text_column, id_column or "id")
        if path.suffix in TABLE_BUILDERS:
            builder = TABLE_BUILDERS[path.suffix]
            return _dataset_source(builder, {"data_files": str(path)}, split, text_column, id_column, streaming)
        return TextFileSource(path)
    if os.path.lexists(name) or looks_local(name) or name.endswith(FILE_SUFFIXES):
        raise InputError(
            f"{name} does not exist; give a folder of .txt, a .txt, .jsonl or .parquet file, "
            "a dataset folder or a Hub dataset id."
        )
    return _hub_source(name, split, text_column, id_column, streaming)


def _is_table_folder(folder: Path) -> bool:
    """A Parquet folder or a dataset folder (``README.md`` + ``data/*.parquet``): Parquet and no report ``.txt``."""
    return any(folder.rglob("*.parquet")) and not any(path.is_file() for path in folder.rglob("*.txt"))


def _hub_source(name: str, split: str | None, text_column: str, id_column: str | None, streaming: bool) -> Source:
    try:
        check_usable(name, "dataset", "--input", advice="or give a local folder or file as --input.")
    except UnusableError as error:
        raise InputError(str(error)) from None
    # Offline, load_dataset reads only its own cache; a snapshot in the Hub cache is read as the folder it is.
    snapshot = cached_snapshot(name, "dataset") if offline_variable() else None
    return _dataset_source(snapshot or name, {}, split, text_column, id_column, streaming)


def _dataset_source(
    path: str, options: dict[str, Any], split: str | None, text_column: str, id_column: str | None, streaming: bool
) -> Source:
    import datasets

    described = options.get("data_files", path)
    try:
        loaded = datasets.load_dataset(path, streaming=streaming, **options)
    except (FileNotFoundError, ValueError, OSError, datasets.exceptions.DatasetsError) as error:
        raise InputError(f"{described}: cannot be read as a dataset ({first_line(error)}).") from None
    names = list(loaded)
    if split is None and len(names) > 1:
        raise InputError(f"{described} has the splits {', '.join(names)}; choose one with --split.")
    if split is not None and split not in names:
        raise InputError(f"{described} has no split {split!r}; choose one of: {', '.join(names)}.")
    chosen = split or names[0]
    description = f"{described} [{chosen}]"
    return DatasetSource(loaded[chosen], description, text_column, id_column or "id", id_column is not None)


def first_line(error: BaseException) -> str:
    """The first line of an error's message (or its type's name): for one-line messages."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def path_problem(doc_id: str) -> str | None:
    """Why ``doc_id`` cannot name a file below the output folder (``<id>.ann``), or ``None``.

    Accepted: relative POSIX paths whose parts are not empty, ``.`` or ``..``, with no ``\\``, ``:`` or control
    characters and at most ``ID_LIMIT`` bytes each, so ``output / f"{id}.ann"`` always stays inside the output.
    """
    if any(ord(char) < 32 or ord(char) == 127 for char in doc_id):
        return "contains a control character (NUL, newline, ...)"
    if "\\" in doc_id or ":" in doc_id:
        return "contains '\\' or ':'"
    if doc_id.startswith("/"):
        return "is an absolute path"
    parts = PurePosixPath(doc_id).parts if doc_id else ()
    if any(part in (".", "..") for part in doc_id.split("/")) or "//" in doc_id or doc_id.endswith("/"):
        return "has an empty, '.' or '..' path part"
    if any(len(part.encode("utf-8")) > ID_LIMIT for part in parts):
        return f"has a path part longer than {ID_LIMIT} bytes"
    return None


def check_ids(source: Source, name_files: bool, each: Callable[[RowId], None] | None = None) -> int:
    """Refuse empty ids, NUL, duplicates and, when ids name files, ids that could leave the output folder.

    Duplicates are found with 8 bytes per row (hashes; a second pass looks only at colliding hashes), so the check
    stays small on archives of millions of reports. ``each`` sees every row of the first pass. Returns the number
    of rows.

    Raises:
        InputError: naming the rows at fault.
    """
    hashes = array("q")
    for row in source.ids():
        problem = "is empty" if not row.id else path_problem(row.id) if name_files else None
        if problem is None and "\x00" in row.id:
            problem = "contains NUL"
        if problem:
            why = "ids name the output files, so fix it" if name_files else "fix it"
            raise InputError(
                f"{row.where}: the id {row.id!r} {problem}; {why} (or leave ids out to number the reports)."
            )
        hashes.append(hash(row.id))
        if each is not None:
            each(row)
    suspects = _duplicate_hashes(hashes)
    if suspects:
        _refuse_duplicates(suspects, source.ids())
    return len(hashes)


def _duplicate_hashes(hashes: array) -> set[int]:
    import numpy as np

    values = np.sort(np.frombuffer(hashes, dtype=np.int64))
    return set(values[1:][values[1:] == values[:-1]].tolist())


def _refuse_duplicates(suspects: set[int], ids: Iterator[RowId], examples: int = 5) -> None:
    seen: dict[str, list[str]] = {}
    for row in ids:
        if hash(row.id) in suspects:
            seen.setdefault(row.id, []).append(row.where)
    repeated = [(doc_id, places) for doc_id, places in seen.items() if len(places) > 1]
    if not repeated:
        return
    lines = [f"id {doc_id!r} at {' and '.join(places[:3])}" for doc_id, places in repeated[:examples]]
    more = f" (and {len(repeated) - examples} more)" if len(repeated) > examples else ""
    raise InputError(
        f"{len(repeated)} duplicate id(s): {'; '.join(lines)}{more}. Each report needs its own id (an explicit id "
        "must not equal another line's number); make them unique or leave ids out to number the reports."
    )
