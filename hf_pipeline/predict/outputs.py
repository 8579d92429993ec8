"""Where predictions go: brat ``.ann`` files, one JSONL file, Parquet shards or spaCy ``DocBin`` files; each
resumable and atomic.

Every file is written under a temporary name and renamed, so a report is either fully written or absent: a rerun
never takes a half-written file for a finished one. ``manifest.json`` records the settings of the run (a rerun
with other settings is refused, so no output mixes two models or two chunkings) and, once every process is
done, the counts.

Parquet: report ``i`` of the input belongs to chunk ``i // chunk_size``, written as ``data/chunk-NNNNNN.parquet``
by the one process that owns the chunk; the shard exists only when the whole chunk is done, so a rerun (with any
number of processes) redoes exactly the missing chunks. Columns (declared, see :func:`features`): ``id``,
``text`` (unless ``no_text``) and ``entities``, the pipeline's dicts.

spaCy: the same chunks, as ``data/chunk-NNNNNN.spacy`` ``DocBin`` files (``store_user_data=True``): one ``Doc`` per
report (``spacy.blank("es")``'s tokens), its entities in ``doc.spans["radiology_ner"]`` as the ``radiology_ner``
spaCy component writes them (:func:`hf_pipeline.spacy_component.set_entities`), its id in ``doc._.report_id``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hf_dataset.ann import write_ann
from hf_dataset.entities import Entity
from hf_pipeline.predict.inputs import Row, first_line

MANIFEST = "manifest.json"
JSONL_OUTPUT = "predictions.jsonl"
SHARD_FOLDER = "data"
SHARD_NAME = "chunk-{:06d}.parquet"
DOCBIN_NAME = "chunk-{:06d}.spacy"
SPACY_LANGUAGE = "es"  # the tokenizer of the Docs in DocBin files
TEMP_SUFFIX = ".tmp"
# Settings that decide what is predicted or where it goes: a rerun that differs in one of them is refused.
SETTINGS = (
    "format", "model", "model_version", "revision", "quantize", "max_length", "stride", "input", "split",
    "text_column", "id_column", "chunk_size", "no_text",
)  # fmt: skip
UNKNOWN_WHEN_MISSING = ("model_version",)  # not recorded (an older manifest, a Hub model not yet cached): not compared
LABELS = {"model_version": "the --model files (digest) or Hub commit"}


class OutputError(ValueError):
    """An output folder this run cannot use; the message says what to do."""


def features(no_text: bool = False) -> Any:
    """The ``datasets.Features`` of a prediction shard (declared, so that every shard has the same schema)."""
    from datasets import Features, List, Value

    entity = {
        "entity_group": Value("string"),
        "score": Value("float32"),
        "word": Value("string"),
        "start": Value("int32"),
        "end": Value("int32"),
        "layer": Value("int8"),
    }
    columns = {"id": Value("string")} | ({} if no_text else {"text": Value("string")}) | {"entities": List(entity)}
    return Features(columns)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)`` next to ``path``, then rename it to ``path``; nothing is left on failure."""
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, lambda temp: temp.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", "utf-8"))


