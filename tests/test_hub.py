"""hf_pipeline.hub: the one answer to "can this model or dataset be used now?", against real local HTTP servers and
a Hub cache that huggingface_hub itself filled from a fake Hub."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import constants

from hf_pipeline import hub

from .helpers import fill_hub_cache


class _Status(http.server.BaseHTTPRequestHandler):
    status = 404

    def do_HEAD(self) -> None:  # noqa: N802 - the name http.server calls
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answering_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A server on 127.0.0.1 that answers every HEAD with 404: an HTTP answer, so the Hub counts as reachable."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield url
    server.shutdown()


@pytest.fixture
def silent_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield url
    listener.close()


def test_offline_variable_names_the_setting_huggingface_hub_obeys(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.offline_variable() == "HF_HUB_OFFLINE=1"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "yes")
    assert hub.offline_variable() == "TRANSFORMERS_OFFLINE=yes"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert hub.offline_variable() is None


def test_any_http_answer_means_reachable(answering_hub):
    assert hub.hub_unreachable(timeout=5) is None


def test_a_silent_hub_is_unreachable_within_the_timeout(silent_hub):
    started = time.monotonic()
    reason = hub.hub_unreachable(timeout=0.5)
    assert reason and silent_hub in reason and "0.5 s" in reason
    assert time.monotonic() - started < 5


def test_offline_mode_answers_without_a_request(monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail
    assert hub.hub_unreachable() == "HF_HUB_OFFLINE=1 is set"


@pytest.mark.parametrize(
    ("name", "local"),
    [("org/model", False), ("model", False), ("PlanTL-GOB-ES/bsc-bio-ehr-es", False), ("./model", True),
     ("/abs/model", True), ("~/model", True), ("a/b/c", True), ("C:\\models\\x", True), ("C:/models/x", True),
     ("org/", True), ("/model", True), ("tests/not-there", True), ("nofolder/model", False)],
)  # fmt: skip
def test_looks_local(name, local, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # "tests/" exists here, "nofolder/" does not
    assert hub.looks_local(name) is local


MODEL = "PlanTL-GOB-ES/bsc-bio-ehr-es"  # the id of the bug report: a namespace, a "-" and a "." in the name
DATASET = "org/radiology-reports"
REPOS = {
    ("model", MODEL): {"config.json": b'{"model_type": "bert"}', "vocab.txt": b"[PAD]\n[UNK]\n"},
    ("dataset", DATASET): {"README.md": b"---\nlicense: other\n---\n", "data/train.parquet": b"PAR1"},
}


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """A Hub cache filled by snapshot_download from a fake Hub, then offline (HF_HUB_OFFLINE=1) with it."""
    fill_hub_cache(REPOS, tmp_path / "hub-cache", monkeypatch)
    return tmp_path / "hub-cache"


@pytest.mark.parametrize(("name", "kind"), [(MODEL, "model"), (DATASET, "dataset")])
def test_a_namespaced_id_in_the_hub_cache_is_usable_offline(offline_cache, name, kind):
    hub.check_usable(name, kind)
    assert hub.in_hub_cache(name, kind) and hub.is_hub_id(name)


def test_a_model_cached_as_a_dataset_is_not_a_cached_model(offline_cache):
    assert not hub.in_hub_cache(DATASET, "model") and not hub.in_hub_cache(MODEL, "dataset")


@pytest.mark.parametrize(("name", "kind"), [("org/not-cached", "model"), (f"{MODEL}-v2", "model"), ("d", "dataset")])
def test_an_id_not_cached_while_offline_fails_at_once_saying_what_to_do(offline_cache, monkeypatch, name, kind):
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: a request would fail
    started = time.monotonic()
    with pytest.raises(hub.UnusableError) as caught:
        hub.check_usable(name, kind, option="--base", advice="or run the tiny preset.")
    assert time.monotonic() - started < 5
    assert str(caught.value) == (
        f"--base {name}: no such folder, and the Hub {kind} {name!r} is not in the Hub cache and cannot be downloaded "
        "now (HF_HUB_OFFLINE=1 is set). Unset HF_HUB_OFFLINE to download it once, or run the tiny preset."
    )


def test_an_id_not_cached_asks_the_hub_when_online(answering_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub.check_usable("org/anything")  # the Hub answers: whoever loads it downloads it


def test_an_id_not_cached_and_a_silent_hub_fail_within_the_timeout(silent_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    started = time.monotonic()
    with pytest.raises(hub.UnusableError, match="could not be reached within 0.5 s.*Check the network or HF_ENDPOINT"):
        hub.check_usable("org/anything", timeout=0.5)
    assert time.monotonic() - started < 5


def test_a_local_folder_is_used_and_a_file_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "model").mkdir(parents=True)  # a folder named like a Hub id wins
    for name in (str(tmp_path), "org/model", "org"):
        hub.check_usable(name)
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(hub.UnusableError, match="--model_name_or_path weights.bin is a file; give a model folder"):
        hub.check_usable("weights.bin")


@pytest.mark.parametrize("name", ["./x", "runs/x", "../models/x", "runs/x/model", "~/no-such-model", "org/"])
def test_a_missing_local_path_is_no_such_folder_and_never_sent_to_the_hub(silent_hub, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # "runs/x" is a path here, as after a first training run
    started = time.monotonic()
    with pytest.raises(hub.UnusableError) as caught:
        hub.check_usable(name, timeout=30)  # a Hub request would wait on the silent Hub
    relative = "" if name.startswith("~") else f" (relative to {tmp_path})"
    assert str(caught.value) == f"--model_name_or_path {name}: no such folder{relative}."
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("name", ["C:\\models\\x", "C:/models/x", "D:\\x"])
def test_a_windows_path_is_a_local_path(silent_hub, name):
    with pytest.raises(hub.UnusableError) as caught:
        hub.check_usable(name, "dataset", option="--dataset", timeout=30)
    assert str(caught.value) == f"--dataset {name}: no such folder."


@pytest.mark.parametrize("name", ["org/my model", "org/na--me", "-org/name", "a" * 97])
def test_a_name_that_is_neither_a_folder_nor_a_hub_id(silent_hub, name):
    with pytest.raises(hub.UnusableError, match="no such folder, and not a Hub repo id"):
        hub.check_usable(name, timeout=30)
    assert not hub.is_hub_id(name)


def test_hub_id_problem_follows_huggingface_hub_and_path_syntax():
    assert hub.hub_id_problem(MODEL) is None and hub.hub_id_problem("gpt2") is None
    assert hub.hub_id_problem("runs/tiny/model") == "a local path, not a Hub repo id"
    assert hub.hub_id_problem("C:\\models\\x") == "a local path, not a Hub repo id"
    assert hub.hub_id_problem("org/a b").startswith("not a Hub repo id")
