"""Build time and peak memory for one synthetic report of 0.25, 0.5 and 5 MB.

    python benchmarks/bench_build.py [--sizes 0.25 0.5 5] [--timeout 900]

The report is the bundled sample's train reports concatenated, with their entities, until it reaches the size
(about 55 entities per KB, nested and discontinuous ones included). Each size is built by
:func:`hf_dataset.build` (read, layer, oracle, Arrow) in a fresh process, which prints the wall seconds of the
build and the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hf_dataset import SAMPLE_CORPUS, Entity, build, read_corpus, write_ann


def synthetic_report(size_bytes: int) -> tuple[str, list[Entity]]:
    """The sample's train reports repeated until the text has ``size_bytes`` UTF-8 bytes."""
    documents = read_corpus(SAMPLE_CORPUS / "train").documents
    parts: list[str] = []
    entities: list[Entity] = []
    offset = length = 0
    while length < size_bytes:
        for document in documents:
            shifted = (tuple((s + offset, e + offset) for s, e in x.fragments) for x in document.entities)
            entities += [dataclasses.replace(x, fragments=f) for x, f in zip(document.entities, shifted)]
            parts.append(document.text + "\n")
            offset += len(document.text) + 1
            length += len(document.text.encode("utf-8")) + 1
            if length >= size_bytes:
                break
    return "".join(parts), entities


def measure(megabytes: float) -> None:
    """Build one report of ``megabytes`` and print its figures (run in a fresh process)."""
    text, entities = synthetic_report(int(megabytes * 1_000_000))
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "report.txt").write_text(text, encoding="utf-8", newline="")
        write_ann(Path(folder, "report.ann"), text, entities)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        dataset, builder = build(folder)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stats = builder.splits["train"].statistics
    print(
        f"{megabytes:>6} MB {len(text):>10,} chars {len(entities):>8,} entities {seconds:>9.1f} s "
        f"peak RSS {peak / 1024:>7.0f} MiB (before build {before / 1024:.0f} MiB)  "
        f"encoded {stats.encoded:,} oracle exact F1 {stats.oracle['exact_f1']:.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 5.0], help="report sizes in MB")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per size")
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # internal: measure one size here
    args = parser.parse_args()
    if args.one is not None:
        measure(args.one)
        return
    for megabytes in args.sizes:
        try:
            subprocess.run([sys.executable, __file__, "--one", str(megabytes)], check=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{megabytes:>6} MB did not finish in {args.timeout:.0f} s", flush=True)


if __name__ == "__main__":
    main()
