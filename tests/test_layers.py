"""The layering policy: properties on random entity sets, plus hand-made cases."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dataset.entities import Entity
from hf_dataset.layers import WordIndex, decode, encode, is_misaligned, label_names, word_ranges
from hf_pipeline.words import decode_bio, word_spans

TYPES = ["Finding", "Anatomical_Entity", "Degree", "Abbreviation"]
WORDS = ["Leve", "dilatación", "de", "la", "pelvis", "renal", "del", "RD", ",", "sin", "quiste", "."]
TEXT = " ".join(WORDS)
SPANS = word_spans(TEXT)


@st.composite
def entity_sets(draw):
    """Random word-aligned entities (some discontinuous, some duplicated) over TEXT."""
    entities = []
    for _ in range(draw(st.integers(0, 14))):
        first = draw(st.integers(0, len(SPANS) - 1))
        last = draw(st.integers(first, min(first + 5, len(SPANS) - 1)))
        fragments = [(SPANS[first][0], SPANS[last][1])]
        if draw(st.booleans()) and last + 2 < len(SPANS):
            gap_end = draw(st.integers(last + 2, len(SPANS) - 1))
            fragments.append((SPANS[gap_end][0], SPANS[gap_end][1]))
        entities.append(Entity(draw(st.sampled_from(TYPES)), tuple(fragments), id=f"T{len(entities) + 1}"))
    if entities and draw(st.booleans()):
        entities.append(entities[0])
    return entities


def is_valid_iob2(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


@settings(max_examples=300, deadline=None)
@given(entity_sets(), st.sampled_from(["hull", "split"]), st.integers(1, 4))
def test_layering_properties(entities, mode, max_layers):
    encoding = encode(TEXT, entities, TYPES, max_layers=max_layers, mode=mode)
    # Every layer is valid IOB2 and entities in one layer never share a word.
    assert all(is_valid_iob2(layer) for layer in encoding.tags)
    encoded = {}
    for index, entity in enumerate(entities):
        layer = encoding.layer_of[index]
        if layer:
            encoded[entity] = layer
    for layer in range(1, max_layers + 1):
        words = [
            w
            for e, n in encoded.items()
            if n == layer
            for r in word_ranges(e, SPANS, mode)
            for w in range(r[0], r[1] + 1)
        ]
        assert len(words) == len(set(words))
    # Accounting: every entity is encoded, merged, or dropped (all are word-aligned, so none invalid).
    assert encoding.encoded + encoding.merged + encoding.dropped == len(entities)
    # Round trip: decoding gives back exactly the encoded word spans, each in its own layer.
    decoded = {(layer, span.type, span.first, span.last) for layer, span in decode(encoding.tags)}
    expected = {(n, e.type, *r) for e, n in encoded.items() for r in word_ranges(e, SPANS, mode)}
    assert decoded == expected


def test_sort_order_longer_first_then_type_order_and_depth_drop():
    rd = TEXT.index("RD")
    pelvis = TEXT.index("pelvis")
    entities = [
        Entity("Abbreviation", ((rd, rd + 2),), "T1"),
        Entity("Anatomical_Entity", ((pelvis, rd + 2),), "T2"),
        Entity("Finding", ((0, rd + 2),), "T3"),
        Entity("Degree", ((rd, rd + 2),), "T4"),
        Entity("Abbreviation", ((rd, rd + 2),), "T5"),  # exact duplicate of T1: merged
    ]
    encoding = encode(TEXT, entities, TYPES, max_layers=3)
    assert encoding.layer_of == [0, 2, 1, 3, 0]  # Degree comes before Abbreviation in type order
    assert (encoding.encoded, encoding.merged, encoding.dropped) == (3, 1, 1)
    assert encoding.tags[0][0] == "B-Finding" and encoding.tags[1][4] == "B-Anatomical_Entity"
    assert encoding.tags[2][7] == "B-Degree"


def test_misaligned_boundary_is_expanded_and_counted():
    start = TEXT.index("dilatación")
    entity = Entity("Finding", ((start + 2, start + 6),), "T1")
    assert is_misaligned(entity, SPANS)
    encoding = encode(TEXT, [entity], TYPES)
    assert encoding.misaligned == 1 and encoding.tags[0][1] == "B-Finding"


def test_discontinuous_hull_versus_split():
    first, second = SPANS[4], SPANS[7]
    entity = Entity("Anatomical_Entity", (first, second), "T1")
    hull = encode(TEXT, [entity], TYPES, mode="hull")
    split = encode(TEXT, [entity], TYPES, mode="split")
    assert hull.tags[0][4:8] == ["B-Anatomical_Entity"] + ["I-Anatomical_Entity"] * 3
    assert split.tags[0][4:8] == ["B-Anatomical_Entity", "O", "O", "B-Anatomical_Entity"]
    assert hull.discontinuous == split.discontinuous == 1


def test_entity_covering_no_word_is_reported():
    encoding = encode("a  b", [Entity("Finding", ((1, 3),), "T1")], TYPES)
    assert encoding.uncovered == [0] and encoding.layer_of == [0]


def test_label_names_same_order_everywhere():
    assert label_names(["A", "B"]) == ["O", "B-A", "I-A", "B-B", "I-B"]


def test_decoder_repairs_orphan_inside_tags():
    assert [(s.type, s.first, s.last) for s in decode_bio(["I-A", "I-A", "B-A", "I-B", "O", "I-A"])] == [
        ("A", 0, 1),
        ("A", 2, 2),
        ("B", 3, 3),
        ("A", 5, 5),
    ]


def test_word_tokenizer_offsets_on_hard_text():
    text = "Cafe\u0301 \r\n\tRD-3,5mm 👍🏽 x\x00y ñandú_2"
    spans = word_spans(text)
    tokens = [text[s:e] for s, e in spans]
    assert "Cafe\u0301" in tokens and "👍" in tokens and "\x00" in tokens
    assert all(not text[s:e].isspace() for s, e in spans)
    assert all(e > s for s, e in spans) and spans == sorted(spans)


def test_fragments_listed_out_of_order_are_layered_by_their_sorted_fragments():
    late, early = SPANS[7], SPANS[0]  # "RD" listed before "Leve"
    entity = Entity("Finding", (late, early))
    assert word_ranges(entity, SPANS, "split") == [(0, 0), (7, 7)]
    assert word_ranges(entity, SPANS, "hull") == [(0, 7)]
    encoding = encode(TEXT, [entity, Entity("Degree", (early, late))], TYPES, mode="split")
    assert encoding.tags[0][0] == "B-Finding" and encoding.tags[0][7] == "B-Finding"
    assert encoding.layer_of == [1, 2]


def test_letters_glued_to_digits_are_separate_words():
    # Gold boundaries between a number and its unit or word ("150con", "5mm", "T12") are word boundaries.
    text = "150con 5mm T12 3,5cm² Café2"
    assert [text[s:e] for s, e in word_spans(text)] == [
        "150", "con", "5", "mm", "T", "12", "3", ",", "5", "cm²", "Café", "2"
    ]  # fmt: skip
    assert not is_misaligned(Entity("Measure", ((7, 8),)), word_spans(text))


@settings(max_examples=100, deadline=None)
@given(entity_sets(), st.sampled_from(["hull", "split"]))
def test_prebuilt_word_index_gives_the_same_ranges(entities, mode):
    index = WordIndex.of(SPANS)
    for entity in entities:
        assert word_ranges(entity, index, mode) == word_ranges(entity, SPANS, mode)
        assert is_misaligned(entity, index) == is_misaligned(entity, SPANS)
