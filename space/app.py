"""Gradio demo: overlapping named entities in Spanish radiology reports.

Run it with a bundle folder or a Hub repo id::

    python space/app.py --model runs/tiny/model         # or: MODEL_ID=user/repo python space/app.py

``--model`` wins over ``MODEL_ID``; ``QUANTIZE=int8`` runs the model with dynamic int8 quantization (CPU). The
server honours gradio's own ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT``. With this project installed the
pipeline runs the installed code (``hf_pipeline.load_pipeline``); on a Hugging Face Space it comes from the model
repo (``trust_remote_code=True``).

The page shows every entity at once (nested and overlapping spans as stacked bars under the text, one row per
layer), one highlighted view per layer, a table, and JSON / brat ``.ann`` downloads. ``POST /analyze``
(``gradio_client.Client(url).predict(text, api_name="/analyze")``) returns just the list of entity dicts.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where the page is built: a bad --model fails before gradio's seconds of imports
    import gradio as gr

MAX_CHARS = 20_000
DEFAULT_LAYERS = (1, 2, 3)
N_EXAMPLES = 5
DOWNLOADS_MAX_AGE_S = 3600
SAMPLE_CORPUS = Path(__file__).resolve().parent.parent / "hf_dataset" / "sample_corpus"
BUILTIN_EXAMPLES = [
    "Riñón derecho de tamaño normal (5,4 cm), sin dilatación de la vía excretora. No se observa litiasis.",
    "Hígado de ecoestructura homogénea. Vesícula biliar distendida, de paredes finas, sin signos de colecistitis.",
    "Cadera izquierda con ángulo alfa de 62º. Posible displasia leve de la cadera derecha; control en 3 meses.",
]
DISCLAIMER = "Demo de investigación: no es un producto sanitario ni debe usarse para decisiones clínicas."
LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")  # as hf_dataset.brat
EMPTY_MESSAGE = "Escribe o pega un informe, o elige un ejemplo, y pulsa «Analizar»."
TABLE_HEADERS = ["type", "text", "start", "end", "layer", "score"]

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


@dataclass
class Analysis:
    """Everything the page shows for one text.

    Attributes:
        text: the analysed text (offsets refer to it).
        entities: the pipeline output: dicts ``entity_group, score, word, start, end, layer``.
        html: the stacked view (or a friendly message when there is nothing to analyse).
        layers: one ``gr.HighlightedText`` value per layer number.
        table: one row per entity, columns :data:`TABLE_HEADERS`.
        message: why nothing was analysed (too long, empty), else ``None``.
    """

    text: str
    entities: list[dict[str, Any]]
    html: str
    layers: dict[int, dict[str, Any]] = field(default_factory=dict)
    table: list[list[Any]] = field(default_factory=list)
    message: str | None = None


def load_examples(corpus: Path = SAMPLE_CORPUS, limit: int = N_EXAMPLES) -> list[str]:
    """A handful of reports from the bundled sample corpus (test split first), or built-in sentences."""
    texts: list[str] = []
    for split in ("test", "validation", "train"):
        for path in sorted((corpus / split).glob("*.txt")):
            text = path.read_text(encoding="utf-8").strip()
            if text and len(texts) < limit:
                texts.append(text)
    return texts or list(BUILTIN_EXAMPLES)


def load_ner(model: str) -> Callable[[str], list[dict[str, Any]]]:
    """Build the pipeline once: the installed project code if present, else the bundle's own remote code.

    ``QUANTIZE=int8`` in the environment (a Space variable) runs it with dynamic int8 quantization on CPU.
    """
    quantize = os.environ.get("QUANTIZE") or None
    if quantize not in (None, "int8"):
        raise SystemExit(f"QUANTIZE={quantize!r}: set it to int8, or leave it unset for full precision.")
    try:
        import hf_pipeline
    except ImportError:
        from transformers import pipeline

        return pipeline("radiology-ner", model=model, trust_remote_code=True, quantize=quantize)
    return hf_pipeline.load_pipeline(model, quantize=quantize)


def type_colors(types: Sequence[str]) -> dict[str, str]:
    """A colour per type: fixed for the SpRadIE types, the next palette colour for any other."""
    colors: dict[str, str] = {}
    extra = iter(EXTRA_COLORS * (len(types) // len(EXTRA_COLORS) + 1))
    for name in types:
        colors[name] = TYPE_COLORS.get(name) or next(extra)
    return colors


def model_types(ner: Any) -> list[str]:
    """Entity types the model can predict (from its ``B-``/``I-`` labels), SpRadIE types when unknown."""
    id2label = getattr(getattr(getattr(ner, "model", None), "config", None), "id2label", None) or {}
    labels = getattr(ner, "labels", None) or [label for _, label in sorted(id2label.items())]  # shared: per layer
    types = [label[2:] for label in labels if label[:2] in ("B-", "I-")]
    return list(dict.fromkeys(types)) or list(TYPE_COLORS)


def short_label(entity_type: str) -> str:
    return TYPE_SHORT.get(entity_type) or entity_type[:4].upper()


def too_long_message(length: int) -> str:
    return (
        f"El texto tiene {length:,} caracteres y el máximo de esta demo es {MAX_CHARS:,}. "
        "Acórtalo o divídelo en varios informes."
    ).replace(",", ".")


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


def layer_view(text: str, entities: Sequence[dict[str, Any]], layer: int) -> dict[str, Any]:
    """The ``gr.HighlightedText`` value of one layer (its entities never overlap)."""
    return {
        "text": text,
        "entities": [
            {"entity": e["entity_group"], "start": e["start"], "end": e["end"]} for e in entities if e["layer"] == layer
        ],
    }


def entity_table(entities: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [
        [e["entity_group"], e["word"], e["start"], e["end"], e["layer"], round(float(e["score"]), 3)] for e in entities
    ]


def plain_entities(entities: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """JSON-ready copies of the pipeline output (plain ``int``/``float``/``str``)."""
    return [
        {
            "entity_group": str(e["entity_group"]),
            "score": float(e["score"]),
            "word": str(e["word"]),
            "start": int(e["start"]),
            "end": int(e["end"]),
            "layer": int(e["layer"]),
        }
        for e in entities
    ]


def analyze(
    text: str | None,
    ner: Callable[[str], list[dict[str, Any]]],
    layers: Sequence[int] = DEFAULT_LAYERS,
    colors: dict[str, str] | None = None,
) -> Analysis:
    """Run the pipeline on one report and build every view; a friendly message instead for empty or long text."""
    text = text or ""
    colors = colors or type_colors(list(TYPE_COLORS))
    empty_layers = {layer: layer_view(text, [], layer) for layer in layers}
    if len(text) > MAX_CHARS:
        message = too_long_message(len(text))
        return Analysis(text, [], message_html(message), empty_layers, [], message)
    if not text.strip():
        message = EMPTY_MESSAGE
        return Analysis(text, [], message_html(message), empty_layers, [], message)
    entities = plain_entities(ner(text))
    return Analysis(
        text=text,
        entities=entities,
        html=render_stacked(text, entities, colors),
        layers={layer: layer_view(text, entities, layer) for layer in layers},
        table=entity_table(entities),
    )


def write_downloads(analysis: Analysis, folder: Path, model_name: str | None = None) -> tuple[Path, Path]:
    """Write ``entities.json`` (text, model, entities) and brat ``report.ann`` into ``folder``."""
    write_ann_file = _brat_writer()
    json_path = folder / "entities.json"
    json_path.write_text(
        json.dumps(
            {"model": model_name, "text": analysis.text, "entities": analysis.entities}, ensure_ascii=False, indent=2
        ),
        encoding="utf-8",
    )
    ann_path = folder / "report.ann"
    write_ann_file(ann_path, analysis.text, analysis.entities)
    return json_path, ann_path


def _brat_writer() -> Callable[[Path, str, Sequence[dict[str, Any]]], None]:
    """The project's brat writer when installed, else (on a Space, without the project) :func:`write_ann_inline`."""
    try:
        from hf_dataset.brat import Entity, write_ann
    except ImportError:
        return write_ann_inline

    def write(path: Path, text: str, entities: Sequence[dict[str, Any]]) -> None:
        write_ann(path, text, [Entity.from_prediction(e) for e in entities])

    return write


