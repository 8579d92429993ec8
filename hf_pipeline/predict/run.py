"""Predict reports with a bundle: a folder, a file, Parquet, a dataset; one process or many; resumable.

    python -m hf_pipeline.predict --model BUNDLE --input INPUT --output DIR
                                  [--format brat|jsonl|parquet|spacy] [--split S] [--text_column text] [--id_column id]
                                  [--no_text] [--chunk_size 1000] [--streaming] [--batch_size 32] [--quantize int8]
                                  [--overwrite]
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
counts. A rerun skips what is done (whole chunks for Parquet and spaCy) unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
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
from typing import Any

from hf_dataset.brat import BratError
from hf_pipeline.hub import UnusableError, check_usable
from hf_pipeline.predict.inputs import InputError, Row, RowId, Source, check_ids, open_input
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


def load_model(model: str, revision: str | None, world: World, quantize: str | None = None) -> Any:
    import torch

    from hf_pipeline.bundle import load_pipeline

    options = {"device": torch.device("cuda", world.local_rank)} if torch.cuda.is_available() else {}
    if quantize:  # int8 runs on CPU
        options = {"quantize": quantize, "device": torch.device("cpu")}
    try:
        return load_pipeline(model, revision=revision, **options)
    except (OSError, ValueError, KeyError) as error:
        message = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise PredictError(f"--model {model} cannot be loaded as a radiology-ner bundle: {message}") from None


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
    summary.predicted = summary.total - summary.skipped
    return summary


def run(ner: Any, rows: Iterator[Row], writer: Writer, batch_size: int, chunk_size: int, bar: Any) -> None:
    """Predict ``rows`` in order, one pipeline call per chunk, each result going to ``writer`` at once.

    A chunk's batches never mix with another chunk's, so a chunk's predictions are the same whichever process
    predicts it, alone or after a resume (padding a batch differently could move scores in the last bits).
    """
    for _, chunk in groupby(rows, key=lambda row: row.position // chunk_size):
        _run_chunk(ner, chunk, writer, batch_size, bar)
    writer.close()


def _run_chunk(ner: Any, chunk: Iterator[Row], writer: Writer, batch_size: int, bar: Any) -> None:
    pending: deque[Row] = deque()

    def texts() -> Iterator[str]:
        for row in chunk:
            pending.append(row)
            yield row.text

    for entities in ner(texts(), batch_size=batch_size):
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
) -> Summary:
    """Predict every report of ``input_path`` not done yet into ``output``; see the module docstring."""
    world = world or World()
    _check_options(fmt, chunk_size, world, no_text)
    source = open_input(str(input_path), split, text_column, id_column, streaming)
    output = Path(output)
    check_output(output)
    check_model(model, revision)
    settings = _settings(model, revision, str(input_path), source, fmt, split=split, text_column=text_column,
                         id_column=id_column, chunk_size=chunk_size, no_text=no_text, quantize=quantize)  # fmt: skip
    if not overwrite:
        check_settings(output, settings)
    writer = make_writer(fmt, output, overwrite, no_text, chunk_size)
    summary = plan(source, writer, world, chunk_size, name_files=fmt == "brat")
    if world.rank == 0:
        _prepare(writer, output, settings, summary)
    world.barrier()
    if summary.mine:
        _predict_mine(source, writer, world, summary, model, revision, batch_size, chunk_size, quantize)
    world.barrier()
    if world.rank == 0:
        counts = writer.finish(summary.total)
        summary.manifest = {"settings": settings, "complete": True, "commit": _model_commit(model, revision),
                            "processes": world.size, **counts}  # fmt: skip
        write_json(output / MANIFEST, summary.manifest)
    return summary


def _check_options(fmt: str, chunk_size: int, world: World, no_text: bool = False) -> None:
    if fmt not in FORMATS:
        raise PredictError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}.")
    if fmt == "spacy" and no_text:
        raise PredictError("--no_text: a spaCy Doc is made of its text; leave --no_text out with --format spacy.")
    if fmt == "spacy" and importlib.util.find_spec("spacy") is None:
        raise PredictError("--format spacy needs spaCy: pip install -e '.[spacy]' (or pip install 'spacy>=3.8,<3.9').")
    if chunk_size < 1:
        raise PredictError(f"--chunk_size {chunk_size}: give a positive number of reports per shard.")
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
    if summary.skipped:
        print(f"skipped {summary.skipped} report(s) already predicted in {output} (--overwrite predicts them again)")


def _predict_mine(
    source: Source,
    writer: Writer,
    world: World,
    summary: Summary,
    model: str,
    revision: str | None,
    batch_size: int,
    chunk_size: int,
    quantize: str | None = None,
) -> None:
    from tqdm.auto import tqdm

    ner = load_model(model, revision, world, quantize)
    wanted = source.rows(lambda position: world.owns(position, chunk_size))
    rows = (row for row in wanted if not writer.done(row.position, row.id))
    desc = "predicting" if world.size == 1 else f"predicting (process {world.rank + 1} of {world.size})"
    with tqdm(total=summary.mine, desc=desc, unit="report", disable=world.rank != 0, smoothing=0.05) as bar:
        run(ner, rows, writer, batch_size, chunk_size, bar)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hf_pipeline.predict", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--overwrite", action="store_true", help="predict again reports already done")
    return parser.parse_args(argv)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a scheduler's or torchrun's SIGTERM ends the run like Ctrl-C: cleanly, resumable


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
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
