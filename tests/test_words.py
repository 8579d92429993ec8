"""words.py (the torch-free half of the pipeline) and crf.py (its CRF decoder): properties and hand cases."""

from __future__ import annotations

import itertools
import re
import unicodedata

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dataset.ann import parse_ann
from hf_pipeline.crf import bio_masks, marginals, viterbi
from hf_pipeline.training.crf import LayeredCrf
from hf_pipeline.words import Span, ann_text, best_window, decode_bio, locate_words, window_starts, word_spans

TYPES = ["Finding", "Measure"]
LABELS = ["O", *(f"{prefix}-{kind}" for kind in TYPES for prefix in "BI")]
tags = st.lists(st.sampled_from(LABELS), max_size=30)


# --- decode_bio ---------------------------------------------------------------------------------------------------


@st.composite
def tagged_spans(draw) -> tuple[list[str], list[Span]]:
    """A valid IOB2 layer and the spans it encodes (non-overlapping, any lengths and types)."""
    length = draw(st.integers(0, 30))
    spans, position = [], 0
    while position < length:
        position += draw(st.integers(0, 3))
        size = draw(st.integers(1, 4))
        if position + size > length:
            break
        spans.append(Span(draw(st.sampled_from(TYPES)), position, position + size - 1))
        position += size
    layer = ["O"] * length
    for span in spans:
        layer[span.first : span.last + 1] = [f"B-{span.type}"] + [f"I-{span.type}"] * (span.last - span.first)
    return layer, spans


@given(tagged_spans())
def test_decoding_a_valid_layer_gives_back_its_spans(case):
    layer, spans = case
    assert decode_bio(layer) == spans


@given(tags)
def test_every_tagged_word_is_in_exactly_one_span_and_o_words_in_none(layer):
    spans = decode_bio(layer)
    covered = [index for span in spans for index in range(span.first, span.last + 1)]
    assert sorted(covered) == covered == [i for i, tag in enumerate(layer) if tag != "O"]
    for span in spans:
        assert all(layer[i].endswith(f"-{span.type}") for i in range(span.first, span.last + 1))
        assert all(layer[i].startswith("I-") for i in range(span.first + 1, span.last + 1))


def test_decode_bio_hand_cases():
    assert decode_bio([]) == []
    assert decode_bio(["I-Finding", "I-Finding"]) == [Span("Finding", 0, 1)]  # a leading I starts an entity
    assert decode_bio(["B-Finding", "I-Measure"]) == [Span("Finding", 0, 0), Span("Measure", 1, 1)]
    assert decode_bio(["B-Finding", "B-Finding"]) == [Span("Finding", 0, 0), Span("Finding", 1, 1)]


# --- word_spans ---------------------------------------------------------------------------------------------------


@given(st.text(max_size=60))
def test_words_are_sorted_disjoint_non_space_and_cover_every_visible_character(text):
    spans = word_spans(text)
    assert all(0 <= start < end <= len(text) for start, end in spans)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    covered = {i for start, end in spans for i in range(start, end)}
    for index, char in enumerate(text):
        visible = not char.isspace() and char != "\ufeff" and not unicodedata.category(char).startswith("M")
        if visible:
            assert index in covered, (text, index)
        if char.isspace():
            assert index not in covered
    for start, end in spans:
        word = text[start:end]
        assert not (re.search(r"[^\W\d_]", word) and re.search(r"\d", word)), word  # letters and digits apart
        assert not any(char.isspace() for char in word)


def test_word_spans_hand_cases():
    text = "Riñón\u0301 (RD): 5,4cm\r\nT12."
    assert [text[s:e] for s, e in word_spans(text)] == ["Riñón\u0301", "(", "RD", ")", ":", "5", ",", "4", "cm",
                                                        "T", "12", "."]  # fmt: skip
    assert word_spans("\ufeffHola") == [(1, 5)]
    assert word_spans(" \r\n\t") == []


# --- windows ------------------------------------------------------------------------------------------------------


@given(st.integers(1, 300), st.integers(2, 40), st.data())
def test_windows_cover_every_token_and_overlap_as_asked(num_tokens, window, data):
    overlap = data.draw(st.integers(0, window - 1))
    starts = window_starts(num_tokens, window, overlap)
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert min(num_tokens, starts[-1] + window) == num_tokens
    for first, second in zip(starts, starts[1:]):
        assert second <= first + window  # no gap
        assert second - first == max(1, window - overlap) or second == num_tokens - window
    for position in range(num_tokens):
        chosen = best_window(position, starts, window)
        assert starts[chosen] <= position < starts[chosen] + window


