"""The brat reader and writer: formats, validation messages, real CRLF data."""

from __future__ import annotations

from pathlib import Path

import pytest

from hf_dataset.ann import parse_ann, write_ann
from hf_dataset.brat import BratError, read_corpus
from hf_dataset.entities import Entity

TEXT = "Riñones derecho e izquierdo\tde 7 cm. No hay quiste.\n"


def write_pair(folder: Path, name: str, text: str, ann: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8", newline="")
    (folder / f"{name}.ann").write_text(ann, encoding="utf-8", newline="")


def test_discontinuous_fragments_listed_out_of_order_are_valid_and_kept_as_listed():
    # brat joins the text field in the listed order (a real corpus has `T74 Observation 1127 1139;949 959`).
    entities, problems = parse_ann("T1\tAnatomical_Entity 18 27;0 7\tizquierdo Riñones\n", TEXT, "x.ann")
    assert problems == []
    entity = entities[0]
    assert entity.fragments == ((18, 27), (0, 7)) and entity.sorted_fragments == ((0, 7), (18, 27))
    assert entity.text == "izquierdo Riñones" and (entity.start, entity.end) == (0, 27)
    assert entity == Entity("Anatomical_Entity", ((0, 7), (18, 27)))


def test_text_field_in_sorted_order_for_unsorted_fragments_is_a_mismatch():
    _, problems = parse_ann("T1\tAnatomical_Entity 18 27;0 7\tRiñones izquierdo\n", TEXT, "x.ann")
    assert len(problems) == 1 and "the .ann says 'Riñones izquierdo'" in problems[0].message


def test_text_field_containing_a_tab():
    start = TEXT.index("izquierdo")
    entities, problems = parse_ann(f"T1\tFinding {start} {start + 14}\tizquierdo\tde 7\n", TEXT, "x.ann")
    assert problems == []
    assert entities[0].text == "izquierdo\tde 7"


def test_leading_tab_in_text_field_is_kept_as_whitespace():
    text = "a\tquiste"
    entities, problems = parse_ann("T1\tFinding 1 8\t\tquiste\n", text, "x.ann")
    assert problems == [] and entities[0].fragments == ((1, 8),)


def test_multiline_annotation_text_is_joined():
    text = "Quiste\nsimple en RD."
    ann = "T1\tFinding 0 13\tQuiste\nsimple\nT2\tAbbreviation 17 19\tRD\n"
    entities, problems = parse_ann(ann, text, "x.ann")
    assert problems == []
    assert [e.id for e in entities] == ["T1", "T2"]


def test_text_field_over_several_lines_with_blank_lines_is_one_entity():
    # A real case report (caso_112) stores a 267-character span verbatim: 10 physical lines, 3 of them blank.
    text = "MOTIVO DE CONSULTA:\n\nVarón de 59 años.\n\n\nHISTORIA CLÍNICA:\n- No hábitos tóxicos.\nFin"
    end = text.index("\nFin")
    ann = f"T1\tDISO 0 {end}\t{text[:end]}\nT2\tDISO 0 6\tMOTIVO\n#1\tAnnotatorNotes T2\tnote\n"
    entities, problems = parse_ann(ann, text, "x.ann")
    assert problems == []
    assert [(e.id, e.fragments) for e in entities] == [("T1", ((0, end),)), ("T2", ((0, 6),))]


def test_crlf_text_field_over_several_lines_keeps_its_line_breaks():
    text = "Quiste\r\n\r\nsimple"
    ann = "T1\tFinding 0 16\tQuiste\r\n\r\nsimple\r\nT2\tFinding 0 6\tQuiste\r\n"
    entities, problems = parse_ann(ann, text, "x.ann")
    assert problems == [] and [e.id for e in entities] == ["T1", "T2"]


@pytest.mark.parametrize(
    "line",
    [
        "R1\tScope Arg1:T1 Arg2:T2",
        "A1\tNegated T1",
        "E1\tFinding:T1",
        "N1\tReference T1 Wikipedia:123\tquiste",
        "#1\tAnnotatorNotes T1\tnote",
        "*\tEquiv T1 T2",
        "M1\tNegation T1",
    ],
)
def test_non_entity_lines_are_skipped(line):
    entities, problems = parse_ann(f"T1\tFinding 0 7\tRiñones\n{line}\n", TEXT, "x.ann")
    assert problems == [] and len(entities) == 1


def test_bom_in_ann_is_ignored():
    entities, problems = parse_ann("\ufeffT1\tFinding 0 7\tRiñones\n", TEXT, "x.ann")
    assert problems == [] and entities[0].type == "Finding"


def test_bom_in_txt_counts_as_character_zero(tmp_path):
    write_pair(tmp_path, "a", "\ufeffQuiste simple", "T1\tFinding 1 7\tQuiste\n")
    doc = read_corpus(tmp_path).documents[0]
    assert doc.text[1:7] == "Quiste"


@pytest.mark.parametrize(
    ("ann", "expected"),
    [
        ("T1\tFinding 0 7 Riñones\n", "cannot read"),
        ("T1\tFinding 0 x\tRiñones\n", "cannot read type and offsets"),
        ("T1\tFinding 0 999\tRiñones\n", "outside the text"),
        ("T1\tFinding 5 5\t\n", "empty or outside"),
        ("T1\tFinding 0 7\tRiñón\n", "the .ann says 'Riñón'"),
        ("X1\tsomething\n", "cannot read"),
    ],
)
def test_invalid_lines_are_reported_with_file_and_line(tmp_path, ann, expected):
    write_pair(tmp_path, "doc", TEXT, "T9\tDegree 0 7\tRiñones\n" + ann)
    with pytest.raises(BratError) as error:
        read_corpus(tmp_path)
    assert f"{tmp_path / 'doc.ann'}:2:" in str(error.value) and expected in str(error.value)
    assert "--skip_invalid" in str(error.value)


def test_all_mismatches_reported_together_or_skipped_and_counted(tmp_path):
    for name in ("a", "b"):
        write_pair(tmp_path, name, TEXT, "T1\tFinding 0 7\tXXX\nT2\tFinding 8 15\tderecho\nT3\tDegree 0 7\tYYY\n")
    with pytest.raises(BratError) as error:
        read_corpus(tmp_path)
    assert f"{tmp_path}: 4 invalid annotation(s) in 2 file(s)" in str(error.value)
    corpus = read_corpus(tmp_path, skip_invalid=True)
    assert len(corpus.invalid) == 4
    assert [len(doc.entities) for doc in corpus.documents] == [1, 1]


def test_unpaired_files_are_named(tmp_path):
    write_pair(tmp_path, "a", TEXT, "")
    (tmp_path / "b.txt").write_text("x", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.ann").write_text("", encoding="utf-8")
    with pytest.raises(BratError) as error:
        read_corpus(tmp_path)
    assert "b.txt has no .ann" in str(error.value) and "c.ann has no .txt" in str(error.value)


def test_non_utf8_file_names_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_bytes("línea uno\nriñón".encode("latin-1"))
    (tmp_path / "a.ann").write_text("", encoding="utf-8")
    with pytest.raises(BratError, match=r"a\.txt:1: not valid UTF-8.*iconv"):
        read_corpus(tmp_path)


def test_ids_are_relative_paths_without_extension(tmp_path):
    write_pair(tmp_path / "abdomen", "r1", TEXT, "")
    assert read_corpus(tmp_path).documents[0].id == "abdomen/r1"


def test_crlf_offsets_on_real_nubes_iula(corpora):
    corpus = read_corpus(corpora / "nubes" / "IULA+")
    assert len(corpus.documents) == 7 and corpus.invalid == []
    crlf_entities = 0
    for doc in corpus.documents:
        assert "\r\n" in doc.text
        for entity in doc.entities:
            for start, end in entity.fragments:
                assert doc.text[start:end] in entity.text
            crlf_entities += "\r" in doc.text[: entity.start]
    assert crlf_entities > 1000  # almost every entity sits after a CRLF: translation would shift them


def test_writer_round_trip_keeps_fragments_and_handles_line_breaks(tmp_path):
    text = "Quiste\r\nsimple en el RD y en el RI.\n"
    entities = [
        Entity("Finding", ((0, 14),)),
        Entity("Abbreviation", ((25, 27),)),
        Entity("Anatomical_Entity", ((22, 27), (34, 36))),
    ]
    write_ann(tmp_path / "a.ann", text, entities)
    (tmp_path / "a.txt").write_text(text, encoding="utf-8", newline="")
    assert len((tmp_path / "a.ann").read_text(encoding="utf-8").splitlines()) == 3
    read_back = read_corpus(tmp_path).documents[0].entities
    assert read_back == entities
    assert [e.id for e in read_back] == ["T1", "T2", "T3"]


def test_duplicate_t_ids_name_both_lines_or_keep_the_first_when_skipped(tmp_path):
    write_pair(tmp_path, "a", TEXT, "T1\tFinding 0 7\tRiñones\nA1\tNegated T1\nT1\tDegree 8 15\tderecho\n")
    with pytest.raises(BratError) as error:
        read_corpus(tmp_path)
    assert f"{tmp_path / 'a.ann'}:3: T1: the same id is already used on line 1" in str(error.value)
    corpus = read_corpus(tmp_path, skip_invalid=True)
    assert [(e.id, e.type) for e in corpus.documents[0].entities] == [("T1", "Finding")]
    assert [(p.line, p.entity_id) for p in corpus.invalid] == [(3, "T1")]


def test_a_folder_named_like_a_text_file_is_a_folder(tmp_path):
    write_pair(tmp_path / "x.txt", "r1", TEXT, "T1\tFinding 0 7\tRiñones\n")
    assert [doc.id for doc in read_corpus(tmp_path).documents] == ["x.txt/r1"]


def test_unreadable_files_and_invalid_annotations_are_reported_together(tmp_path):
    write_pair(tmp_path, "a", TEXT, "T1\tFinding 0 7\tXXX\n")
    (tmp_path / "b.txt").write_bytes("riñón".encode("latin-1"))
    (tmp_path / "b.ann").write_text("", encoding="utf-8")
    (tmp_path / "c.ann").write_text("", encoding="utf-8")
    for skip_invalid in (False, True):
        with pytest.raises(BratError) as error:
            read_corpus(tmp_path, skip_invalid=skip_invalid)
        message = str(error.value)
        assert "b.txt:1: not valid UTF-8" in message and "c.ann has no .txt" in message
        assert ("a.ann:1: T1: the .ann says 'XXX'" in message) is not skip_invalid


def test_links_that_leave_the_corpus_are_refused_and_links_inside_are_read(tmp_path):
    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    corpus.mkdir(), elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("host-name-of-a-server\n", encoding="utf-8")
    (corpus / "real.txt").write_text("Quiste simple.", encoding="utf-8")
    (corpus / "real.ann").write_text("T1\tFinding 0 13\tQuiste simple\n", encoding="utf-8")
    (corpus / "inside.txt").symlink_to(corpus / "real.txt")  # a link inside the corpus is fine
    (corpus / "inside.ann").symlink_to(corpus / "real.ann")
    assert sorted(doc.id for doc in read_corpus(corpus).documents) == ["inside", "real"]
    (corpus / "leak.txt").symlink_to(elsewhere / "secret.txt")
    (corpus / "leak.ann").write_text("", encoding="utf-8")
    (elsewhere / "folder").mkdir()
    (elsewhere / "folder" / "r.txt").write_text("x", encoding="utf-8")
    (elsewhere / "folder" / "r.ann").write_text("", encoding="utf-8")
    (corpus / "linked-folder").symlink_to(elsewhere / "folder")
    with pytest.raises(BratError) as error:
        read_corpus(corpus)
    message = str(error.value)
    assert f"{corpus / 'leak.txt'} is a link to {elsewhere / 'secret.txt'}, outside {corpus}" in message
    assert "delete the link" in message and "host-name" not in message
    assert "linked-folder" not in message  # a linked folder is not walked into at all
    (corpus / "leak.txt").unlink()
    (corpus / "leak.ann").unlink()
    assert sorted(doc.id for doc in read_corpus(corpus).documents) == ["inside", "real"]
