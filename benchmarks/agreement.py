"""What a faster setting costs in quality: the window overlap and int8, on a trained bundle and real text.

    python benchmarks/agreement.py --model runs/quality/model --corpus ../shared/corpora/ct-ebm-sp-v2-cases/test

Predicts every report of a brat folder with the bundle in four settings, in one process: full precision with the
default overlap (the reference, all reports in one list), full precision with an overlap of half a window, and int8
(the pipeline's ``quantize="int8"``, ONNX Runtime) on the list and one report at a time. For each it prints the
seconds, the task's exact and lenient F1 against the folder's gold, and the share of the reference's entities it
predicts identically (type, start, end, layer) and of its own that the reference also has; then, for fp32 and
int8, how many reports get other entities alone than inside the list (batch independence: 0 is the goal).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import hf_pipeline  # noqa: E402
from hf_dataset.brat import read_corpus  # noqa: E402
from hf_dataset.entities import Entity  # noqa: E402
from hf_pipeline.scoring import score  # noqa: E402


def keys(entities: list[dict[str, Any]]) -> set[tuple]:
    return {(e["entity_group"], e["start"], e["end"], e["layer"]) for e in entities}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a trained bundle folder")
    parser.add_argument("--corpus", required=True, type=Path, help="a brat folder with gold .ann files")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    documents = read_corpus(args.corpus).documents
    texts = [doc.text for doc in documents]
    gold = {doc.id: doc.entities for doc in documents}
    full = hf_pipeline.load_pipeline(args.model)
    int8 = hf_pipeline.load_pipeline(args.model, quantize="int8")
    half = (full.default_window - 2) // 2
    settings = {
        "fp32, default overlap": (full, {}),
        f"fp32, overlap {half} (half a window)": (full, {"stride": half}),
        "int8 ONNX Runtime, one list": (int8, {}),
        "int8 ONNX Runtime, one report at a time": (int8, {"alone": True}),
    }
    print(f"{len(texts)} reports, {sum(map(len, texts)):,} characters; {torch.get_num_threads()} torch threads")
    print("| setting | seconds | exact F1 | lenient F1 | entities | reference's found | own in reference |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    reference: list[set[tuple]] | None = None
    runs = {}
    for name, (ner, options) in settings.items():
        alone = options.pop("alone", False)
        ner(texts[:1], **options)  # warm-up
        started = time.perf_counter()
        outputs = [ner(text, **options) for text in texts] if alone else ner(texts, **options)
        seconds = time.perf_counter() - started
        runs[name] = outputs
        predicted = {doc.id: [Entity.from_prediction(e) for e in entities] for doc, entities in zip(documents, outputs)}
        report = score(gold, predicted).to_dict()
        found = [keys(entities) for entities in outputs]
        reference = reference or found
        common = sum(len(a & b) for a, b in zip(found, reference))
        total_reference, total_own = sum(map(len, reference)), sum(map(len, found))
        print(
            f"| {name} | {seconds:.1f} | {report['exact']['f1']:.4f} | {report['lenient']['f1']:.4f} | {total_own} | "
            f"{common / max(total_reference, 1):.2%} | {common / max(total_own, 1):.2%} |"
        )
    fp32_alone = [full(text) for text in texts]
    for name, listed, alone in (
        ("fp32", runs["fp32, default overlap"], fp32_alone),
        ("int8", runs["int8 ONNX Runtime, one list"], runs["int8 ONNX Runtime, one report at a time"]),
    ):
        differ = sum(keys(a) != keys(b) for a, b in zip(listed, alone))
        print(f"{name}: {differ} of {len(texts)} reports get other entities alone than inside the list")


if __name__ == "__main__":
    main()
