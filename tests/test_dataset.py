"""The dataset builder, the export to Parquet + card, the CLI, and the bundled sample corpus."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
import sys

import datasets
import pytest
import yaml

from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, BratError, build, label_names, read_corpus
from hf_dataset.__main__ import main as cli
from hf_dataset.builder import find_splits, read_splits
from hf_dataset.card import export

from .helpers import REPO


@pytest.fixture(scope="module")
def sample():
    return build()


def test_sample_corpus_offsets_ids_and_phenomena():
    splits = {name: read_corpus(folder) for name, folder in find_splits(SAMPLE_CORPUS).items()}
    assert {name: len(c.documents) for name, c in splits.items()} == {"train": 24, "validation": 8, "test": 8}
    for corpus in splits.values():
        assert corpus.invalid == []
        assert {e.type for d in corpus.documents for e in d.entities} == set(SPRADIE_TYPES)
        assert any(len(e.fragments) > 1 for d in corpus.documents for e in d.entities)
        for doc in corpus.documents:
            ids = [e.id for e in doc.entities]
            assert len(ids) == len(set(ids))
            for entity in doc.entities:
                assert entity.text == " ".join(doc.text[s:e] for s, e in entity.fragments)
    assert "synthetic" in (SAMPLE_CORPUS / "README.md").read_text(encoding="utf-8").lower()


def test_sample_builds_with_every_entity_accounted_for(sample):
    dataset, builder = sample
    assert set(dataset) == {"train", "validation", "test"}
    for name, layered in builder.splits.items():
        stats = layered.statistics
        assert stats.read == stats.encoded + stats.merged + stats.dropped + stats.invalid
        assert stats.read == sum(len(d.entities) for d in read_corpus(find_splits(SAMPLE_CORPUS)[name]).documents)
        assert stats.encoded <= sum(stats.per_layer.values()) <= stats.encoded + stats.merged  # twins share a layer
    assert builder.splits["train"].statistics.dropped > 0  # the depth-4 spots
    assert sum(s.statistics.discontinuous for s in builder.splits.values()) >= 8


def test_rows_follow_the_schema(sample):
    dataset, _ = sample
    names = label_names(SPRADIE_TYPES)
    row = dataset["train"][0]
    assert list(row) == ["id", "text", "tokens", "token_offsets", "ner_tags_1", "ner_tags_2", "ner_tags_3", "entities"]
    for column in ("ner_tags_1", "ner_tags_2", "ner_tags_3"):
        assert dataset["train"].features[column].feature.names == names
    assert [row["text"][s:e] for s, e in row["token_offsets"]] == row["tokens"]
    for entity in row["entities"]:
        assert entity["text"] == " ".join(row["text"][s:e] for s, e in entity["fragments"])
        assert entity["layer"] in (0, 1, 2, 3)


def test_export_and_load_dataset_round_trip(sample, tmp_path):
    dataset, builder = sample
    export(dataset, builder, tmp_path, license="apache-2.0")
    # A cache of its own: the shared cache keys a local folder by its name and would serve an older build.
    loaded = datasets.load_dataset(str(tmp_path), cache_dir=str(tmp_path / ".cache"))
    assert loaded["train"].features == dataset["train"].features
    assert loaded["test"].features["ner_tags_2"].feature.names == label_names(SPRADIE_TYPES)
    assert loaded["validation"].to_list() == dataset["validation"].to_list()
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["language"] == ["es"] and meta["task_categories"] == ["token-classification"]
    assert "oracle exact F1" in card and "dropped for depth" in card and "synthetic" not in meta.get("pretty_name", "")
    stats = json.loads((tmp_path / "statistics.json").read_text())
    assert stats["train"]["oracle"]["exact_f1"] == builder.splits["train"].statistics.oracle["exact_f1"]


def test_nubes_sample_builds_with_types_auto(corpora, tmp_path):
    sample = str(corpora / "nubes" / "SAMPLE-001")
    assert cli(["build", "--brat_dir", sample, "--types", "auto", "--output_dir", str(tmp_path)]) == 0
    loaded = datasets.load_dataset(str(tmp_path))
    assert len(loaded["train"]) == 96
    assert "B-NegSynMarker" in loaded["train"].features["ner_tags_1"].feature.names


def test_default_types_on_a_foreign_corpus_is_a_clear_error(corpora, capsys):
    assert cli(["stats", "--brat_dir", str(corpora / "nubes" / "IULA+")]) == 2
    message = capsys.readouterr().err
    assert "outside the label set" in message and "--types auto" in message and "NegSynMarker" in message


def test_skip_invalid_counts_types_outside_the_label_set(corpora, capsys):
    iula = corpora / "nubes" / "IULA+"
    assert cli(["stats", "--brat_dir", str(iula), "--types", "DISO,BODY", "--skip_invalid", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["train"]
    total = sum(len(d.entities) for d in read_corpus(iula).documents)
    assert stats["read"] == total and stats["invalid"] == total - stats["per_type"]["DISO"] - stats["per_type"]["BODY"]


def test_split_folders_dev_is_validation(tmp_path):
    for split in ("train", "dev", "test"):
        shutil.copytree(SAMPLE_CORPUS / ("validation" if split == "dev" else split), tmp_path / split)
    assert set(find_splits(tmp_path)) == {"train", "validation", "test"}
    (tmp_path / "validation").mkdir()
    with pytest.raises(ValueError, match="both dev/ and validation/"):
        find_splits(tmp_path)


def test_mismatch_is_reported_then_skipped_and_counted(tmp_path):
    shutil.copytree(SAMPLE_CORPUS / "test", tmp_path / "c")
    ann = sorted((tmp_path / "c").glob("*.ann"))[0]
    lines = ann.read_text(encoding="utf-8").splitlines()
    entity_id, header, text = lines[0].split("\t")
    lines[0] = f"{entity_id}\t{header}\tXX{text}"
    ann.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BratError, match=rf"{ann.name}:1: {entity_id}: the .ann says"):
        build(tmp_path / "c")
    _, builder = build(tmp_path / "c", skip_invalid=True)
    assert builder.splits["train"].statistics.invalid == 1


def test_cli_builds_the_bundled_sample_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_dataset", "build", "--output_dir", str(tmp_path), "--discontinuous", "split"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "train: 24 reports" in result.stdout
    console = result.stdout + result.stderr
    assert console.count("| oracle exact F1 |") == 1 and "examples/s" not in console  # one table, no bars
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]


def test_real_case_reports_read_as_shipped(corpora):
    # caso_112 has a T line whose text field runs over 10 physical lines, blank ones included.
    splits, _ = read_splits(corpora / "ct-ebm-sp-v2-cases", "auto")
    assert {name: len(c.documents) for name, c in splits.items()} == {"train": 70, "validation": 15, "test": 15}
    case = next(doc for doc in splits["test"].documents if doc.id == "caso_112")
    long_span = next(e for e in case.entities if e.id == "T15")
    assert long_span.fragments == ((0, 267),) and "\n\n" in case.text[0:267]


def test_fragments_listed_out_of_order_build_and_stay_as_listed(tmp_path):
    text = "Riñón derecho de 7 cm, riñón izquierdo sin hallazgos.\n"
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    ann = "T1\tAnatomical_Entity 29 38;0 5\tizquierdo Riñón\nT2\tFinding 17 21\t7 cm\n"
    (tmp_path / "a.ann").write_text(ann, encoding="utf-8")
    dataset, builder = build(tmp_path, types="auto")
    row = dataset["train"][0]
    first = row["entities"][0]
    assert first["fragments"] == [[29, 38], [0, 5]] and (first["start"], first["end"]) == (0, 38)
    assert first["text"] == "izquierdo Riñón"
    names = dataset["train"].features["ner_tags_1"].feature.names
    assert names[row["ner_tags_1"][0]] == "B-Anatomical_Entity"
    assert [e["layer"] for e in row["entities"]] == [1, 2] and builder.splits["train"].statistics.invalid == 0


def write_split(folder, name, text, ann):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    (folder / f"{name}.ann").write_text(ann, encoding="utf-8")


def test_every_problem_of_every_split_is_reported_in_one_run(tmp_path):
    text = "Quiste simple en RD.\n"
    write_split(tmp_path / "train", "a", text, "T1\tFinding 0 6\tQuiste\nT2\tFinding 0 6\tXXX\n")
    write_split(tmp_path / "dev", "b", text, "T1\tFinding 0 6\tQuiste\nT1\tFinding 17 19\tRD\n")
    write_split(tmp_path / "test", "c", text, "T1\tFinding 0 6\tQuiste\n")
    (tmp_path / "test" / "d.txt").write_text(text, encoding="utf-8")
    with pytest.raises(BratError) as error:
        build(tmp_path, types="Finding")
    message = str(error.value)
    assert f"{tmp_path / 'train' / 'a.ann'}:2: T2: the .ann says 'XXX'" in message
    assert f"{tmp_path / 'dev' / 'b.ann'}:2: T1: the same id is already used on line 1" in message
    assert f"{tmp_path / 'test' / 'd'}.txt has no .ann" in message


def test_skip_invalid_itemises_what_it_skipped_in_statistics_and_card(tmp_path):
    text = "Quiste simple en RD.\n"
    write_split(tmp_path / "c" / "train", "a", text, "T1\tFinding 0 6\tQuiste\nT2\tFinding 0 6\tXXX\n")
    write_split(tmp_path / "c" / "test", "b", text, "T1\tFinding 0 6\tQuiste\nT2\tAbbreviation 17 19\tRD\n")
    out = tmp_path / "out"
    assert cli(["build", "--brat_dir", str(tmp_path / "c"), "--types", "Finding", "--skip_invalid",
                "--output_dir", str(out)]) == 0  # fmt: skip
    skipped = {split: s["skipped"] for split, s in json.loads((out / "statistics.json").read_text()).items()}
    assert skipped["train"] == [{"file": "train/a.ann", "line": 2, "id": "T2", "reason": skipped["train"][0]["reason"]}]
    assert skipped["train"][0]["reason"].startswith("the .ann says 'XXX'")
    assert skipped["test"] == [
        {"file": "test/b.ann", "line": 2, "id": "T2", "reason": "type Abbreviation is not in the label set"}
    ]
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| test | `test/b.ann` | 2 | T2 | type Abbreviation is not in the label set |" in card


@pytest.mark.parametrize(("name", "expected"), [("missing", "does not exist"), ("file.txt", "is not a folder")])
def test_bad_brat_dir_is_a_clear_error(tmp_path, capsys, name, expected):
    (tmp_path / "file.txt").write_text("x")
    brat_dir = tmp_path / name
    assert cli(["build", "--brat_dir", str(brat_dir), "--output_dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: --brat_dir {brat_dir} {expected}") and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_output_dir_that_is_a_file_or_under_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert cli(["build", "--output_dir", str(tmp_path / "taken")]) == 2
    assert "is a file; pass a folder" in capsys.readouterr().err
    assert cli(["build", "--output_dir", str(tmp_path / "taken" / "out")]) == 2
    assert f"cannot be created: {tmp_path / 'taken'} is a file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_existing_dataset_is_refused_then_replaced_without_stale_splits(tmp_path, capsys):
    out = tmp_path / "ds"
    (out / "data").mkdir(parents=True)
    (out / "data" / "extra-00000-of-00001.parquet").write_text("old split")
    (out / ".gitattributes").write_text("*.parquet filter=lfs\n")
    assert cli(["build", "--output_dir", str(out)]) == 2
    assert "is not empty. Pass --overwrite" in capsys.readouterr().err
    assert (out / "data" / "extra-00000-of-00001.parquet").exists()
    assert cli(["build", "--output_dir", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "data").iterdir()) == [
        "test-00000-of-00001.parquet",
        "train-00000-of-00001.parquet",
        "validation-00000-of-00001.parquet",
    ]
    assert (out / ".gitattributes").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_a_failed_write_leaves_no_dataset_and_no_partial_folder(sample, tmp_path):
    # A real write failure: the file size limit makes writes fail with EFBIG, as a full disk does with ENOSPC.
    dataset, builder = sample
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4_000, hard))
    try:
        with pytest.raises(OSError):
            export(dataset, builder, tmp_path / "ds")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert list(tmp_path.iterdir()) == []


def test_cli_write_failure_during_the_build_is_a_clear_error(tmp_path):
    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    result = subprocess.run(
        [sys.executable, "-m", "hf_dataset", "build", "--output_dir", str(tmp_path / "ds")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: could not read or write: [Errno 27] File too large" in result.stderr
    assert list(tmp_path.iterdir()) == []
