"""Gradio demo: overlapping named entities in Spanish radiology reports.

Run it with a bundle folder or a Hub repo id::

    python space/app.py --model runs/tiny/model         # or: MODEL_ID=user/repo python space/app.py

``--model`` wins over ``MODEL_ID``; ``QUANTIZE=int8`` runs the model as int8 ONNX graphs (ONNX Runtime, CPU). The
server honours gradio's own ``GRADIO_SERVER_NAME`` and ``GRADIO_SERVER_PORT``. With this project installed the
pipeline runs the installed code (``hf_pipeline.load_pipeline``); on a Hugging Face Space it comes from the model
repo (``trust_remote_code=True``).

The page shows every entity at once (nested and overlapping spans as stacked bars under the text, one row per
layer), one highlighted view per layer, a table, and JSON / brat ``.ann`` downloads. ``POST /analyze``
(``gradio_client.Client(url).predict(text, api_name="/analyze")``) returns just the list of entity dicts.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from render import TYPE_COLORS, message_html, render_stacked, type_colors  # space/render.py

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
EMPTY_MESSAGE = "Escribe o pega un informe, o elige un ejemplo, y pulsa «Analizar»."
TABLE_HEADERS = ["type", "text", "start", "end", "layer", "score"]


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

    ``QUANTIZE=int8`` in the environment (a Space variable) runs it as int8 ONNX graphs on CPU.
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


def model_types(ner: Any) -> list[str]:
    """Entity types the model can predict (from its ``B-``/``I-`` labels), SpRadIE types when unknown."""
    id2label = getattr(getattr(getattr(ner, "model", None), "config", None), "id2label", None) or {}
    labels = getattr(ner, "labels", None) or [label for _, label in sorted(id2label.items())]  # shared: per layer
    types = [label[2:] for label in labels if label[:2] in ("B-", "I-")]
    return list(dict.fromkeys(types)) or list(TYPE_COLORS)


def too_long_message(length: int) -> str:
    return (
        f"El texto tiene {length:,} caracteres y el máximo de esta demo es {MAX_CHARS:,}. "
        "Acórtalo o divídelo en varios informes."
    ).replace(",", ".")


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


def write_downloads(
    analysis: Analysis, folder: Path, words: ModuleType, model_name: str | None = None
) -> tuple[Path, Path]:
    """Write ``entities.json`` (text, model, entities) and brat ``report.ann`` (``words.ann_text``, the project's
    one brat writer, which travels with the pipeline's code: see :func:`pipeline_words`) into ``folder``."""
    json_path = folder / "entities.json"
    json_path.write_text(
        json.dumps(
            {"model": model_name, "text": analysis.text, "entities": analysis.entities}, ensure_ascii=False, indent=2
        ),
        encoding="utf-8",
    )
    ann_path = folder / "report.ann"
    fragments = ((e["entity_group"], [(e["start"], e["end"])]) for e in analysis.entities)
    ann_path.write_text(words.ann_text(analysis.text, fragments), encoding="utf-8", newline="")
    return json_path, ann_path


def pipeline_words(ner: Any) -> ModuleType:
    """The ``words`` module beside the pipeline's own code: ``hf_pipeline.words`` with the project installed, the
    bundle's ``words.py`` on a Space (remote code). It holds the brat writer the project itself uses."""
    package = type(ner).__module__.rpartition(".")[0]
    return importlib.import_module(f"{package}.words")


def fresh_download_dir(root: Path) -> Path:
    """A new folder per request under ``root``; folders older than an hour are removed on the way."""
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.iterdir():
        if old.is_dir() and now - old.stat().st_mtime > DOWNLOADS_MAX_AGE_S:
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=root))


def model_description(ner: Any) -> str:
    """What the served bundle is, in the header's words: its architecture, scheme and head.

    >>> from types import SimpleNamespace
    >>> model_description(SimpleNamespace(architecture="shared", scheme="type", decoder="crf"))
    'un codificador compartido con una secuencia de etiquetas por tipo de entidad, decodificada con un CRF'
    >>> model_description(SimpleNamespace(architecture="shared", scheme="span", decoder="span"))
    'un codificador compartido que puntúa cada tramo de texto para cada tipo de entidad (cabeza de tramos)'
    """
    architecture, scheme = getattr(ner, "architecture", "per_layer"), getattr(ner, "scheme", "depth")
    if architecture != "shared":
        described = "un BERT por capa de anidamiento (el método del artículo)"
    elif scheme == "span":
        return "un codificador compartido que puntúa cada tramo de texto para cada tipo de entidad (cabeza de tramos)"
    elif scheme == "type":
        described = "un codificador compartido con una secuencia de etiquetas por tipo de entidad"
    else:
        described = "un codificador compartido con una secuencia de etiquetas por capa de anidamiento"
    return described + (", decodificada con un CRF" if getattr(ner, "decoder", "softmax") == "crf" else "")


def build_demo(ner: Callable[[str], list[dict[str, Any]]], model_name: str | None = None) -> gr.Blocks:
    """The page. ``ner`` is the loaded pipeline; ``model_name`` is shown and written into the JSON download."""
    import gradio as gr

    layers = list(getattr(ner, "layer_numbers", None) or DEFAULT_LAYERS)
    colors = type_colors(model_types(ner))
    downloads_root = Path(tempfile.gettempdir()) / "radiology-ner-space"
    words = pipeline_words(ner)

    def run(text: str) -> tuple[Any, ...]:
        analysis = analyze(text, ner, layers, colors)
        if analysis.message and analysis.text.strip():
            gr.Warning(analysis.message)
        files: tuple[Any, Any] = (None, None)
        if analysis.message is None:
            files = tuple(
                str(p) for p in write_downloads(analysis, fresh_download_dir(downloads_root), words, model_name)
            )
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
            f"Reconocimiento de entidades **solapadas y anidadas** (tipos SpRadIE) con {model_description(ner)}. "
            "La capa de cada entidad es su profundidad de anidamiento (1, la más externa), y aquí se ven todas a la "
            f"vez.{model_line}\n\n"
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


def model_problem(model: str, source: str = "--model") -> str | None:
    """Why ``model`` cannot be loaded now (a local path that does not exist, a Hub id offline), in one line that
    starts with ``source`` (how it was given); ``None`` when it can.

    Uses the project's check when it is installed; on a Space it is not, and the Hub is reachable there.
    """
    try:
        from hf_pipeline.hub import UnusableError, check_usable
    except ImportError:
        return None
    try:
        check_usable(model, "model", source, advice="or give a bundle folder (for example runs/tiny/model).")
    except UnusableError as error:
        return str(error)
    return None


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    problem = model_problem(args.model, args.model_source)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    demo = build_demo(load_ner(args.model), model_name=args.model)
    demo.launch()


if __name__ == "__main__":
    main()
