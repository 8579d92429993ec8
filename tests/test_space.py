"""The Gradio Space (space/app.py): views, limits, the /analyze API, a real server, a real headless Chromium."""

from __future__ import annotations

import html
import importlib.util
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import hf_pipeline
from hf_dataset import SPRADIE_TYPES
from hf_dataset.brat import parse_ann
from hf_pipeline.words import word_spans

REPO = Path(__file__).resolve().parent.parent
APP_PATH = REPO / "space" / "app.py"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
XSS = "<script>window.__xss=1</script> Riñón derecho sin dilatación de la pelvis renal."
STARTUP_TIMEOUT_S = 90


def load_app():
    spec = importlib.util.spec_from_file_location("space_app", APP_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


app = load_app()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = STARTUP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{process.stdout.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


def key(entities: list[dict]) -> list[tuple]:
    return [(e["entity_group"], e["start"], e["end"], e["layer"], e["word"]) for e in entities]


def assert_same_entities(got: list[dict], expected: list[dict]) -> None:
    assert key(got) == key(expected)
    assert [e["score"] for e in got] == pytest.approx([float(e["score"]) for e in expected], abs=1e-5)


@pytest.fixture(scope="module")
def ner(tiny_bundle: Path):
    return hf_pipeline.load_pipeline(tiny_bundle)


@pytest.fixture(scope="module")
def example_text() -> str:
    return app.load_examples()[0]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path):
    """``python space/app.py --model DIR`` on a free port chosen through gradio's own environment variables.

    ``MODEL_ID`` names a folder that does not exist: the server only starts if ``--model`` wins.
    """
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "MODEL_ID": str(tiny_bundle.parent / "no-such-model"),
    }
    process = subprocess.Popen(
        [sys.executable, str(APP_PATH), "--model", str(tiny_bundle)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


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
        assert f'data-label="{app.short_label(entity["entity_group"])}"' in analysis.html
        assert entity["entity_group"] in analysis.html  # legend
    assert sum(len(view["entities"]) for view in analysis.layers.values()) == len(expected)
    for layer, view in analysis.layers.items():
        spans = sorted((e["start"], e["end"]) for e in view["entities"])
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), f"overlap in {layer}"
    assert [row[0] for row in analysis.table] == [e["entity_group"] for e in expected]
    assert [row[1:5] for row in analysis.table] == [[e["word"], e["start"], e["end"], e["layer"]] for e in expected]

    json_path, ann_path = app.write_downloads(analysis, tmp_path, model_name="tiny")
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
    drawn = app.render_stacked(text, entities, app.type_colors(list(app.TYPE_COLORS)))
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


def test_inline_brat_writer_matches_the_project_writer(tmp_path):
    text = "Quiste\r\nsimple de 3 mm.\nSin\u2028cambios."
    entities = [
        {"entity_group": "Finding", "start": 0, "end": 15, "layer": 1, "score": 0.5, "word": text[0:15]},
        {"entity_group": "Measure", "start": 19, "end": 23, "layer": 1, "score": 0.5, "word": text[19:23]},
        {"entity_group": "Finding", "start": 25, "end": 37, "layer": 2, "score": 0.5, "word": text[25:37]},
    ]
    app._brat_writer()(tmp_path / "project.ann", text, entities)
    app.write_ann_inline(tmp_path / "inline.ann", text, entities)
    assert (tmp_path / "inline.ann").read_bytes() == (tmp_path / "project.ann").read_bytes()


def test_report_text_is_html_escaped(ner):
    analysis = app.analyze(XSS, ner)
    assert "<script" not in analysis.html
    assert "&lt;script&gt;" in analysis.html
    fake = [{"entity_group": 'Finding"><img src=x onerror=alert(1)>', "start": 0, "end": 8, "layer": 1}]
    fake[0] |= {"score": 1.0, "word": XSS[:8]}
    drawn = app.render_stacked(XSS, fake, {})
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
    assert result.stderr.startswith("error: --model: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Give a bundle folder" in result.stderr and "Traceback" not in result.stderr
    assert seconds < 15  # no Hub retries, no gradio or transformers import


def test_hub_id_offline_says_what_to_do():
    result, _ = run_app(MODEL_ID="org/not-cached", HF_HUB_OFFLINE="1")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: MODEL_ID: Cannot download 'org/not-cached'")
    assert "HF_HUB_OFFLINE=1 is set" in result.stderr and "Hub repo id online" in result.stderr


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
    """On a Space the project is not installed: the bundle's remote code and the inline brat writer run."""
    monkeypatch.setitem(sys.modules, "hf_pipeline", None)
    monkeypatch.setitem(sys.modules, "hf_dataset.brat", None)
    remote = app.load_ner(str(tiny_bundle))
    assert type(remote).__module__ != "hf_pipeline.radiology_ner"
    assert app._brat_writer() is app.write_ann_inline
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
    analysis = app.analyze(example_text, shared, colors=app.type_colors(app.model_types(shared)))
    assert {e["layer"] for e in analysis.entities} == {1, 2, 3} and set(analysis.layers) == {1, 2, 3}
    monkeypatch.setenv("QUANTIZE", "int4")
    with pytest.raises(SystemExit, match="QUANTIZE='int4': set it to int8"):
        app.load_ner(str(shared_bundle))


# --- a real browser ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's chromium (apt-get install chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_shows_stacked_entities_escapes_html_and_limits_length(browser, server, ner, example_text):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(30_000)
    page.goto(server, timeout=60_000)
    textbox = page.get_by_label("Informe")
    analyze = page.get_by_role("button", name="Analizar")
    stacked = page.locator("#stacked-view")

    page.locator("#examples button").first.click()
    expect(textbox).to_have_value(example_text.replace("\r\n", "\n"))
    analyze.click()
    expect(stacked.locator(".rn-legend")).to_be_visible()
    types = sorted({e["entity_group"] for e in ner(example_text)})
    assert types, "the tiny bundle predicted nothing for the example; pick another example"
    for entity_type in types:
        expect(stacked.locator(".rn-legend")).to_contain_text(entity_type)
        expect(stacked.locator(f".rn-label[data-label='{app.short_label(entity_type)}']").first).to_be_visible()
    assert_labels_readable(page, len(ner(example_text)))  # with gradio's own styles around the view
    expect(page.locator("a[href$='/entities.json']")).to_have_count(1)
    expect(page.locator("a[href$='/report.ann']")).to_have_count(1)
    expect(page.get_by_text("no es un producto sanitario").first).to_be_visible()

    textbox.fill(XSS)
    analyze.click()
    expect(stacked.locator(".rn-text")).to_have_text(XSS)
    assert page.evaluate("typeof window.__xss") == "undefined"

    textbox.fill("a" * (app.MAX_CHARS + 1))
    analyze.click()
    expect(stacked).to_contain_text("máximo de esta demo es 20.000")
    page.close()


DENSE_TEXT = "Riñón RD 5,4 cm, RI 5,6 cm; DAP 4 mm. No RD ni RI: 5 y 6."


def dense_entities(text: str) -> list[dict]:
    """Every word and mark an entity on every layer, types cycling: the worst case for labels (1-char neighbours)."""
    types = list(app.TYPE_COLORS)
    entities = []
    for index, (start, end) in enumerate(word_spans(text)):
        for layer in (1, 2, 3):
            entity_type = types[(index + 3 * layer) % len(types)]
            entities.append({"entity_group": entity_type, "start": start, "end": end, "layer": layer, "score": 0.5})
    for entity in entities:
        entity["word"] = text[entity["start"] : entity["end"]]
    return entities


LABEL_BOXES = """() => {
    const boxes = [...document.querySelectorAll('.rn-label')].map((label) => {
        const box = label.getBoundingClientRect();
        const text = getComputedStyle(label, '::before').content;
        return {left: box.left, right: box.right, top: box.top, bottom: box.bottom, text: text,
                clipped: label.scrollWidth > label.clientWidth + 1};
    });
    const overlaps = [];
    boxes.forEach((a, i) => boxes.slice(i + 1).forEach((b) => {
        if (a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5) {
            overlaps.push(a.text + ' / ' + b.text);
        }
    }));
    return {count: boxes.length, overlaps: overlaps, clipped: boxes.filter((b) => b.clipped).map((b) => b.text)};
}"""


def assert_labels_readable(page, expected_count: int) -> None:
    found = page.evaluate(LABEL_BOXES)
    assert found["count"] == expected_count
    assert found["overlaps"] == [], f"labels run into each other: {found['overlaps'][:10]}"
    assert found["clipped"] == [], f"labels cut: {found['clipped'][:10]}"


@pytest.mark.slow
def test_browser_dense_report_labels_never_run_into_each_other(browser, tmp_path):
    """Short adjacent entities on every layer: each label is whole and apart from the others; rows name their layer."""
    from playwright.sync_api import expect

    entities = dense_entities(DENSE_TEXT)
    drawn = app.render_stacked(DENSE_TEXT, entities, app.type_colors(list(app.TYPE_COLORS)))
    page = browser.new_page(viewport={"width": 700, "height": 500})
    page.set_content(f"<!doctype html><meta charset='utf-8'><body>{drawn}</body>")
    assert_labels_readable(page, len(entities))
    for layer in (1, 2, 3):
        expect(page.locator(f".rn-layer[data-label='capa {layer}']")).to_be_visible()
    assert page.locator(".rn-text").inner_text().replace("\n", "") == DENSE_TEXT.replace("\n", "")
    page.screenshot(path=str(tmp_path / "dense-report.png"), full_page=True)  # kept under pytest's basetemp
    page.close()
