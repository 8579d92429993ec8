"""Gold entities whose boundary falls inside a spaCy token: what the ``radiology_ner`` spaCy component must widen.

    python benchmarks/spacy_alignment.py CORPUS [CORPUS ...]

For each brat corpus (split folders or one folder, types taken from the corpus) prints how many entities have a
fragment boundary strictly inside a token of ``spacy.blank("es")`` (such an entity becomes a span of the tokens
that cover it, ``alignment_mode="expand"``, with its exact offsets as ``span._.exact_start`` / ``exact_end``), and,
beside it, inside a word of the project's own word tokenizer (what the dataset counts as misaligned). The last
columns split the spaCy count: a start inside a token, an end inside a token (an entity may have both), and three
examples.
"""

from __future__ import annotations

import argparse
import bisect
import sys
from pathlib import Path

import spacy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hf_dataset.builder import read_splits  # noqa: E402
from hf_dataset.layers import WordIndex, is_misaligned  # noqa: E402
from hf_pipeline.words import word_spans  # noqa: E402


def inside(boundary: int, index: WordIndex) -> bool:
    """True when ``boundary`` falls strictly inside one of ``index``'s words."""
    word = bisect.bisect_right(index.starts, boundary) - 1
    return word >= 0 and index.starts[word] < boundary < index.ends[word]


def count(corpus: str, nlp: spacy.Language) -> dict[str, object]:
    corpora, _ = read_splits(corpus, "auto")
    result: dict[str, object] = {"entities": 0, "spacy": 0, "words": 0, "start": 0, "end": 0, "examples": []}
    for split in corpora.values():
        for document in split.documents:
            doc = nlp.make_doc(document.text)
            tokens = WordIndex.of([(t.idx, t.idx + len(t)) for t in doc])
            words = WordIndex.of(word_spans(document.text))
            for entity in document.entities:
                result["entities"] += 1
                result["words"] += is_misaligned(entity, words)
                if not is_misaligned(entity, tokens):
                    continue
                result["spacy"] += 1
                result["start"] += any(inside(start, tokens) for start, _ in entity.fragments)
                result["end"] += any(inside(end, tokens) for _, end in entity.fragments)
                if len(result["examples"]) < 3:
                    cut = next(b for fragment in entity.fragments for b in fragment if inside(b, tokens))
                    token = next(t for t in doc if t.idx < cut < t.idx + len(t))
                    result["examples"].append(
                        f"{entity.type} {entity.text!r}: a boundary inside the token {token.text!r}"
                    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="brat corpus folders")
    args = parser.parse_args()
    nlp = spacy.blank("es")
    print(f"{'corpus':<24}{'entities':>10}{'in a spaCy token':>18}{'%':>7}{'in a word':>11}{'start':>7}{'end':>6}")
    for corpus in args.corpora:
        found = count(corpus, nlp)
        share = 100 * found["spacy"] / max(found["entities"], 1)
        print(f"{Path(corpus).name:<24}{found['entities']:>10}{found['spacy']:>18}{share:>7.2f}{found['words']:>11}"
              f"{found['start']:>7}{found['end']:>6}")  # fmt: skip
        for example in found["examples"]:
            print(f"    {example}")


if __name__ == "__main__":
    main()
