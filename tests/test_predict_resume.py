"""``python -m hf_pipeline.predict`` under several processes, and runs that are stopped (Ctrl-C, SIGTERM, kill -9,
one rank of torchrun killed): a rerun resumes and gives exactly the rows of a clean run, none missing, none twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hf_pipeline.predict import main

from .helpers import CHUNK, REPO, REPORTS, cli, free_port, launch_env, predict_command, shards

pytestmark = pytest.mark.usefixtures("datasets_cache")


# --- Several processes, interrupted runs ----------------------------------------------------------------------------


@pytest.mark.slow
def test_two_processes_under_accelerate_launch_write_the_single_process_output(tiny_bundle, reports_parquet,
                                                                               reference, tmp_path):  # fmt: skip
    output = tmp_path / "two"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", str(free_port()), *predict_command(tiny_bundle, reports_parquet, output)]
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


def torchrun_until_first_shard(bundle: Path, source: Path, output: Path, tmp_path: Path) -> subprocess.Popen:
    """Two predicting processes under torchrun (a process group of their own), once the first shard is written."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port())]
    process = subprocess.Popen([*command, *predict_command(bundle, source, output)], cwd=REPO, env=launch_env(tmp_path),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    wait_for_first_shard(process, output)
    return process


@pytest.mark.slow
def test_interrupted_two_process_run_resumes_without_redoing_or_duplicating(tiny_bundle, reports_parquet, reference,
                                                                            tmp_path, capsys):  # fmt: skip
    output = tmp_path / "interrupted"
    process = torchrun_until_first_shard(tiny_bundle, reports_parquet, output, tmp_path)
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


def predictions(output: Path, fmt: str) -> list:
    """What a run has written so far, comparable across runs: shards, .ann files, or JSONL records by id."""
    if fmt == "parquet":
        return shards(output).to_pylist() if list((output / "data").glob("*.parquet")) else []
    if fmt == "brat":
        return sorted((p.name, p.read_text(encoding="utf-8")) for p in output.glob("*.ann"))
    paths = [output / "predictions.jsonl", output / "predictions.jsonl.partial"]  # (.partial while it runs)
    lines = [line for path in paths if path.is_file() for line in path.read_text(encoding="utf-8").splitlines()]
    return sorted((json.loads(line)["id"], line) for line in lines if line.endswith("}"))


@pytest.mark.parametrize(
    ("fmt", "stop"),
    [("parquet", signal.SIGKILL), ("parquet", signal.SIGTERM), ("brat", signal.SIGKILL), ("jsonl", signal.SIGKILL)],
)
def test_killed_run_leaves_nothing_half_written_and_rerun_gives_the_clean_result(tiny_bundle, reports_parquet,
                                                                                 tmp_path, fmt, stop):  # fmt: skip
    clean, output = tmp_path / "clean", tmp_path / "killed"
    arguments = [*predict_command(tiny_bundle, reports_parquet, clean)[2:-4], "--format", fmt, "--chunk_size", CHUNK]
    assert cli(*arguments) == 0
    command = [sys.executable, "-m", "hf_pipeline.predict", *map(str, arguments)]
    command[command.index(str(clean))] = str(output)
    process = subprocess.Popen(command, cwd=REPO, env=launch_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while not predictions(output, fmt):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.005)
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
    assert 0 < len(predictions(output, fmt)) < len(predictions(clean, fmt)), "the run was not killed midway"
    if stop == signal.SIGTERM:  # a scheduler's stop: one line, not a traceback
        assert process.returncode == 2 and err.strip().splitlines()[-1] == "interrupted, rerun to resume"
    assert main(command[3:]) == 0
    assert predictions(output, fmt) == predictions(clean, fmt)  # nothing missing, nothing twice
    assert not [p for p in output.rglob("*") if ".tmp" in p.name or ".partial" in p.name]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_torchrun_with_one_rank_killed_recovers_exactly_on_rerun(tiny_bundle, reports_parquet, reference, tmp_path):
    output = tmp_path / "one-rank-killed"
    process = torchrun_until_first_shard(tiny_bundle, reports_parquet, output, tmp_path)
    workers = children(process.pid)
    assert len(workers) == 2, workers
    os.kill(workers[1], signal.SIGKILL)  # one rank dies (out of memory, a lost node): torchrun stops the other
    process.communicate(timeout=120)
    assert process.returncode != 0
    assert len(list((output / "data").glob("*.parquet"))) < REPORTS // CHUNK, "the run was not stopped midway"
    assert main(predict_command(tiny_bundle, reports_parquet, output)[2:]) == 0
    result = shards(output)
    assert result.equals(reference) and len(set(result.column("id").to_pylist())) == REPORTS
