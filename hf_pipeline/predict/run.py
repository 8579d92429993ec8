"""Predict reports with a bundle: a folder, a file, Parquet, a dataset; one process or many; resumable.

    python -m hf_pipeline.predict --model BUNDLE --input INPUT --output DIR
                                  [--format brat|jsonl|parquet|spacy] [--split S] [--text_column text] [--id_column id]
                                  [--no_text] [--chunk_size 1000] [--streaming] [--batch_size 32] [--quantize int8]
                                  [--max_length N] [--stride N] [--overwrite]
    accelerate launch --multi_gpu --num_processes N -m hf_pipeline.predict ...   # or torchrun --nproc_per_node N

INPUT: a folder (every ``.txt`` below it), one ``.txt``, a ``.jsonl`` file (a ``text`` field per line), a Parquet
file or folder, a dataset folder written by ``python -m hf_dataset build``, or a Hub dataset id. ``brat`` writes
``DIR/<id>.ann`` per report, readable by ``python -m hf_pipeline.score``; ``jsonl`` writes ``DIR/predictions.jsonl``
(``id``, ``text``, ``entities``); ``parquet`` writes ``DIR/data/chunk-NNNNNN.parquet`` shards (``id``, ``text``,
``entities``) that ``datasets.load_dataset("parquet", data_files="DIR/data/*.parquet")`` loads; ``spacy`` (needs the
``spacy`` extra) writes ``DIR/data/chunk-NNNNNN.spacy`` ``DocBin`` files, one ``Doc`` per report (tokens of
``spacy.blank("es")``) with its entities in ``doc.spans["radiology_ner"]`` as the ``radiology_ner`` spaCy component
writes them and its id in ``doc._.report_id``: ``DocBin().from_disk(path).get_docs(spacy.blank("es").vocab)``.

Under ``accelerate launch`` or ``torchrun`` every process (one GPU each, where there are GPUs) predicts its own
chunks of ``--chunk_size`` reports. ``DIR/manifest.json`` holds the settings and, once every process is done, the
counts. A rerun skips what is done (whole chunks for Parquet and spaCy, each checked first: a damaged shard is
predicted again) unless ``--overwrite`` is given; a rerun with other settings that change the predictions (model or
its files, revision, quantization, window, stride, chunking, ...) is refused. One run at a time per ``DIR``
(``DIR/.predict.lock``, see :mod:`hf_pipeline.predict.lock`); the processes of one launch share it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, NoReturn

from hf_dataset.brat import BratError
from hf_pipeline.hub import UnusableError, check_usable
from hf_pipeline.predict.inputs import InputError, Row, RowId, Source, check_ids, first_line, open_input
from hf_pipeline.predict.lock import LockError, OutputLock
from hf_pipeline.predict.outputs import (
    MANIFEST,
    OutputError,
    Writer,
    check_output,
    check_settings,
    make_writer,
    write_json,
)

FORMATS = ("brat", "jsonl", "parquet", "spacy")
MODEL_ADVICE = "or give a bundle folder (for example runs/tiny/model)."
PROCESS_GROUP_TIMEOUT = timedelta(days=7)  # the first process waits at the end for the slowest one
FINGERPRINT_SAMPLE = 1 << 20  # bytes read at each end of a large bundle file for its digest
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)  # files missing, damaged or not matching the config
PROBE_TEXT = "RD."  # predicted once after loading, to check --max_length and --stride against the model


class PredictError(ValueError):
    """A run that cannot start; the message says what to do."""


@dataclass
class World:
    """This process's place among the processes that ``torchrun`` or ``accelerate launch`` started."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size == 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():  # gloo only coordinates (barriers); every process runs its own model
            dist.init_process_group("gloo", timeout=PROCESS_GROUP_TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def owns(self, position: int, chunk_size: int) -> bool:
        return (position // chunk_size) % self.size == self.rank

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def share(self, value: Any) -> Any:
        """The first process's ``value``, in every process."""
        if self.size == 1:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


@dataclass
class Summary:
    """What a run did: ``predicted`` and ``skipped`` count reports of every process."""

    total: int = 0
    skipped: int = 0
    predicted: int = 0
    mine: int = 0
    damaged: list[tuple[int, str]] = field(default_factory=list)  # (chunk, "<shard> (<problem>)") predicted again
    manifest: dict[str, Any] = field(default_factory=dict)


def check_model(model: str, revision: str | None = None) -> None:
    """Fail at once for a missing or wrong model folder, or a Hub id that cannot be downloaded now."""
    path = Path(model)
    if path.is_dir() and not _is_bundle(path):
        raise PredictError(
            f"--model {model} is not a radiology-ner bundle (no config.json naming the radiology-ner pipeline); "
            "give the folder train.py wrote (for example runs/tiny/model) or a Hub repo id."
        )
    try:
        check_usable(model, "model", "--model", advice=MODEL_ADVICE, revision=revision)
    except UnusableError as error:
        raise PredictError(str(error)) from None


def _is_bundle(folder: Path) -> bool:
    from hf_pipeline.bundle import TASK

    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and TASK in (config.get("custom_pipelines") or {})


def load_model(
    model: str, revision: str | None, world: World, quantize: str | None = None, window: dict[str, int] | None = None
) -> Any:
    """The bundle's pipeline on this process's device, checked with ``window`` (``max_length``, ``stride``).

    Raises:
        PredictError: the bundle cannot be loaded (damaged or missing files, a tokenizer, graph or weights cut
            short...) or ``window`` does not fit the model.
    """
    import torch
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    from hf_pipeline.bundle import load_pipeline

    options = {"device": torch.device("cuda", world.local_rank)} if torch.cuda.is_available() else {}
    if quantize:  # int8 runs on CPU
        options = {"quantize": quantize, "device": torch.device("cpu")}
    what = "its tokenizer files cannot be read: "
    try:
        # Loaded here, so that a damaged tokenizer is an error (the pipeline factory would go on without one).
        tokenizer = AutoTokenizer.from_pretrained(model, revision=revision)
        what = ""
        ner = load_pipeline(model, revision=revision, tokenizer=tokenizer, **options)
    except LOAD_ERRORS + (SafetensorError,) as error:
        message = f"--model {model} cannot be loaded as a radiology-ner bundle: {what}{first_line(error)}"
        raise PredictError(message) from None
    if window:
        try:
            ner(PROBE_TEXT, batch_size=1, **window)
        except ValueError as error:
            given = " ".join(f"--{name} {value}" for name, value in window.items())
            raise PredictError(f"{given}: {first_line(error)}") from None
    return ner


def model_version(model: str, revision: str | None, quantize: str | None) -> str | None:
    """What identifies the model's predictions beyond its name: a digest of a local bundle's files, the Hub commit
    of a Hub model (``None`` when it is not in the cache yet)."""
    path = Path(model)
    if path.is_dir():
        return "files:" + _fingerprint(path, quantize)
    commit = _model_commit(model, revision)
    return f"commit:{commit}" if commit else None


def _fingerprint(folder: Path, quantize: str | None) -> str:
    """A digest of the files of a bundle folder that decide its predictions: all but the model card, hidden files
    and caches, and the int8 graphs only when they are used. A file over 2 MiB is represented by its size and its
    first and last MiB: enough to tell retrained or replaced weights without reading gigabytes on every rerun."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        parts = path.relative_to(folder).parts
        if not path.is_file() or path.suffix == ".md" or any(p.startswith(".") or p == "__pycache__" for p in parts):
            continue
        if parts[0] == "onnx" and not quantize:
            continue
        size = path.stat().st_size
        digest.update(f"{'/'.join(parts)}\0{size}\0".encode())
        with path.open("rb") as stream:
            if size <= 2 * FINGERPRINT_SAMPLE:
                digest.update(stream.read())
            else:
                digest.update(stream.read(FINGERPRINT_SAMPLE))
                stream.seek(-FINGERPRINT_SAMPLE, os.SEEK_END)
                digest.update(stream.read())
    return digest.hexdigest()[:16]


def _settings(model: str, revision: str | None, input_path: str, source: Source, fmt: str, **rest: Any) -> dict:
    local = Path(model).exists()
    return {
        "format": fmt,
        "model": os.path.abspath(model) if local else model,
        "revision": revision,
        "input": os.path.abspath(input_path) if Path(input_path).exists() else input_path,
        "source": source.description,
        **rest,
    }


def _model_commit(model: str, revision: str | None) -> str | None:
    """The Hub commit a Hub model was loaded from (read from the local cache), ``None`` for a folder."""
    if Path(model).exists():
        return None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json", revision=revision)
    return Path(cached).parent.name if isinstance(cached, str) else None


def plan(source: Source, writer: Writer, world: World, chunk_size: int, name_files: bool) -> Summary:
    """One pass over the ids: check them, count the reports done already and those this process will predict."""
    summary = Summary()

    def count(row: RowId) -> None:
        if writer.done(row.position, row.id):
            summary.skipped += 1
        elif world.owns(row.position, chunk_size):
            summary.mine += 1

    summary.total = check_ids(source, name_files, each=count)
    summary.damaged = writer.check_done(summary.total)
    for chunk, _ in summary.damaged:  # counted as done above: to be predicted again
        reports = min(chunk_size, summary.total - chunk * chunk_size)
        summary.skipped -= reports
        if world.owns(chunk * chunk_size, chunk_size):
            summary.mine += reports
    summary.predicted = summary.total - summary.skipped
    return summary


def run(
    ner: Any,
    rows: Iterator[Row],
    writer: Writer,
    batch_size: int,
    chunk_size: int,
    bar: Any,
    window: dict[str, int] | None = None,
) -> None:
    """Predict ``rows`` in order, one pipeline call per chunk, each result going to ``writer`` at once.

    A chunk's batches never mix with another chunk's, so a chunk's predictions are the same whichever process
    predicts it, alone or after a resume (padding a batch differently could move scores in the last bits).
    """
    for _, chunk in groupby(rows, key=lambda row: row.position // chunk_size):
        _run_chunk(ner, chunk, writer, batch_size, bar, window or {})
    writer.close()


def _run_chunk(ner: Any, chunk: Iterator[Row], writer: Writer, batch_size: int, bar: Any, window: dict) -> None:
    pending: deque[Row] = deque()

    def texts() -> Iterator[str]:
        for row in chunk:
            pending.append(row)
            yield row.text

    for entities in ner(texts(), batch_size=batch_size, **window):
        writer.add(pending.popleft(), entities)
        bar.update()


def predict(
    model: str,
    input_path: str | Path,
    output: str | Path,
    fmt: str = "brat",
    batch_size: int = 32,
    overwrite: bool = False,
    *,
    split: str | None = None,
    text_column: str = "text",
    id_column: str | None = None,
    no_text: bool = False,
    chunk_size: int = 1000,
    streaming: bool = False,
    revision: str | None = None,
    world: World | None = None,
    quantize: str | None = None,
    max_length: int | None = None,
    stride: int | None = None,
) -> Summary:
    """Predict every report of ``input_path`` not done yet into ``output``; see the module docstring."""
    world = world or World()
    _check_options(fmt, chunk_size, world, no_text, batch_size, max_length, stride)
    source = open_input(str(input_path), split, text_column, id_column, streaming)
    output = Path(output)
    check_output(output)
    check_model(model, revision)
    settings = _settings(model, revision, str(input_path), source, fmt, split=split, text_column=text_column,
                         id_column=id_column, chunk_size=chunk_size, no_text=no_text, quantize=quantize,
                         max_length=max_length, stride=stride,
                         model_version=model_version(model, revision, quantize))  # fmt: skip
    window = {name: value for name, value in (("max_length", max_length), ("stride", stride)) if value is not None}
    lock = OutputLock(output)
    try:
        _lock(lock, world)
        if not overwrite:
            check_settings(output, settings)
        writer = make_writer(fmt, output, overwrite, no_text, chunk_size)
        summary = plan(source, writer, world, chunk_size, name_files=fmt == "brat")
        ner = load_model(model, revision, world, quantize, window) if summary.mine else None  # before any write
        if world.rank == 0:
            _prepare(writer, output, settings, summary)
        world.barrier()
        if ner is not None:
            _predict_mine(ner, source, writer, world, summary, batch_size, chunk_size, window)
        world.barrier()
        if world.rank == 0:
            counts = writer.finish(summary.total)
            summary.manifest = {"settings": settings, "complete": True, "commit": _model_commit(model, revision),
                                "processes": world.size, **counts}  # fmt: skip
            write_json(output / MANIFEST, summary.manifest)
    finally:
        lock.release()
    return summary


def _lock(lock: OutputLock, world: World) -> None:
    """(First process.) Take the output's lock, then tell every process whether the run goes on."""
    refusal = None
    if world.rank == 0:
        try:
            warning = lock.acquire()
        except LockError as error:
            refusal = str(error)
        except OSError as error:  # the folder cannot be created or written
            refusal = (
                f"--output {lock.folder}: cannot write there ({error.strerror or error}); choose a writable folder."
            )
        else:
            if warning:
                print(warning, file=sys.stderr)
    refusal = world.share(refusal)
    if refusal is not None:
        raise OutputError(refusal)


def _check_options(
    fmt: str,
    chunk_size: int,
    world: World,
    no_text: bool = False,
    batch_size: int = 1,
    max_length: int | None = None,
    stride: int | None = None,
) -> None:
    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    if fmt == "spacy" and no_text:
        raise PredictError("--no_text: a spaCy Doc is made of its text; leave --no_text out with --format spacy.")
    if fmt == "spacy" and importlib.util.find_spec("spacy") is None:
        raise PredictError("--format spacy needs spaCy: pip install -e '.[spacy]' (or pip install 'spacy>=3.8,<3.9').")
    for name, value, least, what in (
        ("chunk_size", chunk_size, 1, "a positive number of reports per shard"),
        ("batch_size", batch_size, 1, "a positive number of windows per forward pass"),
        ("max_length", max_length, 3, "a window of at least 3 tokens (special tokens included)"),
        ("stride", stride, 0, "the number of tokens consecutive windows share, 0 or more"),
    ):
        if value is not None and (type(value) is not int or value < least):
            raise PredictError(f"--{name} {value}: give {what}.")
    if fmt == "jsonl" and world.size > 1:
        raise PredictError("--format jsonl writes one file from one process; with several use parquet or brat.")


def _prepare(writer: Writer, output: Path, settings: dict[str, Any], summary: Summary) -> None:
    """(First process.) Create and clean the output folder, mark the run incomplete, say what is skipped."""
    try:
        writer.prepare()
        write_json(output / MANIFEST, {"settings": settings, "complete": False})
    except PermissionError as error:
        message = f"--output {output}: cannot write there ({error.strerror}); choose a writable folder."
        raise OutputError(message) from None
    if summary.damaged:
        names = [problem for _, problem in summary.damaged[:3]]
        more = f" and {len(summary.damaged) - 3} more" if len(summary.damaged) > 3 else ""
        print(f"warning: {len(summary.damaged)} damaged shard(s) predicted again: {'; '.join(names)}{more}",
              file=sys.stderr)  # fmt: skip
    if summary.skipped:
        print(f"skipped {summary.skipped} report(s) already predicted in {output} (--overwrite predicts them again)")


def _predict_mine(
    ner: Any,
    source: Source,
    writer: Writer,
    world: World,
    summary: Summary,
    batch_size: int,
    chunk_size: int,
    window: dict[str, int] | None = None,
) -> None:
    from tqdm.auto import tqdm

    wanted = source.rows(lambda position: world.owns(position, chunk_size))
    rows = (row for row in wanted if not writer.done(row.position, row.id))
    desc = "predicting" if world.size == 1 else f"predicting (process {world.rank + 1} of {world.size})"
    with tqdm(total=summary.mine, desc=desc, unit="report", disable=world.rank != 0, smoothing=0.05) as bar:
        run(ner, rows, writer, batch_size, chunk_size, bar, window)


class _Parser(argparse.ArgumentParser):
    """An argument error is one line and exit code 2, like every other bad input (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        raise PredictError(f"{message}; see python -m hf_pipeline.predict --help.")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m hf_pipeline.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder or Hub repo id")
    parser.add_argument("--revision", help="Hub revision (branch, tag or commit) of --model")
    parser.add_argument(
        "--input",
        required=True,
        help="folder of .txt, a .txt, a .jsonl, a Parquet file or folder, a dataset folder or a Hub dataset id",
    )
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="brat",
        help="brat: DIR/<id>.ann; jsonl: DIR/predictions.jsonl; parquet: DIR/data/chunk-NNNNNN.parquet; spacy: "
        "DIR/data/chunk-NNNNNN.spacy, spaCy DocBin files with the entities in doc.spans['radiology_ner'] (needs spaCy)",
    )
    parser.add_argument("--split", help="dataset split to predict (needed when the dataset has several)")
    parser.add_argument("--text_column", default="text", help="column (or JSONL field) holding the report")
    parser.add_argument("--id_column", help="column (or JSONL field) holding the id (default: id, else row number)")
    parser.add_argument("--no_text", action="store_true", help="leave the text out of jsonl and parquet outputs")
    parser.add_argument(
        "--chunk_size", type=int, default=1000, help="reports per Parquet or spaCy shard and per work unit"
    )
    parser.add_argument("--streaming", action="store_true", help="stream a dataset instead of memory-mapping it")
    parser.add_argument("--batch_size", type=int, default=32, help="windows per forward pass")
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        help="run int8 ONNX graphs with ONNX Runtime on CPU: the bundle's onnx/ when it has them, else exported on "
        "first use (pip install '.[int8]'; faster; see the README for its agreement)",
    )
    parser.add_argument(
        "--max_length",
        type=int,
        help="window length in tokens, special tokens included (default: the window the bundle was trained with)",
    )
    parser.add_argument(
        "--stride", type=int, help="tokens shared by consecutive windows of a long report (default: the pipeline's)"
    )
    parser.add_argument("--overwrite", action="store_true", help="predict again reports already done")
    return parser.parse_args(argv)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a scheduler's or torchrun's SIGTERM ends the run like Ctrl-C: cleanly, resumable


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_arguments(argv)
    except PredictError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    world = None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _stop) if main_thread else None
    try:
        world = World.from_env()
        summary = predict(
            args.model,
            args.input,
            args.output,
            args.format,
            args.batch_size,
            args.overwrite,
            split=args.split,
            text_column=args.text_column,
            id_column=args.id_column,
            no_text=args.no_text,
            chunk_size=args.chunk_size,
            streaming=args.streaming,
            revision=args.revision,
            quantize=args.quantize,
            max_length=args.max_length,
            stride=args.stride,
            world=world,
        )
    except (InputError, OutputError, PredictError, BratError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {error.strerror or error}{where}; fix this, then rerun to resume.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted, rerun to resume", file=sys.stderr)
        return 2
    finally:
        if world is not None:
            world.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if world.rank == 0:
        print(f"predicted {summary.predicted} report(s) into {args.output}")
    return 0
