"""``python -m hf_pipeline.predict`` at scale: inputs, Parquet shards, several processes, resume, hostile input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hf_pipeline
from hf_pipeline.predict.outputs import features

from .helpers import (
    CHUNK,
    REPO,
    REPORTS,
    cli,
    fill_hub_cache,
    launch_env,
    repo_files,
    shards,
    synthetic_reports,
    without_score,
)

pytestmark = pytest.mark.usefixtures("datasets_cache")  # a cache of this module's own


# --- Parquet output -------------------------------------------------------------------------------------------------


def test_parquet_shards_have_the_declared_schema_and_match_the_pipeline(tiny_bundle, reference):
    assert reference.schema.remove_metadata() == features().arrow_schema.remove_metadata()
    assert reference.column("id").to_pylist() == [r["id"] for r in synthetic_reports()]
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    for row in reference.slice(0, 3).to_pylist():
        expected = ner(row["text"])
        assert [(e["entity_group"], e["start"], e["end"], e["layer"], e["word"]) for e in row["entities"]] == [
            (e["entity_group"], e["start"], e["end"], e["layer"], e["word"]) for e in expected
        ]
        assert [e["score"] for e in row["entities"]] == pytest.approx([e["score"] for e in expected], abs=1e-6)


def test_no_text_and_manifest(tiny_bundle, reports_parquet, tmp_path, capsys):
    import datasets

    output = tmp_path / "out"
    assert cli("--model", tiny_bundle, "--input", reports_parquet, "--output", output, "--format", "parquet",
               "--chunk_size", 100, "--no_text") == 0  # fmt: skip
    loaded = datasets.load_dataset("parquet", data_files=str(output / "data" / "*.parquet"), split="train")
    assert loaded.column_names == ["id", "entities"] and len(loaded) == REPORTS
    assert loaded.features["entities"].feature["layer"].dtype == "int8"
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["reports"] == REPORTS and len(manifest["shards"]) == 3
    assert manifest["entities"] == sum(len(e) for e in loaded["entities"])
    assert manifest["settings"]["model"] == str(tiny_bundle) and manifest["settings"]["chunk_size"] == 100
    capsys.readouterr()
    assert cli("--model", tiny_bundle, "--input", reports_parquet, "--output", output, "--format", "parquet",
               "--chunk_size", 100, "--no_text") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"skipped {REPORTS} report(s)" in out and "--overwrite" in out and "predicted 0 report(s)" in out
    assert cli("--model", tiny_bundle, "--input", reports_parquet, "--output", output, "--format", "parquet",
               "--chunk_size", 50) == 2  # fmt: skip
    assert "--chunk_size was 100, now 50" in capsys.readouterr().err  # a rerun would mix two chunkings


# --- spaCy output ---------------------------------------------------------------------------------------------------


def docbin_rows(folder: Path) -> list[dict]:
    """The reports of a ``--format spacy`` output as Parquet rows (id, text, entities from doc.spans)."""
    import spacy

    from hf_pipeline.predict.outputs import iter_docbin_docs

    return [
        {"id": doc._.report_id, "text": doc.text, "entities": [
            {"entity_group": s.label_, "score": s._.score, "word": s._.exact_text, "start": s._.exact_start,
             "end": s._.exact_end, "layer": s._.layer} for s in doc.spans["radiology_ner"]]}
        for doc in iter_docbin_docs(folder, spacy.blank("es").vocab)
    ]  # fmt: skip


def test_spacy_docbin_shards_hold_the_parquet_output_and_resume_by_chunk(tiny_bundle, reports_parquet, reference,
                                                                         tmp_path, capsys):  # fmt: skip
    output = tmp_path / "out"
    args = ["--model", tiny_bundle, "--input", reports_parquet, "--output", output, "--format", "spacy",
            "--chunk_size", CHUNK]  # fmt: skip
    assert cli(*args) == 0
    paths = sorted((output / "data").glob("*.spacy"))
    assert [p.name for p in paths] == [f"chunk-{i:06d}.spacy" for i in range(REPORTS // CHUNK)]
    rows, expected = docbin_rows(output), reference.to_pylist()
    assert [{**r, "entities": [without_score(e) for e in r["entities"]]} for r in rows] == [
        {**r, "entities": [without_score(e) for e in r["entities"]]} for r in expected
    ]
    assert [e["score"] for r in rows for e in r["entities"]] == pytest.approx(
        [e["score"] for r in expected for e in r["entities"]], abs=1e-6
    )  # Parquet stores float32
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["reports"] == REPORTS and len(manifest["shards"]) == len(paths)
    assert manifest["entities"] == sum(len(r["entities"]) for r in rows)
    paths[3].unlink()
    (output / "data" / "chunk-000007.spacy.tmp").write_bytes(b"cut short")  # as a killed write leaves it
    capsys.readouterr()
    assert cli(*args) == 0
    assert f"skipped {REPORTS - CHUNK} report(s)" in capsys.readouterr().out
    assert docbin_rows(output) == rows and not list(output.rglob("*.tmp"))


def test_spacy_output_refuses_no_text(tiny_bundle, tmp_path, capsys):
    from hf_dataset import SAMPLE_CORPUS

    args = ["--input", SAMPLE_CORPUS / "test", "--output", tmp_path / "out", "--format", "spacy", "--no_text"]
    assert cli("--model", tiny_bundle, *args) == 2
    assert "a spaCy Doc is made of its text; leave --no_text out" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_help_lists_the_spacy_format(capsys):
    with pytest.raises(SystemExit):
        cli("--help")
    assert "spacy: DIR/data/chunk-NNNNNN.spacy, spaCy DocBin files" in " ".join(capsys.readouterr().out.split())


# --- Inputs ---------------------------------------------------------------------------------------------------------


def test_a_dataset_folder_from_hf_dataset_build_with_split_and_columns(tiny_bundle, tmp_path, capsys):
    from hf_dataset import SAMPLE_CORPUS
    from hf_dataset.__main__ import main as build

    assert build(["build", "--output_dir", str(tmp_path / "dataset")]) == 0
    output = tmp_path / "out"
    args = ["--model", tiny_bundle, "--input", tmp_path / "dataset", "--output", output, "--format", "parquet"]
    assert cli(*args) == 2
    assert "has the splits train, validation, test; choose one with --split" in capsys.readouterr().err
    assert not output.exists()
    assert cli(*args, "--split", "test") == 0
    predicted = shards(output).to_pylist()
    expected_ids = sorted(path.stem for path in (SAMPLE_CORPUS / "test").glob("*.txt"))
    assert sorted(row["id"] for row in predicted) == expected_ids
    assert cli(*args, "--split", "test", "--text_column", "report", "--overwrite") == 2
    assert "no column 'report'" in capsys.readouterr().err


def test_parquet_folder_text_and_id_columns_and_row_numbers(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "table"
    folder.mkdir()
    rows = [{"note": "Quiste simple en RD.", "key": f"k{n}", "id": n % 2} for n in range(5)]
    pq.write_table(pa.Table.from_pylist(rows[:3]), folder / "part-0.parquet")
    pq.write_table(pa.Table.from_pylist(rows[3:]), folder / "part-1.parquet")
    base = ["--model", tiny_bundle, "--input", folder, "--format", "jsonl", "--text_column", "note"]
    assert cli(*base, "--output", tmp_path / "a") == 2  # the default id column holds 0, 1, 0, ...
    assert "duplicate id(s): id '0' at" in capsys.readouterr().err
    assert cli(*base, "--output", tmp_path / "b", "--id_column", "key") == 0
    assert [json.loads(line)["id"] for line in (tmp_path / "b" / "predictions.jsonl").open()] == [
        "k0", "k1", "k2", "k3", "k4"
    ]  # fmt: skip
    pq.write_table(pa.Table.from_pylist([{"text": "RD normal."}] * 3), tmp_path / "plain.parquet")
    assert cli("--model", tiny_bundle, "--input", tmp_path / "plain.parquet", "--output", tmp_path / "c") == 0
    assert sorted(path.name for path in (tmp_path / "c").glob("*.ann")) == ["0.ann", "1.ann", "2.ann"]
    (tmp_path / "notes.csv").write_text('report_id,body\nA-1,"Quiste en RD, simple."\nA-2,RD normal.\n')
    assert cli("--model", tiny_bundle, "--input", tmp_path / "notes.csv", "--output", tmp_path / "d",
               "--text_column", "body", "--id_column", "report_id") == 0  # fmt: skip
    assert sorted(path.name for path in (tmp_path / "d").glob("*.ann")) == ["A-1.ann", "A-2.ann"]


def test_a_hub_dataset_id_offline_fails_at_once_and_a_local_looking_path_is_not_sent_to_the_hub(
    tiny_bundle, tmp_path, capsys
):
    output = tmp_path / "out"
    assert cli("--model", tiny_bundle, "--input", "someone/reports", "--output", output) == 2
    err = capsys.readouterr().err
    assert "--input someone/reports: no such folder, and the Hub dataset 'someone/reports' is not in the" in err
    assert "(HF_HUB_OFFLINE=1 is set)" in err and "or give a local folder or file as --input." in err
    for missing in ("./reports", str(tmp_path / "reports"), "reports.jsonl", "a/b/c"):
        assert cli("--model", tiny_bundle, "--input", missing, "--output", output) == 2
        assert f"{missing} does not exist" in capsys.readouterr().err
    assert not output.exists()  # a missing input does not create the output folder


def test_a_namespaced_bundle_and_dataset_in_the_hub_cache_predict_offline(tiny_bundle, tmp_path, monkeypatch, capsys):
    from hf_dataset import SAMPLE_CORPUS
    from hf_dataset.__main__ import main as build

    assert build(["build", "--output_dir", str(tmp_path / "dataset")]) == 0
    repos = {("model", "org/tiny-radiology-ner"): repo_files(tiny_bundle)}
    repos[("dataset", "org/sample-reports")] = repo_files(tmp_path / "dataset")
    fill_hub_cache(repos, tmp_path / "hub-cache", monkeypatch)
    output = tmp_path / "out"
    args = ["--model", "org/tiny-radiology-ner", "--input", "org/sample-reports", "--split", "test"]
    assert cli(*args, "--output", output, "--format", "jsonl") == 0, capsys.readouterr().err
    predicted = [json.loads(line) for line in (output / "predictions.jsonl").open(encoding="utf-8")]
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    assert len(predicted) == len(list((SAMPLE_CORPUS / "test").glob("*.txt"))) and all(
        [(e["entity_group"], e["start"], e["end"]) for e in row["entities"]]
        == [(e["entity_group"], e["start"], e["end"]) for e in ner(row["text"])]
        for row in predicted
    )


def test_quantize_help_describes_int8_onnx_graphs_run_by_onnx_runtime(capsys):
    with pytest.raises(SystemExit):
        cli("--help")
    help_text = " ".join(capsys.readouterr().out.split())
    assert "int8 ONNX graphs with ONNX Runtime" in help_text and "dynamic" not in help_text


# --- Ids cannot escape --output, duplicates are refused -------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc_id", "problem"),
    [
        ("../../escaped", "'..' path part"),
        ("a/../../escaped", "'..' path part"),
        ("/tmp/escaped", "absolute path"),
        ("", "is empty"),
        ("a\x00b", "control character"),
        ("a\\..\\b", "'\\'"),
        ("x" * 300, "longer than"),
    ],
)
def test_ids_that_would_leave_the_output_folder_are_refused(tiny_bundle, tmp_path, capsys, doc_id, problem):
    source = tmp_path / "in" / "reports.jsonl"
    source.parent.mkdir()
    source.write_text(json.dumps({"text": "RD normal."}) + "\n" + json.dumps({"id": doc_id, "text": "RD."}) + "\n")
    output = tmp_path / "in" / "out" / "deeper"
    assert cli("--model", tiny_bundle, "--input", source, "--output", output) == 2
    err = capsys.readouterr().err
    assert f"{source}:2: the id" in err and problem in err and "Traceback" not in err
    assert not output.exists() and not list(tmp_path.rglob("*.ann"))


def test_path_escaping_ids_in_a_dataset_are_refused_for_brat_and_kept_as_data_in_parquet(tiny_bundle, tmp_path, capsys):
    table = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist([{"id": "ok", "text": "RD."}, {"id": "../x", "text": "RD."}]), table)
    assert cli("--model", tiny_bundle, "--input", table, "--output", tmp_path / "brat") == 2
    assert "row 1: the id '../x' has an empty, '.' or '..' path part" in capsys.readouterr().err
    assert cli("--model", tiny_bundle, "--input", table, "--output", tmp_path / "pq", "--format", "parquet") == 0
    assert shards(tmp_path / "pq").column("id").to_pylist() == ["ok", "../x"]  # a value in a column, not a path
    assert not (tmp_path / "x.ann").exists()


def test_duplicate_ids_are_refused_naming_both_lines(tiny_bundle, tmp_path, capsys):
    source = tmp_path / "reports.jsonl"
    lines = [{"id": "3", "text": "RD."}, {"text": "RI."}, {"text": "Bazo."}, {"id": "a", "text": "x"}, {"id": "a"}]
    lines[4]["text"] = "y"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert cli("--model", tiny_bundle, "--input", source, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert f"id '3' at {source}:1 and {source}:3" in err  # an explicit id equal to another line's number
    assert f"id 'a' at {source}:4 and {source}:5" in err
    assert not (tmp_path / "out").exists()


# --- Every file complete or absent ----------------------------------------------------------------------------------


def run_with_file_size_limit(args: list[object], limit: int, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run predict in a process whose files cannot grow past ``limit`` bytes: a write fails as on a full disk."""
    import resource

    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    command = [sys.executable, "-m", "hf_pipeline.predict", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=launch_env(tmp_path),
                          preexec_fn=limit_files, timeout=300)  # fmt: skip


