"""Build time and peak memory of :func:`hf_dataset.build` on synthetic corpora of a given size.

    python benchmarks/bench_build.py [--sizes 0.25 0.5 5] [--reports 1] [--timeout 900]

Each corpus is ``--reports`` reports that together hold about ``--sizes`` MB of text: the bundled sample's train
reports concatenated, with their entities (about 55 per KB, nested and discontinuous ones included, as dense as
the real CT-EBM-SP cases). The files are written first; then a fresh process imports the builder, notes its
resident memory, builds (read, layer, oracle, Arrow), and prints the build's seconds, its peak resident memory,
and the growth of memory over the imports as a multiple of the text, of the corpus files (.txt + .ann) and of the
Arrow dataset it built.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hf_dataset import SAMPLE_CORPUS, Entity, read_corpus, write_ann


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


def write_corpus(folder: Path, megabytes: float, reports: int) -> None:
    """``reports`` copies of one synthetic report, ``megabytes`` of text in all."""
    text, entities = synthetic_report(int(megabytes * 1_000_000 / reports))
    for number in range(reports):
        Path(folder, f"report_{number:05d}.txt").write_text(text, encoding="utf-8", newline="")
        write_ann(Path(folder, f"report_{number:05d}.ann"), text, entities)


def peak_mib() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, not carried over from the parent)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def figures(folder: Path) -> dict[str, float]:
    """Build the corpus in ``folder`` (in a fresh process: the peak is the process's) and return its figures, in
    MiB and seconds."""
    from hf_dataset import build

    imported = peak_mib()
    started = time.perf_counter()
    dataset, builder = build(folder)
    seconds = time.perf_counter() - started
    stats = builder.splits["train"].statistics
    text = sum(path.stat().st_size for path in folder.glob("*.txt")) / 2**20
    return {
        "text": text,
        "corpus": text + sum(path.stat().st_size for path in folder.glob("*.ann")) / 2**20,
        "arrow": dataset["train"].data.nbytes / 2**20,
        "seconds": seconds,
        "imported": imported,
        "peak": peak_mib(),
        "reports": stats.reports,
        "entities": stats.read,
        "oracle_exact_f1": stats.oracle["exact_f1"],
    }


def measure(folder: Path) -> None:
    """Print the figures of building ``folder``."""
    f = figures(folder)
    growth = f["peak"] - f["imported"]
    print(
        f"{f['text']:>7.2f} MiB text in {f['reports']:>5} report(s), {f['entities']:>9,} entities: "
        f"{f['seconds']:>7.1f} s, peak RSS {f['peak']:>6.0f} MiB ({f['imported']:.0f} after imports): growth "
        f"{growth:>6.0f} MiB = {growth / f['text']:5.1f}x the text, {growth / f['corpus']:4.1f}x .txt+.ann "
        f"({f['corpus']:.1f} MiB), {growth / f['arrow']:4.1f}x the Arrow dataset ({f['arrow']:.1f} MiB); "
        f"oracle exact F1 {f['oracle_exact_f1']:.4f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 5.0], help="MB of text per corpus")
    parser.add_argument("--reports", type=int, default=1, help="reports per corpus (the text is shared out)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per build")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: build this folder here
    args = parser.parse_args()
    if args.measure is not None:
        measure(args.measure)
        return
    for megabytes in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            write_corpus(Path(folder), megabytes, args.reports)
            try:
                command = [sys.executable, __file__, "--measure", folder]
                subprocess.run(command, check=True, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                print(f"{megabytes:>6} MB did not finish in {args.timeout:.0f} s", flush=True)


if __name__ == "__main__":
    main()
