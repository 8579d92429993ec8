"""The Gradio Space (space/app.py): views, limits, the /analyze API, a real server, a real headless Chromium."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from hf_dataset import SPRADIE_TYPES
from hf_dataset.ann import parse_ann, write_ann
from hf_dataset.entities import Entity

from .helpers import REPO, fill_hub_cache, free_port, repo_files
from .space_helpers import APP_PATH, XSS, app, render


def key(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["start"], e["end"], e["layer"], e["word"]) for e in entities]


def assert_same_entities(got: list[dict], expected: list[dict]) -> None:
    assert key(got) == key(expected)
    assert [e["score"] for e in got] == pytest.approx([float(e["score"]) for e in expected], abs=1e-5)


@pytest.fixture(scope="module")
def client(server: str) -> Client:
    return Client(server, verbose=False)


# --- the pure functions ---------------------------------------------------------------------------------------


def test_analyze_builds_every_view(ner, example_text, tmp_path):
    expected = ner(example_text)
    analysis = app.analyze(example_text, ner)
    assert analysis.message is None
    assert_same_entities(analysis.entities, expected)
    for entity in analysis.entities:
        assert example_text[entity["start"] : entity["end"]] == entity["word"]
        assert f'data-label="{render.short_label(entity["entity_group"])}"' in analysis.html
        assert entity["entity_group"] in analysis.html  # legend
    assert sum(len(view["entities"]) for view in analysis.layers.values()) == len(expected)
    for layer, view in analysis.layers.items():
        spans = sorted((e["start"], e["end"]) for e in view["entities"])
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), f"overlap in {layer}"
    assert [row[0] for row in analysis.table] == [e["entity_group"] for e in expected]
    assert [row[1:5] for row in analysis.table] == [[e["word"], e["start"], e["end"], e["layer"]] for e in expected]

    json_path, ann_path = app.write_downloads(analysis, tmp_path, app.pipeline_words(ner), model_name="tiny")
    saved = json.loads(json_path.read_text(encoding="utf-8"))
    assert saved["text"] == example_text and saved["model"] == "tiny"
    assert_same_entities(saved["entities"], expected)
    read_back, problems = parse_ann(ann_path.read_text(encoding="utf-8"), example_text, str(ann_path))
    assert not problems
    assert [(e.type, e.fragments) for e in read_back] == [
        (e["entity_group"], ((e["start"], e["end"]),)) for e in expected
    ]


def drawn_text(stacked_html: str) -> str:
    """The report text as the stacked view shows it: tags dropped, entities unescaped (labels are CSS-only)."""
    body = stacked_html.split('<div class="rn-text">', 1)[1].split('<div class="rn-legend">', 1)[0]
    return html.unescape(re.sub(r"<[^>]*>", "", body))


def test_stacked_view_draws_nested_entities_under_one_copy_of_the_text(ner, example_text):
    text = "Riñones derecho e izquierdo normales."
    entities = [
        {"entity_group": "Anatomical_Entity", "start": 0, "end": 27, "layer": 1, "score": 0.9},
        {"entity_group": "Anatomical_Entity", "start": 0, "end": 15, "layer": 2, "score": 0.8},
        {"entity_group": "Location", "start": 8, "end": 15, "layer": 3, "score": 0.7},
        {"entity_group": "Finding", "start": 28, "end": 36, "layer": 1, "score": 0.6},
    ]
    for entity in entities:
        entity["word"] = text[entity["start"] : entity["end"]]
    drawn = render.render_stacked(text, entities, render.type_colors(list(render.TYPE_COLORS)))
    assert drawn_text(drawn) == text
    # segments [0,8) [8,15) [15,27) [28,36), each with one row per layer (3) under it; one label per entity;
    # the three that start an entity are wide enough for a label; a key before the text names the rows
    assert drawn.count('<span class="rn-seg') == 1 + 4
    assert drawn.count('class="rn-seg rn-labelled"') == 3
    assert drawn.count('class="rn-row"') == 3 + 4 * 3
    assert [f'data-label="capa {layer}"' in drawn for layer in (1, 2, 3)] == [True, True, True]
    assert drawn.count('class="rn-label"') == len(entities)
    assert drawn.count(" rn-first") == drawn.count(" rn-last") == len(entities)
    assert drawn.count('title="Anatomical_Entity · capa 1 · 0–27') == 3  # one bar piece per segment it spans

    assert drawn_text(app.analyze(example_text, ner).html) == example_text


def test_the_space_writes_brat_with_the_writer_that_travels_with_the_bundle(tiny_bundle, tmp_path, monkeypatch):
    """Without the project (a Space), the bundle's words.py writes the .ann: byte for byte the project's writer."""
    text = "Quiste\r\nsimple de 3 mm.\nSin\u2028cambios."
    entities = [
        {"entity_group": "Finding", "start": 0, "end": 15, "layer": 1, "score": 0.5, "word": text[0:15]},
        {"entity_group": "Measure", "start": 19, "end": 23, "layer": 1, "score": 0.5, "word": text[19:23]},
        {"entity_group": "Finding", "start": 25, "end": 37, "layer": 2, "score": 0.5, "word": text[25:37]},
    ]
    write_ann(tmp_path / "project.ann", text, [Entity.from_prediction(e) for e in entities])
    monkeypatch.setitem(sys.modules, "hf_pipeline", None)
    remote = app.load_ner(str(tiny_bundle))
    words = app.pipeline_words(remote)
    assert words.__name__ != "hf_pipeline.words" and Path(words.__file__).parent != REPO / "hf_pipeline"
    analysis = app.Analysis(text=text, entities=entities, html="")
    _, ann_path = app.write_downloads(analysis, tmp_path, words)
    assert ann_path.read_bytes() == (tmp_path / "project.ann").read_bytes()


def test_report_text_is_html_escaped(ner):
    analysis = app.analyze(XSS, ner)
    assert "<script" not in analysis.html
    assert "&lt;script&gt;" in analysis.html
    fake = [{"entity_group": 'Finding"><img src=x onerror=alert(1)>', "start": 0, "end": 8, "layer": 1}]
    fake[0] |= {"score": 1.0, "word": XSS[:8]}
    drawn = render.render_stacked(XSS, fake, {})
    assert "<img" not in drawn and "<script" not in drawn
    assert "Finding&quot;&gt;&lt;img" in drawn  # an unknown type still gets its legend entry


def test_too_long_and_empty_inputs_give_a_message(ner):
    long = app.analyze("a" * (app.MAX_CHARS + 1), ner)
    assert long.entities == [] and long.table == []
    assert "20.001" in long.message and "20.000" in long.message
    assert long.message in long.html
    assert app.analyze(" \n", ner).message.startswith("Escribe o pega")
    assert app.analyze("a" * app.MAX_CHARS, ner).message is None


def test_examples_fall_back_to_builtin_sentences(tmp_path):
    assert app.load_examples(tmp_path) == app.BUILTIN_EXAMPLES
    assert 1 <= len(app.load_examples()) <= app.N_EXAMPLES


def run_app(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    environment = {name: value for name, value in os.environ.items() if name != "MODEL_ID"} | env
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(APP_PATH), *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    return result, time.monotonic() - start


@pytest.mark.parametrize("model", ["./runs/nothere", "runs/nothere", "/no/such/bundle"])
def test_missing_local_model_is_a_one_line_error_at_once(model):
    result, seconds = run_app("--model", model, HF_HUB_OFFLINE="1")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --model {model}: no such folder") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert seconds < 15  # no Hub retries, no gradio or transformers import


def test_hub_id_offline_says_what_to_do():
    result, _ = run_app(MODEL_ID="org/not-cached", HF_HUB_OFFLINE="1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: MODEL_ID org/not-cached: no such folder, and the Hub model")
    assert "HF_HUB_OFFLINE=1 is set" in result.stderr and "Unset HF_HUB_OFFLINE" in result.stderr
    assert "or give a bundle folder (for example runs/tiny/model)." in result.stderr


def test_a_namespaced_model_in_the_hub_cache_is_no_problem_offline(tiny_bundle, tmp_path, monkeypatch):
    fill_hub_cache({("model", "org/tiny-radiology-ner"): repo_files(tiny_bundle)}, tmp_path / "cache", monkeypatch)
    assert app.model_problem("org/tiny-radiology-ner", "MODEL_ID") is None
    assert app.model_problem("org/other", "MODEL_ID").startswith("MODEL_ID org/other: no such folder, and the Hub")


def test_no_model_is_a_clear_error():
    env = {name: value for name, value in os.environ.items() if name != "MODEL_ID"}
    result = subprocess.run(
        [sys.executable, str(APP_PATH)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "--model" in result.stderr and "MODEL_ID" in result.stderr


# --- a real server ----------------------------------------------------------------------------------------------


def test_client_analyze_returns_the_pipeline_entities(client, ner, example_text):
    for text in (example_text, "Leve dilatación de la pelvis renal del RD, sin quiste. Control en 3 meses."):
        got = client.predict(text, api_name="/analyze")
        assert isinstance(got, list) and all(isinstance(e, dict) for e in got)
        assert_same_entities(got, ner(text))
    assert client.predict("", api_name="/analyze") == []


def test_client_too_long_is_an_app_error(client):
    with pytest.raises(AppError, match="máximo de esta demo"):
        client.predict("a" * (app.MAX_CHARS + 1), api_name="/analyze")


def test_space_mode_without_the_project_code(tiny_bundle, ner, example_text, monkeypatch):
    """On a Space the project is not installed: the bundle's remote code runs, its words.py writes brat."""
    monkeypatch.setitem(sys.modules, "hf_pipeline", None)
    monkeypatch.setitem(sys.modules, "hf_dataset.brat", None)
    monkeypatch.setitem(sys.modules, "hf_dataset.ann", None)
    remote = app.load_ner(str(tiny_bundle))
    assert type(remote).__module__ != "hf_pipeline.radiology_ner"
    assert app.pipeline_words(remote).__name__ == type(remote).__module__.rpartition(".")[0] + ".words"
    demo = app.build_demo(remote, model_name="tiny")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        got = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(example_text, api_name="/analyze")
    finally:
        demo.close()
    assert_same_entities(got, ner(example_text))


def test_shared_bundle_with_int8_from_the_environment(shared_bundle, example_text, monkeypatch):
    monkeypatch.setenv("QUANTIZE", "int8")
    shared = app.load_ner(str(shared_bundle))
    assert shared.architecture == "shared" and shared.quantization == "int8"
    assert app.model_types(shared) == list(SPRADIE_TYPES)  # the per-layer labels, not the L1-/L2- block names
    analysis = app.analyze(example_text, shared, colors=render.type_colors(app.model_types(shared)))
    assert {e["layer"] for e in analysis.entities} == {1, 2, 3} and set(analysis.layers) == {1, 2, 3}
    monkeypatch.setenv("QUANTIZE", "int4")
    with pytest.raises(SystemExit, match="QUANTIZE='int4': set it to int8"):
        app.load_ner(str(shared_bundle))