@pytest.mark.parametrize("fmt", ["brat", "jsonl", "parquet", "spacy"])
def test_a_write_that_fails_midway_leaves_nothing_a_rerun_takes_for_done(tiny_bundle, tmp_path, fmt, capsys):
    from hf_dataset import SAMPLE_CORPUS

    source = SAMPLE_CORPUS / "test"
    args = ["--model", tiny_bundle, "--input", source, "--format", fmt, "--chunk_size", 3]
    assert cli(*args, "--output", tmp_path / "fresh") == 0
    output = tmp_path / "full"
    failed = run_with_file_size_limit([*args, "--output", output], 3000, tmp_path)
    assert failed.returncode == 2 and "File too large" in failed.stderr and "Traceback" not in failed.stderr
    assert "rerun to resume" in failed.stderr
    assert not list(output.rglob("*.tmp"))
    capsys.readouterr()
    assert cli(*args, "--output", output) == 0
    assert "predicted" in capsys.readouterr().out
    produced = sorted(p.relative_to(output) for p in output.rglob("*") if p.is_file() and p.name != "manifest.json")
    expected = sorted(p.relative_to(tmp_path / "fresh") for p in (tmp_path / "fresh").rglob("*")
                      if p.is_file() and p.name != "manifest.json")  # fmt: skip
    assert produced == expected
    for name in expected:
        if fmt == "parquet":
            assert pq.read_table(output / name).equals(pq.read_table(tmp_path / "fresh" / name))
        elif fmt == "spacy":  # DocBin's string table is a set: its order, so its bytes, vary between processes
            assert docbin_rows(output) == docbin_rows(tmp_path / "fresh")
        else:
            assert (output / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_a_jsonl_line_cut_short_is_redone_not_a_crash(tiny_bundle, tmp_path, capsys):
    from hf_dataset import SAMPLE_CORPUS

    args = ["--model", tiny_bundle, "--input", SAMPLE_CORPUS / "test", "--format", "jsonl"]
    assert cli(*args, "--output", tmp_path / "fresh") == 0
    complete = (tmp_path / "fresh" / "predictions.jsonl").read_bytes()
    lines = complete.splitlines(keepends=True)
    output = tmp_path / "cut"
    output.mkdir()
    (output / "predictions.jsonl").write_bytes(b"".join(lines[:3]) + lines[3][:40])  # as a full disk leaves it
    capsys.readouterr()
    assert cli(*args, "--output", output) == 0
    out = capsys.readouterr().out
    assert "skipped 3 report(s)" in out and f"predicted {len(lines) - 3} report(s)" in out
    assert (output / "predictions.jsonl").read_bytes() == complete


# --- Clear errors, exit code 2, no traceback ------------------------------------------------------------------------


def test_clear_errors_for_wrong_models_outputs_and_inputs(tiny_bundle, tmp_path, capsys):
    from hf_dataset import SAMPLE_CORPUS

    reports = SAMPLE_CORPUS / "test"
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "not_a_bundle").mkdir()
    (tmp_path / "not_a_bundle" / "notes.txt").write_text("x")
    plain_model = tmp_path / "plain_model"  # a token classifier, but not a bundle
    config = json.loads((tiny_bundle / "config.json").read_text())
    del config["custom_pipelines"]
    plain_model.mkdir()
    (plain_model / "config.json").write_text(json.dumps(config))
    cases = {
        ("--model", tmp_path / "nothere"): f"--model {tmp_path / 'nothere'}: no such folder.",
        ("--model", "./nothere"): "--model ./nothere: no such folder (relative to",
        ("--model", tmp_path / "not_a_bundle"): "is not a radiology-ner bundle",
        ("--model", plain_model): "is not a radiology-ner bundle",
        ("--model", tmp_path / "a_file"): "is a file; give a model folder or a Hub model id",
        ("--model", "someone/model"): "the Hub model 'someone/model' is not in the Hub cache",
        ("--input", tmp_path / "empty"): "no .txt file found",
        ("--input", tmp_path / "nothere.txt"): "nothere.txt does not exist",
        ("--output", tmp_path / "a_file"): "is a file; give a folder",
        ("--output", tmp_path / "a_file" / "sub"): "is a file, so no folder can be created there",
    }
    for (option, value), message in cases.items():
        arguments = {"--model": tiny_bundle, "--input": reports, "--output": tmp_path / "out"} | {option: value}
        assert cli(*[part for pair in arguments.items() for part in pair]) == 2, option
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1, err
        assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_is_one_line(tiny_bundle, tmp_path, capsys):
    from hf_dataset import SAMPLE_CORPUS

    if os.geteuid() == 0:  # root writes anywhere but in /sys
        output = Path("/sys/radiology-ner-predictions")
        if not Path("/sys").is_dir():
            pytest.skip("needs a folder this user cannot write")
    else:
        (tmp_path / "locked").mkdir(mode=0o555)
        output = tmp_path / "locked" / "out"
    assert cli("--model", tiny_bundle, "--input", SAMPLE_CORPUS / "test", "--output", output) == 2
    err = capsys.readouterr().err
    assert f"--output {output}" in err and "choose a writable folder" in err and err.count("\n") == 1


