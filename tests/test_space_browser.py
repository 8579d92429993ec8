"""The demo in a real headless Chromium: the stacked view, escaping, the length limit, and labels that stay
readable on a dense report."""

from __future__ import annotations

import pytest

from hf_pipeline.words import word_spans

from .space_helpers import CHROMIUM, CHROMIUM_ARGS, XSS, app, render


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
        expect(stacked.locator(f".rn-label[data-label='{render.short_label(entity_type)}']").first).to_be_visible()
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
    types = list(render.TYPE_COLORS)
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
    drawn = render.render_stacked(DENSE_TEXT, entities, render.type_colors(list(render.TYPE_COLORS)))
    page = browser.new_page(viewport={"width": 700, "height": 500})
    page.set_content(f"<!doctype html><meta charset='utf-8'><body>{drawn}</body>")
    assert_labels_readable(page, len(entities))
    for layer in (1, 2, 3):
        expect(page.locator(f".rn-layer[data-label='capa {layer}']")).to_be_visible()
    assert page.locator(".rn-text").inner_text().replace("\n", "") == DENSE_TEXT.replace("\n", "")
    page.screenshot(path=str(tmp_path / "dense-report.png"), full_page=True)  # kept under pytest's basetemp
    page.close()