def test_locate_words_reads_each_word_where_it_has_the_most_context():
    word_ids = [0, 0, 1, 2, 2, 3, None]
    words, located = locate_words(word_ids, [0, 3], 4, offset=1)
    assert words == [0, 1, 2, 3]
    # word 2 (token 3) is at an edge of both windows (a tie: the earlier one); word 3 exists in window 1 only
    assert located == [(0, 1), (0, 3), (0, 4), (1, 3)]
    words, located = locate_words([0, 1, 2, 3, 4, 5], [0, 2], 4, offset=0)  # token 3: inside window 1 only
    assert located == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (1, 3)]


# --- brat writer --------------------------------------------------------------------------------------------------


def test_ann_text_reads_back_to_the_same_entities():
    text = "Quiste\r\nsimple de 3 mm.\u2028Sin cambios."
    entities = [("Finding", [(0, 14)]), ("Measure", [(18, 22)]), ("Finding", [(0, 6), (24, 27)])]
    written = ann_text(text, entities)
    assert written.count("\n") == 3 and "\r" not in written and "\u2028" not in written
    read_back, problems = parse_ann(written, text, "x.ann")
    assert not problems
    assert [(e.type, [list(f) for f in e.fragments]) for e in read_back] == [
        (kind, [list(f) for f in fragments]) for kind, fragments in entities
    ]


# --- the CRF: decoder (numpy) and training loss (torch) agree with brute force --------------------------------------

CRF_LABELS = ["O", "B-X", "I-X", "B-Y", "I-Y"]


def valid_paths(length: int, labels: list[str]) -> list[tuple[int, ...]]:
    allowed, start = bio_masks(labels)
    return [
        path
        for path in itertools.product(range(len(labels)), repeat=length)
        if start[path[0]] and all(allowed[a, b] for a, b in zip(path, path[1:]))
    ]


def path_score(path, emissions, transitions) -> float:
    return float(sum(emissions[i, label] for i, label in enumerate(path)) + sum(
        transitions[a, b] for a, b in zip(path, path[1:])))  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_viterbi_and_marginals_match_brute_force_over_valid_paths(length, seed):
    rng = np.random.default_rng(seed)
    emissions, transitions = rng.normal(size=(length, 5)), rng.normal(size=(5, 5))
    paths = valid_paths(length, CRF_LABELS)
    scores = np.array([path_score(p, emissions, transitions) for p in paths])
    assert tuple(viterbi(emissions, transitions, CRF_LABELS)) == paths[int(scores.argmax())]
    probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    expected = np.zeros((length, 5))
    for path, probability in zip(paths, probabilities):
        expected[np.arange(length), list(path)] += probability
    np.testing.assert_allclose(marginals(emissions, transitions, CRF_LABELS), expected, atol=1e-9)
    best = [CRF_LABELS[i] for i in viterbi(emissions, transitions, CRF_LABELS)]
    assert encode_spans(decode_bio(best), length) == best  # IOB2-valid: no I- that the decoder must repair


def encode_spans(spans: list[Span], length: int) -> list[str]:
    """The IOB2 tags of non-overlapping spans (the inverse of ``decode_bio`` on valid tags)."""
    tags = ["O"] * length
    for span in spans:
        tags[span.first : span.last + 1] = [f"B-{span.type}"] + [f"I-{span.type}"] * (span.last - span.first)
    return tags


def test_training_loss_is_the_negative_log_likelihood_of_the_gold_path():
    """The batched torch loss, with words spread among -100 tokens, equals -log p(gold) by brute force (no start
    constraint in training: a window may start inside an entity)."""
    torch.manual_seed(0)
    crf = LayeredCrf(CRF_LABELS, layers=2)
    crf.transitions.data.normal_()
    logits = torch.randn(1, 6, 2 * 5)
    labels = torch.tensor([[[-100, -100], [2, 0], [-100, -100], [0, 3], [1, 4], [-100, -100]]])
    loss = crf.negative_log_likelihood(logits, labels)
    allowed, _ = bio_masks(CRF_LABELS)
    expected = 0.0
    for layer in range(2):
        emissions = logits[0, [1, 3, 4]].view(3, 2, 5)[:, layer].double().numpy()
        transitions = crf.transitions[layer].detach().double().numpy()
        paths = [p for p in itertools.product(range(5), repeat=3) if all(allowed[a, b] for a, b in zip(p, p[1:]))]
        log_z = np.log(sum(np.exp(path_score(p, emissions, transitions)) for p in paths))
        gold = tuple(int(label) for label in labels[0, [1, 3, 4], layer])
        expected += log_z - path_score(gold, emissions, transitions)
    assert loss.item() == pytest.approx(expected / 3, rel=1e-5)
    loss.backward()
    assert crf.transitions.grad is not None and crf.transitions.grad.abs().sum() > 0
