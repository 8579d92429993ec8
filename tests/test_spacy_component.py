"""The spaCy component ``radiology_ner``: the pipeline's entities in ``doc.spans``, batched, in DocBin and displaCy."""

from __future__ import annotations

import re

import pytest
import spacy
from spacy import displacy
from spacy.tokens import DocBin, Span

import hf_pipeline
from hf_dataset import SAMPLE_CORPUS, read_corpus
from hf_pipeline.spacy_component import SPANS_KEY, register_extensions, set_entities

from .helpers import REPORT, run_fresh, sample_texts, synthetic_reports

# Entities of one text, as the pipeline gives them: nested four deep, two labels on one span ("RD"), and two
# Measures inside the spaCy token "7,2" (the project's words split it into "7", ",", "2").
TEXT = "Leve dilatación de la pelvis renal del RD de 7,2cm."
ENTITIES = [
    {"entity_group": "Finding", "score": 0.9, "word": TEXT[0:41], "start": 0, "end": 41, "layer": 1},
    {"entity_group": "Degree", "score": 0.8, "word": "Leve", "start": 0, "end": 4, "layer": 2},
    {"entity_group": "Anatomical_Entity", "score": 0.7, "word": TEXT[22:41], "start": 22, "end": 41, "layer": 2},
    {"entity_group": "Anatomical_Entity", "score": 0.6, "word": "RD", "start": 39, "end": 41, "layer": 3},
    {"entity_group": "Abbreviation", "score": 0.5, "word": "RD", "start": 39, "end": 41, "layer": 4},
    {"entity_group": "Measure", "score": 0.4, "word": "7", "start": 45, "end": 46, "layer": 1},
    {"entity_group": "Measure", "score": 0.3, "word": "2", "start": 47, "end": 48, "layer": 1},
]


def records(doc, key: str = SPANS_KEY) -> list[tuple]:
    """Each span of ``doc.spans[key]`` as the pipeline's (entity_group, start, end, layer, word)."""
    return [(s.label_, s._.exact_start, s._.exact_end, s._.layer, s._.exact_text) for s in doc.spans[key]]


def expected(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["start"], e["end"], e["layer"], e["word"]) for e in entities]


def scores(doc) -> list[float]:
    return [span._.score for span in doc.spans[SPANS_KEY]]


@pytest.fixture(scope="module")
def nlp(tiny_bundle):
    nlp = spacy.blank("es")
    nlp.add_pipe("radiology_ner", config={"model": str(tiny_bundle)})
    return nlp


def test_the_component_gives_exactly_the_pipelines_entities_on_the_sample_test_reports(nlp, ner):
    texts = [document.text for document in read_corpus(SAMPLE_CORPUS / "test").documents]
    component = nlp.get_pipe("radiology_ner")
    misaligned = 0
    for text in texts:
        doc, entities = nlp(text), ner(text)
        assert records(doc) == expected(entities) and entities
        assert scores(doc) == pytest.approx([e["score"] for e in entities], abs=1e-6)
        assert doc.spans[SPANS_KEY].attrs["scores"] == pytest.approx(scores(doc))
        for span, entity in zip(doc.spans[SPANS_KEY], entities):
            assert span.start_char <= entity["start"] < entity["end"] <= span.end_char  # the fewest tokens covering it
            assert span[0].idx + len(span[0]) > entity["start"] and span[-1].idx < entity["end"]
            misaligned += (span.start_char, span.end_char) != (entity["start"], entity["end"])
    assert component.misaligned == misaligned > 0  # the tiny model cuts tokens ("7,2" is one spaCy token)


def test_nlp_pipe_over_many_texts_equals_one_call_per_text(nlp, ner):
    texts = [report["text"] for report in synthetic_reports(60)] + sample_texts() + ["", "   "]
    piped = list(nlp.pipe(texts, batch_size=16))
    for text, doc in zip(texts, piped, strict=True):
        alone, entities = nlp(text), ner(text)
        assert doc.text == text and records(doc) == records(alone) == expected(entities)
        assert scores(doc) == pytest.approx(scores(alone), abs=1e-5)


def test_overlapping_misaligned_and_same_offset_entities_each_keep_their_own_attributes():
    doc = spacy.blank("es").make_doc(TEXT)
    assert [token.text for token in doc][9:11] == ["7,2", "cm"]  # "7" and "2" are inside one spaCy token
    misaligned, left_out = set_entities(doc, ENTITIES, set_ents=True)
    assert records(doc) == expected(ENTITIES) and scores(doc) == [e["score"] for e in ENTITIES]
    spans = list(doc.spans[SPANS_KEY])
    assert [s.text for s in spans][-2:] == ["7,2", "7,2"] and [s.id_ for s in spans][-2:] == ["45:46", "47:48"]
    assert {s.id_ for s in spans[:-2]} == {""}  # aligned spans keep the empty id
    assert [(s.label_, s.start_char, s.end_char, s._.layer, s._.score) for s in spans[3:5]] == [
        ("Anatomical_Entity", 39, 41, 3, 0.6),
        ("Abbreviation", 39, 41, 4, 0.5),
    ]  # one token range, each its own layer and score
    assert (misaligned, left_out) == (2, 1)
    assert [(e.label_, e.text, e._.exact_text) for e in doc.ents] == [("Finding", TEXT[0:41], TEXT[0:41]),
                                                                     ("Measure", "7,2", "7")]  # fmt: skip
    assert set_entities(doc, [], "other") == (0, 0) and len(doc.spans["other"]) == 0


