"""Schemes and heads: tags to entities (merge, nesting layer), the type scheme's encoding and its oracle."""

from __future__ import annotations

import datasets
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dataset.entities import Entity
from hf_dataset.layers import encode
from hf_pipeline.heads import HEADS
from hf_pipeline.schemes import Predicted, nesting_layers, output_entities, tags_to_entities, type_labels
from hf_pipeline.training.schemes import DepthEncoding, TypeEncoding
from hf_pipeline.words import word_spans

TYPES = ["Finding", "ANAT", "Degree"]
LABELS = ["O"] + [f"{p}-{t}" for t in TYPES for p in ("B", "I")]
TEXT = "leve dilatación de la pelvis renal del riñón derecho"
WORDS = word_spans(TEXT)


@st.composite
def word_aligned_entities(draw: st.DrawFn) -> list[Predicted]:
    spans = draw(
        st.lists(
            st.tuples(st.sampled_from(TYPES), st.integers(0, len(WORDS) - 1), st.integers(0, 3)),
            max_size=12,
            unique_by=lambda t: (t[0], t[1], min(t[1] + t[2], len(WORDS) - 1)),
        )
    )
    return [Predicted(k, WORDS[f][0], WORDS[min(f + n, len(WORDS) - 1)][1], 1.0) for k, f, n in spans]


@settings(max_examples=200, deadline=None)
@given(word_aligned_entities())
def test_nesting_layer_is_the_datasets_layering_policy_without_a_depth_bound(entities):
    """The output ``layer`` of every scheme is the layer the dataset's own encoder gives among the predictions."""
    reference = encode(
        TEXT, [Entity(e.type, ((e.start, e.end),)) for e in entities], TYPES, max_layers=len(entities) + 1
    )
    assert nesting_layers(entities, TYPES) == reference.layer_of


def test_an_entity_two_sequences_predict_is_returned_once_with_its_best_score():
    tags = [["B-Finding", "I-Finding", "O"], ["B-Finding", "I-Finding", "B-ANAT"]]
    entities, merged = tags_to_entities(tags, [[0.2, 0.4, 0.0], [0.9, 0.7, 0.6]], WORDS[:3])
    assert merged == 1
    assert sorted((e.type, e.start, e.end, round(e.score, 3)) for e in entities) == [
        ("ANAT", 16, 18, 0.6),
        ("Finding", 0, 15, 0.8),
    ]
    found = output_entities(TEXT, entities, TYPES)
    assert [(e["word"], e["layer"]) for e in found] == [("leve dilatación", 1), ("de", 1)]


def test_heads_decode_every_sequence_and_the_crf_never_opens_with_an_inside_tag():
    probabilities = np.full((3, 2, 3), 0.05, dtype=np.float32)
    probabilities[:, :, 0] = 0.9
    probabilities[0, 1] = [0.299, 0.001, 0.7]  # alone, word 0 of sequence 1 would be I-ANAT
    labels = [type_labels("Finding"), type_labels("ANAT")]
    entities, merged = HEADS["softmax"].entities(probabilities, labels, [None, None], WORDS[:3])
    assert [(e.type, e.start, e.end, round(e.score, 3)) for e in entities] == [("ANAT", *WORDS[0], 0.7)]
    transitions = [np.zeros((3, 3)), np.zeros((3, 3))]
    entities, merged = HEADS["crf"].entities(probabilities, labels, transitions, WORDS[:3])
    assert entities == [] and merged == 0


def _dataset(rows: list[dict]) -> datasets.DatasetDict:
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "token_offsets": datasets.List(datasets.List(datasets.Value("int32"))),
            **{f"ner_tags_{k}": datasets.List(datasets.ClassLabel(names=LABELS)) for k in (1, 2, 3)},
            "entities": datasets.List(
                {
                    "id": datasets.Value("string"),
                    "type": datasets.Value("string"),
                    "fragments": datasets.List(datasets.List(datasets.Value("int32"))),
                    "text": datasets.Value("string"),
                    "layer": datasets.Value("int32"),
                }
            ),
        }
    )
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features)})


def _row(entities: list[tuple[str, int, int]]) -> dict:
    depth = encode(TEXT, [Entity(t, ((s, e),)) for t, s, e in entities], TYPES, max_layers=3, words=WORDS)
    return {
        "id": "r1",
        "text": TEXT,
        "token_offsets": [list(w) for w in WORDS],
        **{f"ner_tags_{k}": [LABELS.index(tag) for tag in depth.tags[k - 1]] for k in (1, 2, 3)},
        "entities": [
            {"id": f"T{n}", "type": t, "fragments": [[s, e]], "text": TEXT[s:e], "layer": layer}
            for n, ((t, s, e), layer) in enumerate(zip(entities, depth.layer_of), start=1)
        ],
    }


def test_type_scheme_adds_sub_layers_only_where_entities_of_one_type_overlap():
    # "pelvis renal del riñón derecho" ANAT holds "riñón derecho" ANAT: a second ANAT sequence; Finding holds both.
    entities = [("Finding", 0, 52), ("ANAT", 22, 52), ("ANAT", 39, 52), ("Degree", 0, 4)]
    dataset = _dataset([_row(entities)])
    scheme = TypeEncoding(dataset, [1, 2, 3])
    assert scheme.sequences == [("Finding", 1), ("ANAT", 1), ("ANAT", 2), ("Degree", 1)]
    assert scheme.sequence_labels[2] == ["O", "B-ANAT", "I-ANAT"]
    row = dataset["train"][0]
    oracle = {(e.type, e.start, e.end) for e in scheme.oracle(row)}
    assert oracle == set(entities)
    assert scheme.statistics(dataset["train"])["encoded"] == 4
    capped = TypeEncoding(dataset, [1, 2, 3], max_sublayers=1)
    assert capped.sequences == [("Finding", 1), ("ANAT", 1), ("Degree", 1)]
    assert capped.statistics(dataset["train"])["dropped"] == 1
    assert len(capped.oracle(row)) == 3


def test_depth_scheme_is_the_datasets_own_tags_and_its_oracle_their_decoding():
    entities = [("Finding", 0, 52), ("ANAT", 22, 52), ("ANAT", 39, 52), ("Degree", 0, 4)]
    dataset = _dataset([_row(entities)])
    row = dataset["train"][0]
    depth = DepthEncoding(dataset, [1, 2, 3])
    assert depth.word_labels(row) == [row["ner_tags_1"], row["ner_tags_2"], row["ner_tags_3"]]
    assert {(e.type, e.start, e.end) for e in depth.oracle(row)} == set(entities)
    assert [e.type for e in DepthEncoding(dataset, [2]).gold(row)] == ["ANAT", "Degree"]
