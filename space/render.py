"""The demo's HTML views, drawn from pipeline output dicts (``entity_group, score, word, start, end, layer``): the
stacked view (the text once, one bar row per layer under it, so nested and overlapping entities stay visible),
the colours and short labels of the types, and a message box. Pure functions: no gradio, no model."""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

# SpRadIE types get fixed colours and short labels; any other type takes the next colour of the palette.
TYPE_COLORS = {
    "Anatomical_Entity": "#2f6db5",
    "Finding": "#d1453b",
    "Location": "#1b9e8f",
    "Measure": "#e07b00",
    "Type_of_measure": "#b08900",
    "Degree": "#8e4fb3",
    "Abbreviation": "#8a5a3c",
    "Negation": "#3a8f2d",
    "Uncertainty": "#d6498f",
    "Conditional_Temporal": "#55606e",
}
TYPE_SHORT = {
    "Anatomical_Entity": "ANAT",
    "Finding": "FIND",
    "Location": "LOC",
    "Measure": "MEAS",
    "Type_of_measure": "TYPE",
    "Degree": "DEG",
    "Abbreviation": "ABBR",
    "Negation": "NEG",
    "Uncertainty": "UNC",
    "Conditional_Temporal": "COND",
}
EXTRA_COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f", "#bab0ac"]

STACKED_CSS = """
<style>
.rn-view { background: #ffffff; color: #1f2328; border: 1px solid #d0d7de; border-radius: 8px; padding: 14px 16px; }
.rn-text { font-family: ui-sans-serif, system-ui, sans-serif; font-size: 15px; line-height: 22px;
           white-space: pre-wrap; overflow-wrap: anywhere; }
.rn-seg { display: inline-block; vertical-align: top; margin-bottom: 6px; }
.rn-seg.rn-labelled { min-width: 34px; }
.rn-chars { display: block; white-space: pre-wrap; }
.rn-row { display: block; position: relative; height: 14px; margin-top: 1px; }
.rn-bar { position: absolute; left: 0; right: 0; top: 0; bottom: 0; border-bottom: 3px solid; }
.rn-bar.rn-first { left: 2px; border-top-left-radius: 3px; border-left: 2px solid; }
.rn-bar.rn-last { right: 2px; border-top-right-radius: 3px; }
.rn-label { position: absolute; left: 3px; top: -1px; font: 600 10px/13px ui-monospace, monospace;
            white-space: nowrap; z-index: 1; letter-spacing: 0.02em; padding-right: 2px; border-radius: 2px;
            max-width: calc(100% - 5px); overflow: hidden; }
.rn-label::before, .rn-layer::before { content: attr(data-label); }
.rn-rowkey { margin-right: 8px; border-right: 1px solid #d0d7de; padding-right: 6px; }
.rn-rowkey .rn-chars { height: 22px; }
.rn-layer { display: block; font: 10px/14px ui-sans-serif, system-ui, sans-serif; color: #57606a;
            white-space: nowrap; }
.rn-legend { display: flex; flex-wrap: wrap; gap: 6px 14px; margin-top: 12px; font-size: 13px;
             border-top: 1px solid #d0d7de; padding-top: 10px; }
.rn-key { display: inline-flex; align-items: center; gap: 5px; }
.rn-swatch { display: inline-block; width: 14px; height: 10px; border-radius: 2px; border-bottom: 3px solid; }
.rn-note { color: #57606a; font-size: 12px; margin-top: 6px; }
.rn-message { font-size: 15px; }
</style>
"""


