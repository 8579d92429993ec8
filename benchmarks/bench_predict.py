"""Throughput and peak memory of ``python -m hf_pipeline.predict`` on many short reports, 1 and 2 processes.

    python benchmarks/bench_predict.py [--reports 100000] [--small 10000] [--threads 1] [--model BUNDLE]

Writes ``--reports`` short synthetic reports to a Parquet file and predicts them into Parquet shards: with one
process at ``--small`` and at ``--reports`` reports (peak memory must not grow with the count), with two
processes under ``torchrun`` (gloo), and a rerun that finds everything done. Each command runs in a fresh process
of its own; peak memory is the largest resident set of any process of the command. Without ``--model`` a tiny
random bundle (the tests' size) is built, so the figures measure the machinery, not a real model.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "Riñón derecho de tamaño normal sin dilatación de la vía excretora quiste simple en polo superior de 15 mm "
    "bazo homogéneo hígado ecogenicidad ."
).split()


def synthetic_reports(path: Path, count: int, batch: int = 10_000) -> None:
    """``count`` reports of 8 to 30 words, written batch by batch (this script never holds them all either)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, count, batch):
            numbers = range(start, min(start + batch, count))
            texts = [" ".join(WORDS[(n * 7 + i * 5) % len(WORDS)] for i in range(8 + n % 23)) for n in numbers]
            writer.write_table(pa.table({"id": [f"r{n:07d}" for n in numbers], "text": texts}, schema=schema))


def tiny_bundle(folder: Path) -> Path:
    import torch

    import hf_pipeline
    from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus
    from hf_pipeline.training.base_models import build_tiny_model, train_wordpiece

    torch.manual_seed(0)
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "train").documents]
    tokenizer = train_wordpiece(texts, vocab_size=400, model_max_length=64)
    labels = label_names(SPRADIE_TYPES)
    models = [build_tiny_model(tokenizer, labels, 64, hidden_size=32) for _ in range(3)]
    return hf_pipeline.save_bundle(models, tokenizer, folder)


def measure(command: list[str], threads: int) -> tuple[float, float]:
    """Run ``command`` in a fresh measuring process; returns (seconds, peak MiB of its largest process)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    wrapper = [sys.executable, __file__, "--run", json.dumps(command)]
    result = subprocess.run(wrapper, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    seconds, peak_kib = json.loads(result.stdout.strip().splitlines()[-1])
    return seconds, peak_kib / 1024


def run_and_report(command: list[str]) -> None:
    """(In the measuring process.) Run the command, print [seconds, peak KiB of the largest descendant]."""
    started = time.perf_counter()
    completed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - started
    if completed.returncode != 0:
        sys.stderr.write(completed.stderr)
        sys.exit(completed.returncode)
    print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))


def steady_rate(output: Path) -> float:
    """Reports per second between the first and the last shard written (start-up and model loading left out)."""
    import pyarrow.parquet as pq

    shards = sorted((output / "data").glob("*.parquet"), key=lambda path: path.stat().st_mtime)
    if len(shards) < 2:
        return float("nan")
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in shards[1:])
    return rows / (shards[-1].stat().st_mtime - shards[0].stat().st_mtime)


def predict_command(model: Path, source: Path, output: Path, processes: int, streaming: bool) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port", "29561"]
    arguments = ["--model", str(model), "--input", str(source), "--output", str(output), "--format", "parquet"]
    return [*launcher, "-m", "hf_pipeline.predict", *arguments, "--batch_size", "32"] + ["--streaming"] * streaming


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000, help="the smaller count for the memory comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--model", help="bundle folder (default: a tiny random bundle built here)")
    parser.add_argument("--streaming", action="store_true", help="predict with --streaming (no datasets cache)")
    parser.add_argument("--one_process_only", action="store_true", help="leave out the run with two processes")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        return run_and_report(json.loads(args.run))
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        model = Path(args.model) if args.model else tiny_bundle(work / "bundle")
        cache = work / "datasets-cache"
        os.environ["HF_DATASETS_CACHE"] = str(cache)
        print(f"model: {model}; streaming: {args.streaming}; {os.cpu_count()} CPU cores; "
              f"{args.threads} torch thread(s) per process; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        runs = [("1 process", args.small, 1), ("1 process", args.reports, 1), ("2 processes", args.reports, 2)]
        runs = runs[:2] if args.one_process_only else runs
        for name, count, processes in runs:
            source = work / f"reports-{count}.parquet"
            if not source.exists():
                synthetic_reports(source, count)
            output = work / f"out-{count}-{processes}"
            seconds, peak = measure(predict_command(model, source, output, processes, args.streaming), args.threads)
            print(f"{name:<12} {count:>8,} reports  {seconds:7.1f} s in all ({count / seconds:6.1f} reports/s), "
                  f"{steady_rate(output):6.1f} reports/s once started; peak {peak:5.0f} MiB per process; "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            if processes == 1 and count == args.reports:
                again, peak = measure(predict_command(model, source, output, 1, args.streaming), args.threads)
                print(
                    f"{'rerun':<12} {count:>8,} reports  {again:7.1f} s in all (every chunk done), peak {peak:5.0f} MiB"
                )


if __name__ == "__main__":
    main()
