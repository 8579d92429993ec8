"""Helpers shared by several test modules: tiny bundles, fresh interpreters, the predict CLI, a fake Hub.

Fixtures live in ``conftest.py``; test modules import helpers from here and never from each other.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import hf_pipeline
from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus
from hf_pipeline.predict import main as predict_main
from hf_pipeline.training.base_models import build_tiny_model, train_wordpiece

REPO = Path(__file__).resolve().parent.parent
REPORT = "Leve dilatación de la pelvis renal del RD, sin quiste. Control en 3 meses."
REPORTS = 300  # the synthetic reports of the predict tests
CHUNK = 25
SPACE_README = """---
title: Radiology NER
sdk: gradio
sdk_version: 6.0.0
app_file: app.py
license: apache-2.0
---

Demo.
"""
FAKE_TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyzABCDEFGH"  # 34 letters, not a real token


# --- tiny bundles ---------------------------------------------------------------------------------------------------


def sample_texts() -> list[str]:
    return [doc.text for doc in read_corpus(SAMPLE_CORPUS / "train").documents]


def make_bundle(folder: Path, max_position_embeddings: int = 64, seed: int = 0, layers=(1, 2, 3)) -> Path:
    """A bundle of tiny random BERTs (one per layer) with a WordPiece tokenizer trained on the sample."""
    torch.manual_seed(seed)
    tokenizer = train_wordpiece(sample_texts(), vocab_size=400, model_max_length=max_position_embeddings)
    labels = label_names(SPRADIE_TYPES)
    models = [build_tiny_model(tokenizer, labels, max_position_embeddings, hidden_size=32) for _ in layers]
    return hf_pipeline.save_bundle(models, tokenizer, folder, layers=layers)


def make_shared_bundle(folder: Path, max_position_embeddings: int = 64, seed: int = 0) -> Path:
    """A shared-encoder bundle: one tiny random BERT whose classifier has a block of labels per layer."""
    from transformers import BertForTokenClassification

    from hf_pipeline.bundle import make_shared_config

    torch.manual_seed(seed)
    tokenizer = train_wordpiece(sample_texts(), vocab_size=400, model_max_length=max_position_embeddings)
    labels = label_names(SPRADIE_TYPES)
    config = build_tiny_model(tokenizer, labels, max_position_embeddings, hidden_size=32).config
    make_shared_config(config, labels, [1, 2, 3])
    return hf_pipeline.save_bundle([BertForTokenClassification(config)], tokenizer, folder)


# --- fresh interpreters and pipeline outputs -------------------------------------------------------------------------


def run_fresh(code: str, cwd: Path, project: bool = False, **env: str) -> str:
    """Run code in a new interpreter that (unless ``project``) never imports this project; returns stdout."""
    check = "\nimport sys; assert not any(m.startswith(('hf_pipeline', 'hf_dataset')) for m in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code + ("" if project else check)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **env},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def predict_in_fresh_process(bundle: Path, cwd: Path) -> list[dict]:
    """REPORT's entities from ``pipeline("radiology-ner", trust_remote_code=True)`` in a process without the project."""
    code = (
        "import json\nfrom transformers import pipeline\n"
        f"ner = pipeline('radiology-ner', model={str(bundle)!r}, trust_remote_code=True)\n"
        f"print(json.dumps(ner({REPORT!r})))"
    )
    return json.loads(run_fresh(code, cwd).strip().splitlines()[-1])


def assert_same_entities(results: list[list[dict]], expected: list[list[dict]]) -> None:
    """The same entities in the same order, scores equal up to padding noise."""
    assert [[without_score(e) for e in doc] for doc in results] == [[without_score(e) for e in doc] for doc in expected]
    scores = [e["score"] for doc in results for e in doc]
    assert scores == pytest.approx([e["score"] for doc in expected for e in doc], abs=1e-5)


