"""CPU speed of the radiology-ner pipeline against the stock way and against this machine's GEMM peak.

    python benchmarks/bench_pipeline.py                  # mBERT-base-shaped and tiny bundles, every variant
    python benchmarks/bench_pipeline.py --threads 2 --repeats 3 --sizes base
    python benchmarks/bench_pipeline.py --model runs/quality/model     # a trained bundle instead of random ones
    python benchmarks/bench_pipeline.py --sizes base --report_mix --repeats 7   # the report mix only, more runs
    python benchmarks/bench_pipeline.py --sizes base --variants "shared span" "shared span int8"   # stock + these

In one process, one run: builds bundles with random weights through the project's own ``save_bundle`` (no
download): ``base`` is shaped like mBERT-base (vocabulary 119,547, hidden 768, 12 layers, 12 heads, intermediate
3,072, 21 labels, three layer models), ``tiny`` like the tiny preset. The tokenizer is a WordPiece trained on the
bundled sample (its ids fit any vocabulary), so tokens per character differ from mBERT's: tokens/s is printed too.

Workloads (the "report mix" is the first two): the bundled sample's 8 test reports one call each ("reports, one by
one"), the same 8 as one list ("reports, one list"), and long texts of 1k, 4k, 16k and 64k characters. Variants:
this pipeline (fp32 per layer; the shared-encoder bundle with the depth scheme, with the type scheme, a tag
sequence per SpRadIE type and a second one for two of them, and with the span head, K = 10 words, 128-wide start and
end representations; int8 with ONNX Runtime for each) and what a user would do
without it: three stock ``pipeline("token-classification", model=<layer k>, aggregation_strategy="simple")`` calls
on the same texts, with the same batch size and window overlap (``stride``), so that they also read all of a long text.

Per workload and variant it prints the median seconds of up to ``--repeats`` runs (fewer once a cell has used
``--budget`` seconds; the number of runs is printed), characters/s, subword tokens/s, the speed ratio to stock,
the fraction of the measured fp32 GEMM peak reached inside the encoder forwards (model FLOPs over the time spent in
them; int8 rows count the same FLOPs), the share of time outside the forwards, and the peak RSS during the
workload. The GEMM peak is torch.matmul at the encoder's own shapes, on this machine, now.

Every figure assumes a quiet machine: more busy threads than cores (another benchmark, a test run) distorts all of
them, ratios included. Quote the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForTokenClassification, PreTrainedModel, pipeline
from transformers.utils import logging as hf_logging

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import hf_pipeline  # noqa: E402
from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus  # noqa: E402
from hf_pipeline import spans  # noqa: E402
from hf_pipeline.bundle import make_shared_config, make_span_config  # noqa: E402
from hf_pipeline.training.base_models import train_wordpiece  # noqa: E402
from hf_pipeline.training.heads import SpanScorer  # noqa: E402
from hf_pipeline.training.schemes import SPAN_SCORER  # noqa: E402
from hf_pipeline.words import default_stride  # noqa: E402

SHAPES = {
    "base": dict(vocab_size=119_547, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512,
                 max_position_embeddings=128),
}  # fmt: skip
LONG_SIZES = (1_000, 4_000, 16_000, 64_000)
REPORT_MIX = ("reports, one by one", "reports, one list")
BATCH_SIZE = 32
SPAN_WORDS, SPAN_DIMS = 10, 128  # the span head's K and representation size (as trained on CT-EBM-SP)


@dataclass
class Measured:
    runs: int
    seconds: float
    forward_seconds: float
    flops: float
    peak_rss_mib: float


class ForwardMeter:
    """Time spent in, and FLOPs done by, the forward passes of some models (hooks on their top module)."""

    def __init__(self, models: list[PreTrainedModel]) -> None:
        self.seconds, self.flops = 0.0, 0.0
        self._started, self._shape = 0.0, (0, 0)
        self.handles = [model.register_forward_pre_hook(self._before, with_kwargs=True) for model in models]
        self.handles += [model.register_forward_hook(self._after) for model in models]

    def _before(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        self._shape = tuple(kwargs["input_ids"].shape if "input_ids" in kwargs else args[0].shape)
        self._started = time.perf_counter()

    def _after(self, module: torch.nn.Module, args: tuple, output: Any) -> None:
        self.seconds += time.perf_counter() - self._started
        self.flops += encoder_flops(module.config, self._shape)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def encoder_flops(config: BertConfig, shape: tuple[int, int]) -> float:
    """Multiply-adds x 2 of one BERT forward on a padded [batch, length] input (embedding lookups are free)."""
    batch, length = shape
    hidden, inner = config.hidden_size, config.intermediate_size
    per_token_per_layer = 2 * (4 * hidden * hidden + 2 * hidden * inner) + 2 * 2 * length * hidden  # + attention
    return batch * length * (config.num_hidden_layers * per_token_per_layer + 2 * hidden * config.num_labels)


def gemm_peak(config: BertConfig, repeats: int = 5) -> float:
    """Best fp32 FLOP/s of torch.matmul at the encoder's shapes ([4096 tokens, hidden] x weight)."""
    tokens = 4096
    rates = []
    for inner in (config.hidden_size, config.intermediate_size):
        a, b = torch.randn(tokens, config.hidden_size), torch.randn(config.hidden_size, inner)
        torch.matmul(a, b)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            torch.matmul(a, b)
            timings.append(time.perf_counter() - started)
        rates.append(2 * tokens * config.hidden_size * inner / statistics.median(timings))
    return max(rates)