def write_ann_inline(path: Path, text: str, entities: Sequence[dict[str, Any]]) -> None:
    """Same output as ``hf_dataset.brat.write_ann`` for contiguous entities, for a Space without the project."""
    lines = [
        f"T{number}\t{e['entity_group']} {e['start']} {e['end']}\t{LINE_BREAKS.sub(' ', text[e['start'] : e['end']])}\n"
        for number, e in enumerate(entities, start=1)
    ]
    path.write_text("".join(lines), encoding="utf-8", newline="")


def fresh_download_dir(root: Path) -> Path:
    """A new folder per request under ``root``; folders older than an hour are removed on the way."""
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > DOWNLOADS_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


def build_demo(ner: Callable[[str], list[dict[str, Any]]], model_name: str | None = None) -> gr.Blocks:
    """The page. ``ner`` is the loaded pipeline; ``model_name`` is shown and written into the JSON download."""
    import gradio as gr

    layers = list(getattr(ner, "layer_numbers", None) or DEFAULT_LAYERS)
    colors = type_colors(model_types(ner))
    downloads_root = Path(tempfile.gettempdir()) / "radiology-ner-space"

    def run(text: str) -> tuple[Any, ...]:
        analysis = analyze(text, ner, layers, colors)
        if analysis.message and analysis.text.strip():
            gr.Warning(analysis.message)
        files: tuple[Any, Any] = (None, None)
        if analysis.message is None:
            files = tuple(str(p) for p in write_downloads(analysis, fresh_download_dir(downloads_root), model_name))
        return (
            analysis.html,
            *(analysis.layers[layer] for layer in layers),
            analysis.table,
            *files,
        )

    def analyze_entities(text: str) -> list[dict]:
        """Overlapping entities of one Spanish radiology report.

        Returns a list of dicts ``entity_group, score, word, start, end, layer`` (end-exclusive character offsets,
        ``text[start:end] == word``), sorted by (start, -end, layer).
        """
        analysis = analyze(text, ner, layers, colors)
        if analysis.message and analysis.text.strip():
            raise gr.Error(analysis.message)
        return analysis.entities

    model_line = f" Modelo: `{model_name}`." if model_name else ""
    with gr.Blocks(title="Radiology NER (es)") as demo:
        gr.Markdown(
            "# Entidades en informes radiológicos (español)\n"
            "Reconocimiento de entidades **solapadas y anidadas** (tipos SpRadIE) con un BERT por capa: cada entidad "
            f"recibe una de hasta tres capas, y aquí se ven todas a la vez.{model_line}\n\n"
            f"⚠️ **{DISCLAIMER}**"
        )
        text = gr.Textbox(
            label="Informe",
            lines=8,
            placeholder="Pega aquí un informe ecográfico o radiológico en español…",
            info=f"Máximo {MAX_CHARS:,} caracteres.".replace(",", "."),
        )
        button = gr.Button("Analizar", variant="primary")
        gr.Examples(load_examples(), inputs=text, label="Ejemplos", examples_per_page=N_EXAMPLES, elem_id="examples")
        stacked = gr.HTML(message_html(EMPTY_MESSAGE), label="Todas las entidades", elem_id="stacked-view")
        with gr.Accordion("Una vista por capa", open=False):
            layer_views = [
                gr.HighlightedText(label=f"Capa {layer}", color_map=colors, show_legend=True, combine_adjacent=False)
                for layer in layers
            ]
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Entidades", interactive=False, wrap=True)
        with gr.Row():
            json_file = gr.File(label="JSON")
            ann_file = gr.File(label="brat .ann")
        gr.Markdown(f"<small>{DISCLAIMER}</small>")

        button.click(
            run,
            inputs=text,
            outputs=[stacked, *layer_views, table, json_file, ann_file],
            api_visibility="private",
        )
        gr.api(analyze_entities, api_name="analyze")
    demo.queue(default_concurrency_limit=2, max_size=20)
    return demo


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        help="bundle folder or Hub repo id of a radiology-ner model (default: the MODEL_ID environment variable)",
    )
    args = parser.parse_args(argv)
    args.model_source = "--model"
    if not args.model:
        args.model, args.model_source = os.environ.get("MODEL_ID"), "MODEL_ID"
    if not args.model:
        parser.error("no model given: pass --model PATH_OR_REPO_ID or set the MODEL_ID environment variable.")
    return args


def model_problem(model: str) -> str | None:
    """Why ``model`` cannot be loaded now (a local path that does not exist, a Hub id offline), in one line.

    Uses the project's check when it is installed; on a Space it is not, and the Hub is reachable there.
    """
    try:
        from hf_pipeline.hub import unavailable
    except ImportError:
        return None
    reason = unavailable(model)
    if reason is None:
        return None
    return f"{reason} Give a bundle folder (for example runs/tiny/model), or a Hub repo id online."


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    problem = model_problem(args.model)
    if problem:
        print(f"error: {args.model_source}: {problem}", file=sys.stderr)
        raise SystemExit(2)
    demo = build_demo(load_ner(args.model), model_name=args.model)
    demo.launch()


if __name__ == "__main__":
    main()
