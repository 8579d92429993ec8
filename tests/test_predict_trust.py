"""What a ``python -m hf_pipeline.predict`` rerun may trust: one live run per output (a lock, taken over from a run
that is gone), the settings of the run that wrote the output, the shards on disk; and bad bundles or arguments are
one line and exit code 2."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hf_dataset import SAMPLE_CORPUS
from hf_pipeline.predict.lock import LOCK_NAME, LockError, OutputLock

from .helpers import REPO, REPORTS, cli, launch_env, synthetic_reports

pytestmark = pytest.mark.usefixtures("datasets_cache")

SAMPLE_REPORTS = len(list((SAMPLE_CORPUS / "test").glob("*.txt")))


def jsonl_ids(output: Path) -> list[str]:
    """The ids of the complete lines written so far (``.partial`` while a run is going on)."""
    paths = [output / "predictions.jsonl", output / "predictions.jsonl.partial"]
    lines = [line for path in paths if path.is_file() for line in path.read_text(encoding="utf-8").splitlines()]
    return [json.loads(line)["id"] for line in lines if line.endswith("}")]


# --- 1. One live run per output --------------------------------------------------------------------------------------


def test_a_second_run_on_a_live_runs_output_is_refused_and_a_dead_runs_lock_is_taken_over(tiny_bundle, reports_parquet,
                                                                                         tmp_path, capsys):  # fmt: skip
    output = tmp_path / "out"
    args = ["--model", tiny_bundle, "--input", reports_parquet, "--output", output, "--format", "jsonl"]
    command = [sys.executable, "-m", "hf_pipeline.predict", *map(str, args)]
    first = subprocess.Popen(command, cwd=REPO, env=launch_env(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not jsonl_ids(output):
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.005)
        first.send_signal(signal.SIGSTOP)  # alive, holding the output, and predicting nothing more for now
        written = jsonl_ids(output)
        assert first.poll() is None and 0 < len(written) < REPORTS, "the first run was not stopped midway"
        capsys.readouterr()
        assert cli(*args) == 2  # before the lock: exit 0, and every report of the first run's tail twice
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # (after the dataset's progress bar)
        assert last.startswith(f"error: --output {output} is in use by another predict run (pid {first.pid} on ")
        assert socket.gethostname() in last and str(output / LOCK_NAME) in last and "Traceback" not in err
        assert jsonl_ids(output) == written  # refused before writing anything
    finally:
        first.kill()  # a crash: its lock stays behind
        first.communicate(timeout=60)
    assert (output / LOCK_NAME).is_file()
    assert cli(*args) == 0
    captured = capsys.readouterr()
    assert f"warning: took over the stale lock {output / LOCK_NAME}" in captured.err
    assert f"(pid {first.pid} on" in captured.err
    assert f"skipped {len(written)} report(s)" in captured.out
    assert jsonl_ids(output) == [report["id"] for report in synthetic_reports()]  # each once, in input order
    assert not (output / LOCK_NAME).exists()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, **holder: object) -> None:
    values = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": None, "started": "earlier",
              "token": "other", "launch": None} | holder  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(values))


def test_a_lock_is_stale_only_when_its_run_is_certainly_gone(tmp_path):
    own_start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    for stale in ({"pid": dead_pid()}, {"process_start": own_start + 1}):  # a dead pid; a pid since reused
        write_lock(tmp_path / "a", **stale)
        lock = OutputLock(tmp_path / "a")
        assert "took over the stale lock" in lock.acquire()
        assert json.loads((tmp_path / "a" / LOCK_NAME).read_text())["token"] == lock.holder.token
        lock.release()
        assert not (tmp_path / "a" / LOCK_NAME).exists()
    for live in ({"process_start": own_start}, {"host": "another-machine", "pid": dead_pid()}):
        write_lock(tmp_path / "b", **live)
        with pytest.raises(LockError, match="is in use by another predict run"):
            OutputLock(tmp_path / "b").acquire()  # (another host cannot be checked from here: obeyed)
    (tmp_path / "b" / LOCK_NAME).write_text("")  # a run that is creating its lock right now
    with pytest.raises(LockError, match="another predict run is starting there"):
        OutputLock(tmp_path / "b").acquire()
    lock = OutputLock(tmp_path / "new" / "deeper")
    assert lock.acquire() is None and (tmp_path / "new" / "deeper" / LOCK_NAME).is_file()
    with pytest.raises(LockError, match=f"pid {os.getpid()}"):
        OutputLock(tmp_path / "new" / "deeper").acquire()
    lock.release()
    assert not (tmp_path / "new").exists()  # folders the lock created, left empty, are removed


# --- 4. A rerun trusts only what it can check -----------------------------------------------------------------------


def test_a_rerun_with_settings_that_change_the_predictions_is_refused_naming_them(tiny_bundle, tmp_path, capsys):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    output = tmp_path / "out"
    args = ["--model", bundle, "--input", SAMPLE_CORPUS / "test", "--output", output, "--format", "jsonl"]
    assert cli(*args) == 0
    predictions = (output / "predictions.jsonl").read_bytes()
    config = json.loads((bundle / "config.json").read_text())
    changes = [
        (["--quantize", "int8"], "--quantize was not given, now 'int8'"),  # before: int8 rows after fp32 ones
        (["--stride", "8"], "--stride was not given, now 8"),
        (["--max_length", "32"], "--max_length was not given, now 32"),
        (["--chunk_size", "4"], "--chunk_size was 1000, now 4"),
    ]
    capsys.readouterr()
    for extra, message in changes:
        assert cli(*args, *extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and "Rerun with the same settings to resume, or with --overwrite" in err, err
    (bundle / "config.json").write_text(json.dumps(config | {"ner_window": 32}))  # the bundle changed in place
    assert cli(*args) == 2
    assert "the --model files (digest) or Hub commit was 'files:" in capsys.readouterr().err
    assert (output / "predictions.jsonl").read_bytes() == predictions  # nothing was written by a refused run
    assert cli(*args, "--stride", "8", "--overwrite") == 0 and cli(*args, "--stride", "8") == 0  # the ways out
    assert f"skipped {SAMPLE_REPORTS} report(s)" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["parquet", "spacy"])
def test_a_damaged_shard_is_predicted_again_not_trusted(tiny_bundle, tmp_path, fmt, capsys):
    args = ["--model", tiny_bundle, "--input", SAMPLE_CORPUS / "test", "--format", fmt, "--chunk_size", 3]
    assert cli(*args, "--output", tmp_path / "fresh") == 0
    output = Path(shutil.copytree(tmp_path / "fresh", tmp_path / "damaged"))
    paths = sorted((output / "data").glob(f"*.{fmt}"))
    assert len(paths) == 3 and SAMPLE_REPORTS % 3 != 0
    whole = paths[1].read_bytes()
    paths[1].write_bytes(whole[: len(whole) // 2])  # cut short: a disk that filled, a copy that broke
    shutil.copyfile(paths[2], paths[0])  # readable, but one report short of its chunk
    capsys.readouterr()
    assert cli(*args, "--output", output) == 0  # before: "skipped 8", then ArrowInvalid on every rerun
    captured = capsys.readouterr()
    assert f"warning: 2 damaged shard(s) predicted again: {paths[0].name} (2 report(s) where its chunk has 3)" in (
        captured.err
    )
    assert f"{paths[1].name} (unreadable: " in captured.err
    assert f"skipped {SAMPLE_REPORTS - 6} report(s)" in captured.out and "predicted 6 report(s)" in captured.out
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["complete"] and manifest["reports"] == SAMPLE_REPORTS
    if fmt == "parquet":
        for path in paths:
            assert pq.read_table(path).equals(pq.read_table(tmp_path / "fresh" / "data" / path.name))
    else:
        assert manifest["entities"] == json.loads((tmp_path / "fresh" / "manifest.json").read_text())["entities"]


# --- 7. Bad bundles and arguments: one line, exit code 2 ------------------------------------------------------------


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("model.safetensors", "Error while deserializing header"),
        ("layer_2/model.safetensors", "Error while deserializing header"),
        ("tokenizer.json", "its tokenizer files cannot be read"),
    ],
)
def test_a_damaged_bundle_is_one_line_and_exit_2(tiny_bundle, tmp_path, capsys, damage, message):
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    cut_in_half(bundle / damage)
    output = tmp_path / "out"
    assert cli("--model", bundle, "--input", SAMPLE_CORPUS / "test", "--output", output) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (after the weight-loading bars)
    assert "Traceback" not in err and last.startswith(f"error: --model {bundle} cannot be loaded") and message in last
    assert not output.exists()


def test_bad_numeric_arguments_are_one_line_and_exit_2(tiny_bundle, tmp_path, capsys):
    cases = {
        ("--batch_size", "0"): "--batch_size 0: give a positive number",
        ("--stride", "3.5"): "argument --stride: invalid int value: '3.5'",
        ("--stride", "-1"): "--stride -1: give the number of tokens consecutive windows share",
        ("--chunk_size", "0"): "--chunk_size 0: give a positive number",
        ("--max_length", "1000"): "--max_length 1000: max_length must be between 3 and the model's maximum, 64",
        ("--stride", "100"): "--stride 100: stride=100 must be smaller than the window",
    }
    output = tmp_path / "out"
    for (option, value), message in cases.items():
        assert cli("--model", tiny_bundle, "--input", SAMPLE_CORPUS / "test", "--output", output, option, value) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err and last.startswith("error: ") and message in last, err
        assert not output.exists()
