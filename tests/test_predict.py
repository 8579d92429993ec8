"""``python -m hf_pipeline.predict`` at scale: inputs, Parquet shards, several processes, resume, hostile input."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hf_pipeline
from hf_pipeline.predict import main
from hf_pipeline.predict_outputs import features

from .conftest import REPO, sample_texts

REPORTS = 300
CHUNK = 25


def synthetic_reports(count: int = REPORTS) -> list[dict[str, str]]:
    """Reports of one to several sentences of the sample corpus; some need several windows of the tiny model."""
    sentences = [s.strip() + "." for text in sample_texts() for s in text.split(".") if len(s.strip()) > 3]
    reports = []
    for number in range(count):
        size = 1 + (number * 7) % 9
        start = (number * 13) % len(sentences)
        reports.append({"id": f"r{number:04d}", "text": " ".join(sentences[start : start + size])})
    return reports


@pytest.fixture(scope="module")
def reports_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "reports.parquet"
    pq.write_table(pa.Table.from_pylist(synthetic_reports()), path)
    return path


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    import datasets

    cache = tmp_path_factory.getbasetemp() / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


def cli(*args: object) -> int:
    return main([str(arg) for arg in args])


def shards(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(path) for path in sorted((folder / "data").glob("*.parquet")))


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, reports_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The single-process output of the synthetic reports (chunks of 25)."""
    output = tmp_path_factory.mktemp("reference")
    assert main(["--model", str(tiny_bundle), "--input", str(reports_parquet), "--output", str(output)]
                + ["--format", "parquet", "--chunk_size", str(CHUNK)]) == 0  # fmt: skip
    return shards(output)


def launch_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(tmp_path / "datasets-cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def predict_command(bundle: Path, source: Path, output: Path) -> list[str]:
    return ["-m", "hf_pipeline.predict", "--model", str(bundle), "--input", str(source), "--output", str(output),
            "--format", "parquet", "--chunk_size", str(CHUNK)]  # fmt: skip


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


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
    assert "chunk_size=100" in capsys.readouterr().err  # a rerun with other settings would mix two chunkings


# --- Several processes, interrupted runs ----------------------------------------------------------------------------


def test_two_processes_under_accelerate_launch_write_the_single_process_output(tiny_bundle, reports_parquet,
                                                                               reference, tmp_path):  # fmt: skip
    output = tmp_path / "two"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", free_port(), *predict_command(tiny_bundle, reports_parquet, output)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=launch_env(tmp_path), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert shards(output).equals(reference)  # every chunk once, in order, with the same scores to the last bit
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["reports"] == REPORTS and manifest["complete"]
    assert len(manifest["shards"]) == REPORTS // CHUNK


def wait_for_first_shard(process: subprocess.Popen, output: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any((output / "data").glob("*.parquet")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.005)


def test_interrupted_two_process_run_resumes_without_redoing_or_duplicating(tiny_bundle, reports_parquet, reference,
                                                                            tmp_path, capsys):  # fmt: skip
    output = tmp_path / "interrupted"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    command += predict_command(tiny_bundle, reports_parquet, output)
    process = subprocess.Popen(command, cwd=REPO, env=launch_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    wait_for_first_shard(process, output)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: every process of the group gets it
    _, err = process.communicate(timeout=120)
    done = sorted((output / "data").glob("*.parquet"))
    assert 0 < len(done) < REPORTS // CHUNK, "the run was not interrupted midway"
    assert err.count("interrupted, rerun to resume") == 2 and "KeyboardInterrupt" not in err  # torchrun's own aside
    assert not json.loads((output / "manifest.json").read_text())["complete"]
    written = {path: path.stat().st_mtime_ns for path in done}
    capsys.readouterr()
    assert main(predict_command(tiny_bundle, reports_parquet, output)[2:]) == 0  # resumed by one process
    out = capsys.readouterr().out
    skipped = sum(pq.ParquetFile(path).metadata.num_rows for path in done)
    assert f"skipped {skipped} report(s)" in out and f"predicted {REPORTS - skipped} report(s)" in out
    assert {path: path.stat().st_mtime_ns for path in done} == written  # finished shards were not redone
    result = shards(output)
    assert result.equals(reference) and len(set(result.column("id").to_pylist())) == REPORTS


def test_killed_run_leaves_no_half_shard_and_rerun_gives_the_same_result(tiny_bundle, reports_parquet, reference,
                                                                         tmp_path):  # fmt: skip
    output = tmp_path / "killed"
    command = [sys.executable, *predict_command(tiny_bundle, reports_parquet, output)]
    process = subprocess.Popen(command, cwd=REPO, env=launch_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_first_shard(process, output)
    process.kill()
    process.communicate(timeout=60)
    assert len(list((output / "data").glob("*.parquet"))) < REPORTS // CHUNK, "the run was not killed midway"
    assert main(predict_command(tiny_bundle, reports_parquet, output)[2:]) == 0
    assert shards(output).equals(reference)
    assert not list((output / "data").glob("*.tmp"))