def assert_stock_tokens(text: str, tokens: list[dict], labels: list[str]) -> None:
    """The stock ``token-classification`` pipeline's output (no aggregation) for ``text``: one dict per non-``O``
    token, in token order, with a label of the bundle and the offsets of its subword."""
    assert tokens, "random tiny layers label some tokens"
    for token in tokens:
        assert set(token) == {"entity", "score", "index", "word", "start", "end"}
        assert token["entity"] in labels and token["entity"] != "O" and 0 < token["score"] <= 1
        assert text[token["start"] : token["end"]] == token["word"].removeprefix("##")
    indices = [token["index"] for token in tokens]
    assert indices == sorted(set(indices))


def without_score(entity: dict) -> dict:
    return {key: value for key, value in entity.items() if key != "score"}


def assert_output_contract(texts: list[str], outputs: list[list[dict]]) -> None:
    """Each text's entities in output order, with exact offsets, each (type, span) once."""
    for text, entities in zip(texts, outputs):
        assert entities == sorted(entities, key=lambda e: (e["start"], -e["end"], e["layer"]))
        assert all(text[e["start"] : e["end"]] == e["word"] and 0 < e["score"] <= 1 for e in entities)
        assert len({(e["entity_group"], e["start"], e["end"]) for e in entities}) == len(entities)


def assert_int8_close_and_batch_independent(bundle: Path) -> None:
    """int8 entities are the same alone and in a batch, and mostly fp32's."""
    texts = sample_texts()[:6]
    fp32 = hf_pipeline.load_pipeline(bundle)(texts)
    int8 = hf_pipeline.load_pipeline(bundle, quantize="int8")
    together = int8(texts, batch_size=8)
    alone = [int8(text, batch_size=1) for text in texts]
    assert [[without_score(e) for e in doc] for doc in together] == [[without_score(e) for e in doc] for doc in alone]
    same = sum(without_score(e) in [without_score(f) for f in b] for a, b in zip(together, fp32) for e in a)
    assert same >= 0.8 * sum(map(len, fp32))


def assert_predict_cli_writes_what_the_pipeline_returns(bundle: Path, output: Path) -> None:
    """``predict --format brat`` on the sample's test split writes, per report, the pipeline's entities."""
    source = SAMPLE_CORPUS / "test"
    assert cli("--model", bundle, "--input", source, "--output", output, "--format", "brat") == 0
    ner = hf_pipeline.load_pipeline(bundle)
    for document in read_corpus(source).documents[:3]:
        written = (output / f"{document.id}.ann").read_text(encoding="utf-8").splitlines()
        assert len(written) == len(ner(document.text))


# --- the predict command line ----------------------------------------------------------------------------------------


def synthetic_reports(count: int = REPORTS) -> list[dict[str, str]]:
    """Reports of one to several sentences of the sample corpus; some need several windows of the tiny model."""
    sentences = [s.strip() + "." for text in sample_texts() for s in text.split(".") if len(s.strip()) > 3]
    reports = []
    for number in range(count):
        size = 1 + (number * 7) % 9
        start = (number * 13) % len(sentences)
        reports.append({"id": f"r{number:04d}", "text": " ".join(sentences[start : start + size])})
    return reports


def cli(*args: object) -> int:
    return predict_main([str(arg) for arg in args])


def shards(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(path) for path in sorted((folder / "data").glob("*.parquet")))