def test_a_folder_named_like_a_report_is_not_read_as_one(tiny_bundle, tmp_path, capsys):
    (tmp_path / "in" / "x.txt").mkdir(parents=True)
    (tmp_path / "in" / "x.txt" / "inner.txt").write_text("Quiste en RD.")
    (tmp_path / "in" / "a.txt").write_text("RD normal.")
    assert cli("--model", tiny_bundle, "--input", tmp_path / "in", "--output", tmp_path / "out") == 0
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.ann")) == [
        "a.ann", "x.txt/inner.ann"
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["brat", "jsonl", "parquet", "spacy"])
def test_a_lone_surrogate_is_one_line_naming_the_row_and_exit_2(tiny_bundle, tmp_path, fmt, capsys):
    source = tmp_path / "reports.jsonl"
    lines = ['{"id": "ok", "text": "Quiste simple."}', '{"id": "bad", "text": "Quiste \\ud800 simple."}']
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert cli("--model", tiny_bundle, "--input", source, "--output", tmp_path / "out", "--format", fmt) == 2
    error = capsys.readouterr().err
    last = error.strip().splitlines()[-1]  # (after the weight-loading bars)
    assert "Traceback" not in error and last.startswith("error: ")
    assert f"{source}:2 (id 'bad')" in last and "lone surrogate (U+D800) at character 7" in last