def test_set_ents_and_another_spans_key(tiny_bundle, ner):
    nlp = spacy.blank("es")
    nlp.add_pipe("radiology_ner", config={"model": str(tiny_bundle), "spans_key": "sc", "set_ents": True})
    doc = nlp(REPORT)
    assert SPANS_KEY not in doc.spans and records(doc, "sc") == expected(ner(REPORT))
    outer = [span for span in doc.spans["sc"] if span._.layer == 1]
    kept = [(e.label_, e.start_char, e.end_char) for e in doc.ents]
    assert kept and set(kept) <= {(s.label_, s.start_char, s.end_char) for s in outer}
    assert len(kept) + nlp.get_pipe("radiology_ner").ents_left_out == len(outer)


def test_docbin_round_trip_keeps_spans_labels_offsets_layers_and_scores(nlp):
    docs = list(nlp.pipe(sample_texts()[:6]))
    stored = DocBin(store_user_data=True, docs=docs).to_bytes()
    back = list(DocBin().from_bytes(stored).get_docs(spacy.blank("es").vocab))
    assert [records(doc) for doc in back] == [records(doc) for doc in docs]
    assert [scores(doc) for doc in back] == [scores(doc) for doc in docs]
    hand = spacy.blank("es").make_doc(TEXT)
    set_entities(hand, ENTITIES)
    plain = next(DocBin(docs=[hand]).get_docs(spacy.blank("es").vocab))  # no user_data: no layer or score
    exact = [(s.label_, s._.exact_start, s._.exact_end, s._.exact_text) for s in plain.spans[SPANS_KEY]]
    assert exact == [(e["entity_group"], e["start"], e["end"], e["word"]) for e in ENTITIES]
    assert {s._.layer for s in plain.spans[SPANS_KEY]} == {None}


def test_displacy_span_style_draws_every_nested_entity():
    doc = spacy.blank("es").make_doc(TEXT)
    set_entities(doc, ENTITIES)
    html = displacy.render(doc, style="span", options={"spans_key": SPANS_KEY}, jupyter=False)
    blocks = html.split('<span style="font-weight: bold; display: inline-block')[1:]  # one per covered token
    spans = doc.spans[SPANS_KEY]
    covered = [token for token in doc if any(s.start <= token.i < s.end for s in spans)]
    assert len(blocks) == len(covered) == 9  # all but the second "de", "cm" and "."
    for token, block in zip(covered, blocks):
        covering = [s for s in spans if s.start <= token.i < s.end]
        starting = sorted(s.label_ for s in covering if s.start == token.i)
        bars = set(re.findall(r"top: (\d+)px; height: 4px", block))  # a bar per entity, each at its own height
        assert len(bars) == len(covering), token.text
        assert sorted(re.findall(r"font-size: 0.6em[^>]*>\s*(\S+)\s*</span>", block)) == starting, token.text
    rd = blocks[7]  # "RD": Finding, Anatomical_Entity (layer 2), Abbreviation and Anatomical_Entity (layer 3)
    assert len(set(re.findall(r"top: (\d+)px; height: 4px", rd))) == 4 and "Abbreviation" in rd


def test_the_entry_point_registers_the_factory_in_a_process_that_imports_only_spacy(tiny_bundle, tmp_path):
    code = (
        "import spacy\n"
        "nlp = spacy.blank('es')\n"
        f"nlp.add_pipe('radiology_ner', config={{'model': {str(tiny_bundle)!r}}})\n"
        f"doc = nlp({REPORT!r})\n"
        "print(len(doc.spans['radiology_ner']), {s._.layer for s in doc.spans['radiology_ner']} - {None} != set())"
    )
    count, has_layers = run_fresh(code, tmp_path, project=True).split()
    assert int(count) == len(hf_pipeline.load_pipeline(tiny_bundle)(REPORT)) and has_layers == "True"


def test_a_missing_model_and_a_foreign_extension_are_clear_errors(tiny_bundle):
    with pytest.raises(ValueError, match=r'config=\{"model": "path/or/org-name"\}'):
        spacy.blank("es").add_pipe("radiology_ner")
    Span.remove_extension("score")
    Span.set_extension("score", default=0.0)
    try:
        with pytest.raises(ValueError, match=r"Another package registered Span\._\.score.*remove_extension"):
            spacy.blank("es").add_pipe("radiology_ner", config={"model": str(tiny_bundle)})
    finally:
        Span.remove_extension("score")
        register_extensions()
    assert Span.get_extension("score")[2] is not None
