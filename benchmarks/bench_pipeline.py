"""Throughput of the radiology-ner pipeline: median seconds and characters per second over repeated runs.

    python benchmarks/bench_pipeline.py --model runs/tiny/model [--repeats 5]

Runs the bundled sample's test reports one by one, as a batched list, and as one long report of 200,000
characters, and prints the median of ``--repeats`` runs for each, all measured in this one process.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import hf_pipeline
from hf_dataset import SAMPLE_CORPUS, read_corpus


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="bundle folder or Hub repo id")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    ner = hf_pipeline.load_pipeline(args.model)
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "test").documents]
    long_text = ("\n".join(texts) * (200_000 // sum(map(len, texts)) + 1))[:200_000]
    cases = {
        "sample test split, one call per report": (lambda: [ner(t) for t in texts], sum(map(len, texts))),
        "sample test split, one batched call (batch_size=8)": (lambda: ner(texts, batch_size=8), sum(map(len, texts))),
        "one report of 200,000 characters (batch_size=32)": (lambda: ner(long_text, batch_size=32), len(long_text)),
    }
    print(f"model: {args.model} (max window {ner.max_window} tokens, {len(ner.layer_models)} layers)")
    for name, (run, characters) in cases.items():
        seconds = median_seconds(run, args.repeats)
        print(f"{name:<55} median {seconds:8.3f} s  {characters / seconds:>12,.0f} characters/s")


if __name__ == "__main__":
    main()