def launch_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_DATASETS_CACHE=str(tmp_path / "datasets-cache"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def predict_command(bundle: Path, source: Path, output: Path) -> list[str]:
    return ["-m", "hf_pipeline.predict", "--model", str(bundle), "--input", str(source), "--output", str(output),
            "--format", "parquet", "--chunk_size", str(CHUNK)]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- a fake Hub -----------------------------------------------------------------------------------------------------

Repos = Mapping[tuple[str, str], Mapping[str, bytes]]  # (repo type, repo id) -> {path in the repo: content}


class _FakeHubHandler(http.server.BaseHTTPRequestHandler):
    """The part of the Hub API that ``hf_hub_download`` and ``snapshot_download`` use, for the repos in ``repos``."""

    repos: Repos = {}
    commit = "c0ffee" * 6 + "c0ff"  # one revision, 40 hex digits

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        api = re.fullmatch(r"/api/(models|datasets)/(.+?)/(revision|tree)/[^/]+/?", self.path.split("?")[0])
        if api:
            kind, repo_id, what = api.groups()
            files = self.repos.get((kind[:-1], repo_id))
            if files is None:
                return self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})
            if what == "revision":
                info = {"id": repo_id, "sha": self.commit, "siblings": [{"rfilename": path} for path in files]}
            else:
                info = [
                    {"type": "file", "path": path, "size": len(data), "oid": _oid(data)} for path, data in files.items()
                ]
            return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        self._file(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._file(body=False)

    def _file(self, body: bool) -> None:
        match = re.fullmatch(r"/(?:(datasets)/)?(.+?)/resolve/[^/]+/(.+)", self.path.split("?")[0])
        kind, repo_id, path = match.groups() if match else (None, "", "")
        data = self.repos.get(("dataset" if kind else "model", repo_id), {}).get(path)
        if data is None:
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, body)
        headers = {"X-Repo-Commit": self.commit, "ETag": f'"{_oid(data)}"', "Content-Type": "application/octet-stream"}
        self._send(200, data, headers, body)

    def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool = True) -> None:
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(data))}.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub gives it


def repo_files(folder: Path) -> dict[str, bytes]:
    """Every file below ``folder`` by its path in a repo (``layer_2/config.json``): what a fake Hub serves."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}


@contextmanager
def fake_hub(repos: Repos) -> Iterator[str]:
    """A Hub on 127.0.0.1 serving ``repos``; yields its URL (an ``endpoint`` for huggingface_hub)."""
    handler = type("Handler", (_FakeHubHandler,), {"repos": repos})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def fill_hub_cache(repos: Repos, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Download ``repos`` into the Hub cache ``cache`` with huggingface_hub's own ``snapshot_download``, from a fake
    Hub, and leave huggingface_hub offline with that cache as its default (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants, snapshot_download

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with fake_hub(repos) as endpoint:
        for kind, repo_id in repos:
            snapshot_download(repo_id, repo_type=kind, cache_dir=cache, endpoint=endpoint)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def assert_pipeline_returns_merged_and_nested(
    ner, text: str, found: list[tuple[str, int, int, float]], types: list[str]
) -> None:
    """The pipeline returns exactly the entities `merged_and_nested` derives from `found`; scores agree to 1e-4
    (the pipeline computes in float32, the references in float64, so a rounded digit may differ)."""
    got = [(e["entity_group"], e["start"], e["end"], e["layer"], e["score"]) for e in ner(text)]
    expected = merged_and_nested(text, found, types)
    assert [row[:4] for row in got] == [row[:4] for row in expected] and got
    assert [row[4] for row in got] == pytest.approx([row[4] for row in expected], abs=1e-4)


def merged_and_nested(text: str, found: list[tuple[str, int, int, float]], types: list[str]) -> list[tuple]:
    """What the pipeline returns for entities its sequences found (type, start, end, score): each (type, span)
    once with its best score, with the layer the dataset's own layering policy gives it, in output order."""
    from hf_dataset.entities import Entity
    from hf_dataset.layers import encode

    best: dict[tuple[str, int, int], float] = {}
    for kind, start, end, score in found:
        best[(kind, start, end)] = max(best.get((kind, start, end), float("-inf")), score)
    entities = [Entity(kind, ((start, end),)) for kind, start, end in best]
    layers = encode(text, entities, types, max_layers=len(entities) + 1).layer_of
    rows = [(*key, layer, score) for (key, score), layer in zip(best.items(), layers)]
    return sorted(rows, key=lambda row: (row[1], -row[2], row[3]))