def type_colors(types: Sequence[str]) -> dict[str, str]:
    """A colour per type: fixed for the SpRadIE types, the next palette colour for any other."""
    colors: dict[str, str] = {}
    extra = iter(EXTRA_COLORS * (len(types) // len(EXTRA_COLORS) + 1))
    for name in types:
        colors[name] = TYPE_COLORS.get(name) or next(extra)
    return colors


def short_label(entity_type: str) -> str:
    return TYPE_SHORT.get(entity_type) or entity_type[:4].upper()


def render_stacked(text: str, entities: Sequence[dict[str, Any]], colors: dict[str, str]) -> str:
    """Draw the text once with one bar row per layer under it: nested and overlapping entities stay visible.

    The text is cut at every entity boundary. A segment no entity covers is plain text; a covered segment is
    an inline block with its characters and, below them, one row per layer holding the bar of the entity of
    that layer that covers it (within a layer entities never overlap). Each entity's first segment carries its
    short type label, and is at least as wide as the longest label (``.rn-labelled``), so that the labels of
    short adjacent entities never run into each other; a key before the text names the layer of each row.
    Labels and the key are drawn by CSS, so the view's text is the report's text. Every piece of report text
    goes through ``html.escape``.
    """
    layer_rows = sorted({int(e["layer"]) for e in entities})
    cuts = sorted({0, len(text), *(int(e["start"]) for e in entities), *(int(e["end"]) for e in entities)})
    starting: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for entity in entities:
        starting[int(entity["start"])].append(entity)
    parts = [STACKED_CSS, '<div class="rn-view"><div class="rn-text">', _row_key(layer_rows)]
    covering: dict[int, dict[str, Any]] = {}  # layer -> the entity of that layer over the current segment
    for start, end in zip(cuts, cuts[1:]):
        chars = html.escape(text[start:end])
        covering = {layer: e for layer, e in covering.items() if e["end"] > start}
        covering.update((int(e["layer"]), e) for e in starting[start])
        if not covering:
            parts.append(chars)
            continue
        labelled = " rn-labelled" if starting[start] else ""
        parts.append(f'<span class="rn-seg{labelled}"><span class="rn-chars">{chars}</span>')
        for layer in layer_rows:
            entity = covering.get(layer)
            if entity is None:
                parts.append('<span class="rn-row"></span>')
                continue
            parts.append(_bar(entity, start, end, colors))
        parts.append("</span>")
    parts.append("</div>")
    parts.append(_legend(entities, colors))
    parts.append("</div>")
    return "".join(parts)


def _row_key(layer_rows: Sequence[int]) -> str:
    """An empty segment whose rows say which layer each row of bars shows (nothing when there are no entities)."""
    if not layer_rows:
        return ""
    rows = "".join(
        f'<span class="rn-row"><span class="rn-layer" data-label="capa {layer}"></span></span>' for layer in layer_rows
    )
    return f'<span class="rn-seg rn-rowkey" aria-hidden="true"><span class="rn-chars"></span>{rows}</span>'


def _bar(entity: dict[str, Any], start: int, end: int, colors: dict[str, str]) -> str:
    color = colors.get(entity["entity_group"], EXTRA_COLORS[0])
    first, last = start == entity["start"], end == entity["end"]
    classes = "rn-bar" + (" rn-first" if first else "") + (" rn-last" if last else "")
    tooltip = html.escape(
        f"{entity['entity_group']} · capa {entity['layer']} · {entity['start']}–{entity['end']} · "
        f"score {entity['score']:.2f}\n{entity['word']}",
        quote=True,
    )
    tint = _tint(color)
    label = ""
    if first:  # drawn by CSS from data-label: the view's text (copy, screen readers) stays the report's text
        short = html.escape(short_label(entity["entity_group"]), quote=True)
        label = f'<span class="rn-label" data-label="{short}" style="color:{color};background:{tint}"></span>'
    return (
        f'<span class="rn-row" title="{tooltip}"><span class="{classes}" '
        f'style="background:{tint};border-color:{color}"></span>{label}</span>'
    )


def _tint(color: str, alpha: float = 0.14) -> str:
    """``#rrggbb`` blended over white: an opaque pale shade, so labels that overflow hide what they cover."""
    channels = [int(color[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - alpha * (255 - c)):02x}" for c in channels)


def _legend(entities: Sequence[dict[str, Any]], colors: dict[str, str]) -> str:
    counts = Counter(e["entity_group"] for e in entities)
    keys = []
    for name in [*colors, *sorted(set(counts) - set(colors))]:
        color = colors.get(name, EXTRA_COLORS[0])
        if counts[name]:
            keys.append(
                f'<span class="rn-key"><span class="rn-swatch" style="background:{_tint(color)};border-color:{color}">'
                f'</span><b style="color:{color}">{html.escape(short_label(name))}</b> {html.escape(name)} '
                f"({counts[name]})</span>"
            )
    layers = sorted({int(e["layer"]) for e in entities})
    note = (
        f"{len(entities)} entidades. Una fila de barras por capa (capa {', '.join(map(str, layers))}, de arriba "
        "abajo); pasa el ratón por una barra para ver tipo, offsets y score."
    )
    return f'<div class="rn-legend">{"".join(keys)}</div><div class="rn-note">{html.escape(note)}</div>'


def message_html(message: str) -> str:
    return f'{STACKED_CSS}<div class="rn-view"><div class="rn-message">{html.escape(message)}</div></div>'
