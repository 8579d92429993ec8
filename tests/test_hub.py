"""hf_pipeline.hub: the one quick answer to "can the Hub be used now?", against real local HTTP servers."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from huggingface_hub import constants

from hf_pipeline import hub


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
    [("org/model", False), ("model", False), ("./model", True), ("/abs/model", True), ("~/model", True),
     ("a/b/c", True), ("C:\\models\\x", True), ("tests/not-there", True), ("nofolder/model", False)],
)  # fmt: skip
def test_looks_local(name, local, monkeypatch):
    monkeypatch.chdir(hub.Path(__file__).resolve().parent.parent)  # "tests/" exists here, "nofolder/" does not
    assert hub.looks_local(name) is local


def test_unavailable_accepts_paths_and_cached_repos_and_says_why_otherwise(tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub.unavailable(str(tmp_path)) is None
    assert hub.unavailable(str(tmp_path / "missing")) == f"{tmp_path / 'missing'} does not exist."
    reason = hub.unavailable("org/not-cached")
    assert reason.startswith("Cannot download 'org/not-cached'") and "HF_HUB_OFFLINE=1" in reason
    snapshot = tmp_path / "cache" / "datasets--org--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    assert hub.unavailable("org/cached", repo_type="dataset") is None
    assert hub.unavailable("org/cached", repo_type="model") is not None  # a dataset is not a model


def test_unavailable_asks_the_hub_when_online(answering_hub, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert hub.unavailable("org/anything") is None
