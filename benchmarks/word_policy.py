"""Misaligned gold entities under two word policies: letters and digits split (the project's) or glued.

    python benchmarks/word_policy.py CORPUS [CORPUS ...]

For each brat corpus (split folders or one folder, types taken from the corpus) prints how many entities have
a fragment boundary strictly inside a word when a letter glued to a digit ("5mm", "T12") starts a new word
(:func:`hf_pipeline.radiology_ner.word_spans`) and when it does not. The dataset keeps the policy that
misaligns fewer entities.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

from hf_dataset.builder import read_splits
from hf_dataset.layers import is_misaligned
from hf_pipeline.words import _MARKS, word_spans

_GLUED = re.compile(rf"(?:[^\W_]|[{_MARKS}])+|[^\s{_MARKS}\ufeff]")
Tokenizer = Callable[[str], list[tuple[int, int]]]


def glued_word_spans(text: str) -> list[tuple[int, int]]:
    """The previous policy: a run of letters and digits is one word."""
    return [match.span() for match in _GLUED.finditer(text)]


def misaligned(corpus: str, tokenizer: Tokenizer) -> tuple[int, int]:
    """(entities, misaligned entities) of every split of ``corpus``."""
    corpora, _ = read_splits(corpus, "auto")
    total = count = 0
    for split in corpora.values():
        for document in split.documents:
            words = tokenizer(document.text)
            total += len(document.entities)
            count += sum(is_misaligned(entity, words) for entity in document.entities)
    return total, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpora", nargs="+", help="brat corpus folders")
    args = parser.parse_args()
    print(f"{'corpus':<40}{'entities':>10}{'split':>8}{'glued':>8}")
    for corpus in args.corpora:
        total, split = misaligned(corpus, word_spans)
        _, glued = misaligned(corpus, glued_word_spans)
        print(f"{corpus:<40}{total:>10}{split:>8}{glued:>8}")


if __name__ == "__main__":
    main()
