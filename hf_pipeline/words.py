"""Words, windows and BIO decoding: the pure-Python half of the radiology-ner pipeline (no torch, no transformers).

It travels with every model bundle next to ``radiology_ner.py``, which imports it, and it is the one home of the
word tokenizer, the BIO decoder and the brat ``.ann`` writer that the dataset builder, the trainer, the scorer's
tools and the demo share, so training data and predictions share the same words. Importing it is instant.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Combining marks (accents typed as a separate code point) stay inside the word they modify.
# A byte order mark is not a token (brat counts it as character 0 of a file).
_MARKS = (
    "\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0610-\u061a\u064b-\u065f"
    "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f"
)
# Letters and digits are separate words ("5mm" -> "5", "mm"): fewer gold boundaries fall inside a word.
_WORD_RE = re.compile(rf"(?:[^\W\d_]|[{_MARKS}])+|(?:\d|[{_MARKS}])+|[^\s{_MARKS}\ufeff]")
# A lone surrogate is not a character: no valid UTF-8 text holds one, and tokenizers cannot take it.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Line breaks brat cannot hold inside an annotation's text field (it is one line).
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# Tokens shared by consecutive windows by default: every word is read with at least half of it (32 tokens) of
# context on each side, except at the ends of the text; capped at a fifth of the window so that a long text costs
# at most 1.25x the encoder work of one pass over its tokens.
DEFAULT_STRIDE = 64


def word_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """Split ``text`` (or its characters ``start:end``) into words and single punctuation marks, as end-exclusive
    character spans of ``text``.

    A word is a run of letters (any script) or a run of decimal digits, with their combining marks; a letter
    glued to a digit starts a new word. Every other non-space character is a token of its own. Underscores
    count as punctuation.

    >>> text = "Quiste de 3,5mm en T12."
    >>> [text[s:e] for s, e in word_spans(text)]
    ['Quiste', 'de', '3', ',', '5', 'mm', 'en', 'T', '12', '.']
    """
    return [match.span() for match in _WORD_RE.finditer(text, start, len(text) if end is None else end)]


def invalid_text(text: str) -> str | None:
    """Why ``text`` cannot be predicted (a lone surrogate, which is not valid Unicode), or ``None``.

    >>> invalid_text("Quiste \\ud83d simple")[:45]
    'a lone surrogate (U+D83D) at character 7, whi'
    >>> invalid_text("Quiste simple") is None
    True
    """
    surrogate = _SURROGATE_RE.search(text)
    if surrogate is None:
        return None
    return (
        f"a lone surrogate (U+{ord(surrogate.group()):04X}) at character {surrogate.start()}, which is not valid "
        "Unicode: decode the file with errors='replace' or fix its encoding first"
    )


@dataclass(frozen=True)
class Span:
    """A decoded entity in word indices: words ``first`` to ``last`` inclusive."""

    type: str
    first: int
    last: int


def decode_bio(tags: Sequence[str]) -> list[Span]:
    """Decode one layer of IOB2 tags into entities.

    ``B-T`` starts an entity; ``I-T`` continues it only right after ``B-T``/``I-T`` of the same type;
    an ``I-T`` after ``O`` or another type starts a new entity (lenient repair).

    >>> decode_bio(["B-Finding", "I-Finding", "O", "I-Degree", "B-Measure", "I-Degree"])
    [Span(type='Finding', first=0, last=1), Span(type='Degree', first=3, last=3), \
Span(type='Measure', first=4, last=4), Span(type='Degree', first=5, last=5)]
    """
    spans: list[Span] = []
    current: Span | None = None
    for index, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if prefix == "I" and current is not None and current.type == label and current.last == index - 1:
            current = Span(label, current.first, index)
            spans[-1] = current
        elif prefix in ("B", "I"):
            current = Span(label, index, index)
            spans.append(current)
        else:
            current = None
    return spans


def default_stride(window: int) -> int:
    """The default overlap of consecutive windows: ``DEFAULT_STRIDE`` tokens, at most a fifth of the window.

    >>> default_stride(510), default_stride(126)
    (64, 25)
    """
    return min(DEFAULT_STRIDE, window // 5)


def window_starts(num_tokens: int, window: int, overlap: int | None = None) -> list[int]:
    """Start positions of windows of ``window`` tokens covering ``num_tokens``, consecutive ones sharing
    ``overlap`` tokens (default: :func:`default_stride`); the last window ends at the last token.

    >>> window_starts(10, 4, overlap=2)
    [0, 2, 4, 6]
    >>> window_starts(3, 4)
    [0]
    >>> window_starts(10, 4, overlap=1)
    [0, 3, 6]
    """
    if num_tokens <= window:
        return [0]
    step = max(1, window - (default_stride(window) if overlap is None else overlap))
    starts = list(range(0, num_tokens - window, step))
    return starts + [num_tokens - window]


def locate_words(
    word_ids: Sequence[int | None], starts: Sequence[int], window: int, offset: int
) -> tuple[list[int], list[tuple[int, int]]]:
    """The words that have a subword, and for each the (window index, position in that window) of its first
    subword in the window where it is farthest from an edge; ``offset`` counts the tokens put before each window.

    >>> locate_words([0, 0, 1, 2, 2, 3], [0, 2], 4, offset=1)
    ([0, 1, 2, 3], [(0, 1), (0, 3), (1, 2), (1, 4)])
    """
    first_token = _first_token_of_each_word(word_ids)
    words = sorted(first_token)
    located = []
    for word in words:
        chosen = best_window(first_token[word], starts, window)
        located.append((chosen, offset + first_token[word] - starts[chosen]))
    return words, located


def best_window(position: int, starts: Sequence[int], window: int) -> int:
    """Index of the window in which ``position`` is farthest from an edge (earliest on ties).

    >>> best_window(5, [0, 2, 4, 6], 4)  # windows 0-3, 2-5, 4-7, 6-9: in 4-7 it has a token on each side
    2
    """
    first, last = bisect.bisect_left(starts, position - window + 1), bisect.bisect_right(starts, position)
    return max(range(first, last), key=lambda i: min(position - starts[i], starts[i] + window - 1 - position))


def _first_token_of_each_word(word_ids: Sequence[int | None]) -> dict[int, int]:
    """Position of the first subword of every word that has one (some words tokenize to nothing)."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


def ann_text(text: str, entities: Iterable[tuple[str, Sequence[tuple[int, int]]]]) -> str:
    """A brat ``.ann`` file of ``(type, fragments)`` entities: ids ``T1..Tn`` in order, text taken from ``text``.

    Line breaks inside an entity's text are written as spaces so every annotation stays on one line (the brat
    reader compares text modulo whitespace, so the file reads back to the same entities).

    >>> ann_text("Quiste renal", [("Finding", [(0, 12)]), ("ANAT", [(7, 12)])]).splitlines()
    ['T1\\tFinding 0 12\\tQuiste renal', 'T2\\tANAT 7 12\\trenal']
    """
    lines = []
    for number, (kind, fragments) in enumerate(entities, start=1):
        offsets = ";".join(f"{start} {end}" for start, end in fragments)
        surface = " ".join(text[start:end] for start, end in fragments)
        lines.append(f"T{number}\t{kind} {offsets}\t{_LINE_BREAKS.sub(' ', surface)}\n")
    return "".join(lines)
