"""Where systems differ by entity length: exact recall and precision per length in words, for prediction folders.

    python benchmarks/by_length.py --gold ../shared/corpora/ct-ebm-sp-v2-cases/test \
        --pred runs/q-depth-crf/predictions/test runs/q-type-crf/predictions/test runs/q-span/predictions/test

An entity's length is the number of words (``hf_pipeline.words.word_spans``) its hull covers. Per bucket it prints
the gold entities and the share a folder predicts exactly (type and hull offsets: recall), and the folder's
predictions and the share that are gold (precision). Exact matching here is by type and hull, as the task's exact
F1 for continuous entities.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hf_dataset.brat import read_corpus  # noqa: E402
from hf_dataset.entities import Entity  # noqa: E402
from hf_dataset.layers import WordIndex, word_ranges  # noqa: E402
from hf_pipeline.score import read_predictions  # noqa: E402
from hf_pipeline.words import word_spans  # noqa: E402

BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 7), (8, 10), (11, 10_000))


def key(entity: Entity) -> tuple[str, int, int]:
    return entity.type, min(f[0] for f in entity.fragments), max(f[1] for f in entity.fragments)


def bucket_name(low: int, high: int) -> str:
    return str(low) if low == high else f"{low}-{high}" if high < BUCKETS[-1][1] else f"{low}+"


def bucket(entity: tuple[str, int, int], words: WordIndex) -> str:
    """The length bucket of a ``(type, start, end)`` entity: how many words its hull covers."""
    kind, start, end = entity
    covered = sum(last - first + 1 for first, last in word_ranges(Entity(kind, ((start, end),)), words, "hull"))
    return bucket_name(*next((low, high) for low, high in BUCKETS if covered <= high))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gold", type=Path, required=True)
    parser.add_argument("--pred", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    corpus = read_corpus(args.gold)
    words = {doc.id: WordIndex.of(word_spans(doc.text)) for doc in corpus.documents}
    gold = {doc.id: {key(e): bucket(key(e), words[doc.id]) for e in doc.entities} for doc in corpus.documents}
    gold_count = Counter(name for buckets in gold.values() for name in buckets.values())
    order = [bucket_name(low, high) for low, high in BUCKETS]
    header = ["words", "gold"] + [f"{p.parent.parent.name}: recall / predicted / precision" for p in args.pred]
    rows = {name: [name, str(gold_count[name])] for name in order}
    for folder in args.pred:
        predicted = {d: {key(e) for e in entities} for d, entities in read_predictions(folder, corpus).items()}
        found, made, right = Counter(), Counter(), Counter()
        for doc_id, keys in gold.items():
            mine = predicted.get(doc_id, set())
            for k, name in keys.items():
                found[name] += k in mine
            for k in mine:
                name = bucket(k, words[doc_id])
                made[name] += 1
                right[name] += k in keys
        for name in order:
            recall = found[name] / gold_count[name] if gold_count[name] else 0.0
            precision = right[name] / made[name] if made[name] else 0.0
            rows[name].append(f"{recall:.3f} / {made[name]} / {precision:.3f}")
    print("| " + " | ".join(header) + " |\n|" + " --- |" * len(header))
    for row in rows.values():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