def check_output(folder: Path) -> None:
    """Refuse, before anything is written, an output that is a file or sits in a folder this user cannot write."""
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"--output {folder} is a file; give a folder (it is created if missing).")
    existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not existing.is_dir():
        raise OutputError(f"--output {folder}: {existing} is a file, so no folder can be created there.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"--output {folder}: {existing} is read-only for this user; choose a writable folder.")


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise OutputError(f"{path} is not valid JSON; delete it or rerun with --overwrite.") from None


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume an output that an earlier run wrote with other settings (another model or version of it,
    quantization, window, stride, chunking...): its predictions would be mixed with this run's."""
    previous = (read_manifest(folder) or {}).get("settings")
    if not previous:
        return
    changed = []
    for key in SETTINGS:
        if key in UNKNOWN_WHEN_MISSING and (previous.get(key) is None or settings.get(key) is None):
            continue
        if previous.get(key) != settings.get(key):
            label = LABELS.get(key, f"--{key}")
            changed.append(f"{label} was {_shown(previous.get(key))}, now {_shown(settings.get(key))}")
    if changed:
        raise OutputError(
            f"{folder} holds predictions made with other settings: {'; '.join(changed)}. Rerun with the same "
            "settings to resume, or with --overwrite to start again (or choose another --output)."
        )


def _shown(value: Any) -> str:
    if value is None or value is False:
        return "not given"
    return "given" if value is True else repr(value)


class Writer:
    """One output format. ``done`` answers from what is on disk (read-only); ``prepare`` (first process only)
    creates and cleans the folder; ``add`` takes each predicted report in input order; ``close`` ends a completed
    run of this process; ``finish`` (first process, all done) gives the counts for the manifest."""

    def __init__(self, folder: Path, overwrite: bool, no_text: bool) -> None:
        self.folder = folder
        self.overwrite = overwrite
        self.no_text = no_text

    def done(self, position: int, doc_id: str) -> bool:
        raise NotImplementedError

    def check_done(self, total: int) -> list[tuple[int, str]]:
        """After the ids are counted (``total``): the chunks taken for done that cannot be trusted, as (chunk,
        ``"<shard> (<problem>)"``); they are no longer ``done``. Only shard formats have any."""
        return []

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, row: Row, entities: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Called once this process has predicted all its reports."""

    def finish(self, total: int) -> dict[str, Any]:
        return {"reports": total}


class BratWriter(Writer):
    """``<id>.ann`` per report (ids are checked by ``path_problem`` first, so they stay inside the folder)."""

    def _path(self, doc_id: str) -> Path:
        return self.folder / f"{doc_id}.ann"

    def done(self, position: int, doc_id: str) -> bool:
        return not self.overwrite and self._path(doc_id).is_file()

    def add(self, row: Row, entities: list[dict[str, Any]]) -> None:
        path = self._path(row.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        spans = [Entity.from_prediction(e) for e in entities]
        write_atomic(path, lambda temp: write_ann(temp, row.text, spans))


class JsonlWriter(Writer):
    """``predictions.jsonl``, one complete line per report, appended in input order.

    While a run is going on the file is ``predictions.jsonl.partial``; it is renamed when the run is complete. A
    line cut short by a crash or a full disk is not counted as done, and is removed before appending.
    """

    def __init__(self, folder: Path, overwrite: bool, no_text: bool) -> None:
        super().__init__(folder, overwrite, no_text)
        self.final = folder / JSONL_OUTPUT
        self.partial = folder / (JSONL_OUTPUT + ".partial")
        self.finished, self.complete_bytes = (set(), 0) if overwrite else self._read_done()
        self.stream: Any = None

    def _current(self) -> Path:
        return self.partial if self.partial.exists() else self.final

    def _read_done(self) -> tuple[set[str], int]:
        """Ids of the complete lines, and the byte length of those lines."""
        path, finished, complete = self._current(), set(), 0
        if not path.exists():
            return finished, 0
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, start=1):
                record = _complete_record(raw)
                if record is None:
                    if lines.read(1):  # only the last line may be cut short
                        raise OutputError(f"{path}:{number} is not a complete prediction; rerun with --overwrite.")
                    break
                finished.add(record["id"])
                complete += len(raw)
        return finished, complete

    def done(self, position: int, doc_id: str) -> bool:
        return doc_id in self.finished

    def prepare(self) -> None:
        super().prepare()
        if self.overwrite:
            self.final.unlink(missing_ok=True)
            self.partial.unlink(missing_ok=True)
        elif self.final.exists() and not self.partial.exists():
            os.replace(self.final, self.partial)
        with self.partial.open("ab") as stream:
            stream.truncate(self.complete_bytes)

    def add(self, row: Row, entities: list[dict[str, Any]]) -> None:
        if self.stream is None:
            self.stream = self.partial.open("a", encoding="utf-8", newline="")
        record = {"id": row.id} | ({} if self.no_text else {"text": row.text}) | {"entities": entities}
        self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def finish(self, total: int) -> dict[str, Any]:
        if self.partial.exists():
            os.replace(self.partial, self.final)
        return {"reports": total}


def _complete_record(raw: bytes) -> dict[str, Any] | None:
    if not raw.endswith(b"\n"):
        return None
    try:
        record = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("id"), str) else None


class ChunkWriter(Writer):
    """One shard per chunk of ``chunk_size`` input reports, written when the chunk is complete (``data/chunk-NNNNNN``
    plus the format's suffix). A subclass says what it keeps of a report until its chunk is written (``_item``), how
    a shard is written (``_write``), checked (``_rows``: its number of reports, read cheaply; raises on a damaged
    file) and counted (``_count``).

    A shard on disk is trusted only once checked (:meth:`check_done`): readable, with as many reports as its chunk
    has. One cut short (a full disk, a broken copy) or from another input is predicted again, and the run says so.
    """

    shard_name = SHARD_NAME

    def __init__(self, folder: Path, overwrite: bool, no_text: bool, chunk_size: int) -> None:
        super().__init__(folder, overwrite, no_text)
        self.chunk_size = chunk_size
        self.shards = folder / SHARD_FOLDER
        self.existing = set() if overwrite else {int(path.stem.split("-")[1]) for path in self._shard_paths()}
        self.damaged: list[Path] = []
        self.chunk: int | None = None
        self.items: list[Any] = []

    def _shard_paths(self) -> list[Path]:
        return sorted(self.shards.glob(self.shard_name.replace("{:06d}", "[0-9]*")))

    def _path(self, chunk: int) -> Path:
        return self.shards / self.shard_name.format(chunk)

    def done(self, position: int, doc_id: str = "") -> bool:
        return position // self.chunk_size in self.existing

    def check_done(self, total: int) -> list[tuple[int, str]]:
        damaged = []
        for chunk in sorted(self.existing):
            expected = min(self.chunk_size, total - chunk * self.chunk_size)
            if expected <= 0:
                continue  # beyond the input: finish() refuses the output
            name = self._path(chunk).name
            try:
                rows = self._rows(self._path(chunk))
            except (OSError, ValueError, zlib.error) as error:  # pyarrow's ArrowInvalid is a ValueError
                damaged.append((chunk, f"{name} (unreadable: {first_line(error)})"))
                continue
            if rows != expected:
                damaged.append((chunk, f"{name} ({rows} report(s) where its chunk has {expected})"))
        self.existing.difference_update(chunk for chunk, _ in damaged)
        self.damaged = [self._path(chunk) for chunk, _ in damaged]
        return damaged

    def prepare(self) -> None:
        super().prepare()
        if self.overwrite:
            for path in self._shard_paths():
                path.unlink()
        for path in self.damaged:
            path.unlink(missing_ok=True)  # predicted again by this run; until then, not mistaken for a result
        self.shards.mkdir(exist_ok=True)
        for leftover in self.shards.glob(f"*{TEMP_SUFFIX}"):  # from a run that was killed while writing
            leftover.unlink()

    def add(self, row: Row, entities: list[dict[str, Any]]) -> None:
        chunk = row.position // self.chunk_size
        if chunk != self.chunk:
            self._flush()
            self.chunk, self.items = chunk, []
        self.items.append(self._item(row, entities))

    def _flush(self) -> None:
        if self.chunk is None:
            return
        items = self.items
        write_atomic(self._path(self.chunk), lambda temp: self._write(temp, items))
        self.chunk, self.items = None, []

    def _item(self, row: Row, entities: list[dict[str, Any]]) -> Any:
        raise NotImplementedError

    def _write(self, path: Path, items: list[Any]) -> None:
        raise NotImplementedError

    def _rows(self, path: Path) -> int:
        """The number of reports of a shard, read cheaply; raises ``OSError`` or ``ValueError`` if it is damaged."""
        raise NotImplementedError

    def _count(self, path: Path) -> tuple[int, int]:
        """(reports, entities) of a shard."""
        raise NotImplementedError

    def close(self) -> None:
        self._flush()

    def finish(self, total: int) -> dict[str, Any]:
        paths = self._shard_paths()
        counts = [self._checked_count(path) for path in paths]
        reports, entities = sum(c[0] for c in counts), sum(c[1] for c in counts)
        expected = -(-total // self.chunk_size)
        if reports != total or len(paths) != expected:
            raise OutputError(
                f"{self.shards} holds {reports} report(s) in {len(paths)} shard(s), expected {total} in {expected}; "
                "rerun to predict the missing chunks."
            )
        return {
            "reports": reports,
            "entities": entities,
            "shards": [p.relative_to(self.folder).as_posix() for p in paths],
        }

    def _checked_count(self, path: Path) -> tuple[int, int]:
        """:meth:`_count`, or (for a shard damaged beyond its footer) remove it and say to rerun."""
        try:
            return self._count(path)
        except (OSError, ValueError, zlib.error) as error:
            path.unlink(missing_ok=True)
            raise OutputError(
                f"{path} is damaged ({first_line(error)}); it was removed: rerun to predict its chunk again."
            ) from None


class ParquetWriter(ChunkWriter):
    """Parquet shards with the declared :func:`features`."""

    def __init__(self, folder: Path, overwrite: bool, no_text: bool, chunk_size: int) -> None:
        super().__init__(folder, overwrite, no_text, chunk_size)
        self.schema = features(no_text).arrow_schema

    def _item(self, row: Row, entities: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": row.id} | ({} if self.no_text else {"text": row.text}) | {"entities": entities}

    def _write(self, path: Path, items: list[dict[str, Any]]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(items, schema=self.schema), path)

    def _count(self, path: Path) -> tuple[int, int]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        entities = pq.read_table(path, columns=["entities"])["entities"]
        return pq.ParquetFile(path).metadata.num_rows, pc.sum(pc.list_value_length(entities)).as_py() or 0

    def _rows(self, path: Path) -> int:
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows  # the footer: a file cut short has none


class DocBinWriter(ChunkWriter):
    """spaCy ``DocBin`` shards: a ``Doc`` per report with its entities in ``doc.spans`` (see the module docstring)."""

    shard_name = DOCBIN_NAME

    def __init__(self, folder: Path, overwrite: bool, no_text: bool, chunk_size: int) -> None:
        import spacy  # run.py checked that it is installed

        from hf_pipeline.spacy_component import set_entities

        super().__init__(folder, overwrite, no_text, chunk_size)
        self.nlp = spacy.blank(SPACY_LANGUAGE)
        self.set_entities = set_entities

    def _item(self, row: Row, entities: list[dict[str, Any]]) -> Any:
        doc = self.nlp.make_doc(row.text)
        self.set_entities(doc, entities)
        doc._.report_id = row.id
        return doc

    def _write(self, path: Path, items: list[Any]) -> None:
        from spacy.tokens import DocBin

        DocBin(store_user_data=True, docs=items).to_disk(path)

    def _count(self, path: Path) -> tuple[int, int]:
        from spacy.tokens import DocBin

        from hf_pipeline.spacy_component import SPANS_KEY

        docs = list(DocBin().from_disk(path).get_docs(self.nlp.vocab))
        return len(docs), sum(len(doc.spans[SPANS_KEY]) for doc in docs)

    def _rows(self, path: Path) -> int:
        from spacy.tokens import DocBin

        return len(DocBin().from_disk(path))  # decompressed and unpacked: a file cut short fails here


def make_writer(fmt: str, folder: Path, overwrite: bool, no_text: bool, chunk_size: int) -> Writer:
    if fmt == "brat":
        return BratWriter(folder, overwrite, no_text)
    if fmt == "jsonl":
        return JsonlWriter(folder, overwrite, no_text)
    if fmt == "parquet":
        return ParquetWriter(folder, overwrite, no_text, chunk_size)
    if fmt == "spacy":
        return DocBinWriter(folder, overwrite, no_text, chunk_size)
    raise ValueError(f"Unknown format {fmt!r}: choose brat, jsonl, parquet or spacy.")


def iter_shard_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """Every predicted row of a Parquet output, in input order (for checks and tests)."""
    import pyarrow.parquet as pq

    for path in sorted((folder / SHARD_FOLDER).glob("*.parquet")):
        yield from pq.read_table(path).to_pylist()


def iter_docbin_docs(folder: Path, vocab: Any) -> Iterator[Any]:
    """Every ``Doc`` of a spaCy output, in input order, read with ``vocab`` (for checks and tests)."""
    from spacy.tokens import DocBin

    for path in sorted((folder / SHARD_FOLDER).glob("*.spacy")):
        yield from DocBin().from_disk(path).get_docs(vocab)
