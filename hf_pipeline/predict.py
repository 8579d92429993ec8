"""Predict a folder of reports (or a JSONL file) with a bundle.

    python -m hf_pipeline.predict --model BUNDLE --input FILE_OR_DIR --output DIR
                                  [--format brat|jsonl] [--batch_size N] [--overwrite]

Inputs: a folder (every ``.txt`` below it), one ``.txt``, or a ``.jsonl`` file whose lines have a ``text`` field
(and optionally ``id``). ``brat`` writes ``DIR/<id>.ann`` per report, readable by ``python -m hf_pipeline.score``;
``jsonl`` writes ``DIR/predictions.jsonl`` with ``id``, ``text`` and ``entities``. A rerun skips reports whose
output exists unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from tqdm.auto import tqdm

from hf_dataset.brat import BratError, Entity, read_text, write_ann
from hf_pipeline.bundle import load_pipeline

JSONL_OUTPUT = "predictions.jsonl"


def read_inputs(path: Path) -> Iterator[tuple[str, str]]:
    """(id, text) pairs from a folder of ``.txt``, one ``.txt``, or a JSONL file with a ``text`` field."""
    if path.is_dir():
        for txt in sorted(path.rglob("*.txt")):
            yield txt.relative_to(path).with_suffix("").as_posix(), read_text(txt)
    elif path.suffix == ".jsonl":
        for number, line in enumerate(read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise BratError(f"{path}:{number}: expected a JSON object with a 'text' field.") from None
            if not isinstance(text, str):
                raise BratError(f"{path}:{number}: 'text' must be a string, got {type(text).__name__}.")
            yield str(record.get("id", number)), text
    elif path.is_file():
        yield path.stem, read_text(path)
    else:
        raise BratError(f"{path} does not exist; give a folder of .txt files, a .txt or a .jsonl file.")


def predict(
    model: str,
    input_path: str | Path,
    output: str | Path,
    fmt: str = "brat",
    batch_size: int = 8,
    overwrite: bool = False,
) -> int:
    """Predict every input report not done yet; returns how many were predicted."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    done = set() if overwrite else _finished(output, fmt)
    todo = [(doc_id, text) for doc_id, text in read_inputs(Path(input_path)) if doc_id not in done]
    if not todo:
        return 0
    recognizer = load_pipeline(model)
    results = recognizer((text for _, text in todo), batch_size=batch_size)
    jsonl = (output / JSONL_OUTPUT).open("w" if overwrite else "a", encoding="utf-8") if fmt == "jsonl" else None
    try:
        for (doc_id, text), entities in tqdm(zip(todo, results), total=len(todo), desc="predicting", unit="report"):
            if jsonl:
                jsonl.write(json.dumps({"id": doc_id, "text": text, "entities": entities}, ensure_ascii=False) + "\n")
                jsonl.flush()
            else:
                path = output / f"{doc_id}.ann"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_ann(path, text, [Entity(e["entity_group"], ((e["start"], e["end"]),)) for e in entities])
    finally:
        if jsonl:
            jsonl.close()
    return len(todo)


def _finished(output: Path, fmt: str) -> set[str]:
    if fmt == "brat":
        return {path.relative_to(output).with_suffix("").as_posix() for path in output.rglob("*.ann")}
    jsonl = output / JSONL_OUTPUT
    if not jsonl.exists():
        return set()
    return {json.loads(line)["id"] for line in read_text(jsonl).splitlines() if line.strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_pipeline.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder or Hub repo id")
    parser.add_argument("--input", required=True, help="folder of .txt, a .txt, or a .jsonl with a 'text' field")
    parser.add_argument("--output", required=True, help="output folder")
    parser.add_argument("--format", choices=["brat", "jsonl"], default="brat")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--overwrite", action="store_true", help="predict again reports already done")
    args = parser.parse_args(argv)
    try:
        count = predict(args.model, args.input, args.output, args.format, args.batch_size, args.overwrite)
    except BratError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"predicted {count} report(s) into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