@contextmanager
def peak_rss() -> Iterator[list[float]]:
    """Sample this process's resident memory every 5 ms; yields a one-item list filled with the peak (MiB)."""
    result, stop = [0.0], threading.Event()
    page = os.sysconf("SC_PAGE_SIZE")

    def sample() -> None:
        while not stop.is_set():
            with open("/proc/self/statm") as statm:
                result[0] = max(result[0], int(statm.read().split()[1]) * page / 2**20)
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()


def measure(run: Callable[[], object], meter: ForwardMeter, repeats: int, budget: float) -> Measured:
    """Up to ``repeats`` timed runs, fewer once ``budget`` seconds are spent (at least one); the median run."""
    seconds: list[float] = []
    forwards, flops = [], []
    with peak_rss() as rss:
        while len(seconds) < repeats and sum(seconds) < budget:
            meter.seconds, meter.flops = 0.0, 0.0
            started = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - started)
            forwards.append(meter.seconds)
            flops.append(meter.flops)
    middle = seconds.index(statistics.median_low(seconds))
    return Measured(len(seconds), seconds[middle], forwards[middle], flops[middle], rss[0])


def random_bundle(folder: Path, size: str, tokenizer: Any, shared: bool = False, scheme: str = "depth") -> Path:
    labels = label_names(SPRADIE_TYPES)
    shape = {"vocab_size": len(tokenizer), **SHAPES[size]}
    config = BertConfig(**shape, id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
    torch.manual_seed(0)
    if scheme == "span":
        make_span_config(config, SPRADIE_TYPES, [1, 2, 3], SPAN_WORDS, SPAN_DIMS, False, SPAN_SCORER)
        setattr(config, spans.THRESHOLD_KEY, 0.5)
        models = [BertForTokenClassification(config)]
        setattr(
            models[0], spans.WEIGHTS_ATTRIBUTE, SpanScorer(len(SPRADIE_TYPES), SPAN_DIMS, SPAN_WORDS).trained_weights()
        )
    elif shared:
        sequences = [(kind, 1) for kind in SPRADIE_TYPES] + [(kind, 2) for kind in SPRADIE_TYPES[:2]]
        make_shared_config(config, labels, [1, 2, 3], sequences if scheme == "type" else None)
        models = [BertForTokenClassification(config)]
    else:
        models = [BertForTokenClassification(config) for _ in range(3)]
    tokenizer.model_max_length = shape["max_position_embeddings"]
    return hf_pipeline.save_bundle([m.eval() for m in models], tokenizer, folder)


def stock_runner(bundle: Path, stride: int) -> tuple[Callable[[Any], object], list[PreTrainedModel]]:
    """Three stock token-classification pipelines, one per layer folder, run one after the other."""
    folders = [bundle, bundle / "layer_2", bundle / "layer_3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stock = [
            pipeline("token-classification", model=str(f), aggregation_strategy="simple", stride=stride, device=-1)
            for f in folders
        ]

    def run(texts: Any) -> object:
        return [p(texts, batch_size=BATCH_SIZE) for p in stock]

    return run, [p.model for p in stock]


def workloads(tokenizer: Any) -> dict[str, tuple[Callable[[Callable], object], int, int]]:
    """name -> (call the runner on the workload, characters, subword tokens)."""
    reports = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "test").documents]
    joined = "\n\n".join(reports)
    longs = {size: (joined * (size // len(joined) + 1))[:size] for size in LONG_SIZES}

    def tokens(texts: list[str]) -> int:
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])

    cases: dict[str, tuple[Callable[[Callable], object], int, int]] = {
        REPORT_MIX[0]: (lambda run: [run(t) for t in reports], sum(map(len, reports)), tokens(reports)),
        REPORT_MIX[1]: (lambda run: run(reports), sum(map(len, reports)), tokens(reports)),
    }
    for size, text in longs.items():
        cases[f"one text of {size // 1000}k characters"] = (lambda run, t=text: run(t), len(text), tokens([text]))
    return cases


def benchmark_size(size: str, args: argparse.Namespace, work: Path, tokenizer: Any) -> list[dict[str, Any]]:
    per_layer = Path(args.model) if args.model else random_bundle(work / f"{size}-per-layer", size, tokenizer)
    ours = hf_pipeline.load_pipeline(per_layer)
    window = ours.default_window - 2
    stride = default_stride(window)
    variants: dict[str, tuple[Callable[[Any], object], list[PreTrainedModel]]] = {
        "stock x3": stock_runner(per_layer, stride),
        "ours": (ours, ours.layer_models),
    }
    bundles = {"": per_layer}
    if not args.model:
        for scheme in ("depth", "type", "span"):
            name = " shared" + ("" if scheme == "depth" else f" {scheme}")
            bundles[name] = random_bundle(work / f"{size}-shared-{scheme}", size, tokenizer, shared=True, scheme=scheme)
            shared = hf_pipeline.load_pipeline(bundles[name])
            variants[f"ours{name}"] = (shared, shared.layer_models)
    for name, bundle in bundles.items() if not args.no_int8 else ():
        if not args.variants or f"{name.strip()} int8".strip() in args.variants:
            int8 = hf_pipeline.load_pipeline(bundle, quantize="int8")
            variants[f"ours{name} int8 ONNX Runtime"] = (int8, [])  # no torch forward to time: GEMM columns n/a
    if args.variants:  # stock always: it is what every ratio is to
        keep = {
            "stock x3",
            *(f"ours {v}".strip() for v in args.variants),
            *(f"ours {v} ONNX Runtime" for v in args.variants),
        }
        variants = {name: variant for name, variant in variants.items() if name in keep}
    peak = gemm_peak(ours.model.config)
    threads = torch.get_num_threads()
    print(f"\n## {size}: window {window + 2} tokens, stride {stride}, batch {BATCH_SIZE}; "
          f"fp32 GEMM peak {peak / 1e9:.1f} GFLOP/s on {threads} threads\n")  # fmt: skip
    columns = ["workload", "variant", "runs", "median s", "chars/s", "tokens/s", "x stock", "GEMM peak"]
    print("| " + " | ".join([*columns, "outside forwards", "peak RSS MiB"]) + " |\n| --- | --- |" + " ---: |" * 8)
    rows = []
    cases = workloads(ours.tokenizer)
    for runner, _ in variants.values():  # warm-up: first calls allocate and pick kernels
        cases[REPORT_MIX[1]][0](runner)
    if args.report_mix:
        cases = {name: cases[name] for name in REPORT_MIX}
    for name, (call, characters, tokens) in cases.items():
        stock_seconds = None
        for variant, (runner, models) in variants.items():
            meter = ForwardMeter(models)
            m = measure(lambda call=call, runner=runner: call(runner), meter, args.repeats, args.budget)
            meter.remove()
            stock_seconds = stock_seconds or m.seconds
            row = {
                "size": size, "workload": name, "variant": variant, "runs": m.runs, "seconds": m.seconds,
                "chars_per_s": characters / m.seconds, "tokens_per_s": tokens / m.seconds,
                "x_stock": stock_seconds / m.seconds,
                "gemm_fraction": m.flops / m.forward_seconds / peak if m.forward_seconds else float("nan"),
                "outside_forwards": 1 - m.forward_seconds / m.seconds if models else float("nan"),
                "peak_rss_mib": m.peak_rss_mib,
            }  # fmt: skip
            rows.append(row)
            print(f"| {name} | {variant} | {m.runs} | {m.seconds:.3f} | {row['chars_per_s']:,.0f} | "
                  f"{row['tokens_per_s']:,.0f} | {row['x_stock']:.2f} | {row['gemm_fraction']:.0%} | "
                  f"{row['outside_forwards']:.0%} | {m.peak_rss_mib:,.0f} |", flush=True)  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--model", help="a trained bundle folder instead of the random ones (one table)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, every core)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per cell at most; the median is printed")
    parser.add_argument("--budget", type=float, default=30, help="no new run of a cell once it took this many s")
    parser.add_argument("--no_int8", action="store_true", help="leave out the int8 rows")
    parser.add_argument("--report_mix", action="store_true", help="only the report mix (then more --repeats)")
    parser.add_argument(
        "--variants", nargs="+", default=None,
        help='only these variants besides stock, named as in the table without "ours": "" (per layer), "shared", '
        '"shared type", "shared span", "int8", "shared span int8" ...',
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="also write every row as JSON here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f} (above the core count, every figure is distorted)")  # fmt: skip
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "train").documents]
    tokenizer = train_wordpiece(texts, vocab_size=2000)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for size in [args.model] if args.model else args.sizes:
            rows += benchmark_size(size, args, Path(work), tokenizer)
    print(f"\nmax RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    if args.output:
        args.output.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
