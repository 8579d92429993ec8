"""The spaCy component ``radiology_ner``: the project's pipeline on ``doc.text``, every entity in ``doc.spans``.

    import spacy

    nlp = spacy.blank("es")  # or any Spanish pipeline
    nlp.add_pipe("radiology_ner", config={"model": "runs/tiny/model"})  # a bundle folder or a Hub repo id
    doc = nlp(text)
    for span in doc.spans["radiology_ner"]:
        print(span.label_, span._.layer, span._.score, span._.exact_start, span._.exact_end, span.text)

The factory is registered through the ``spacy_factories`` entry point, so installing the project (``pip install
"radiology-ner[spacy]"``) is enough: spaCy imports this module whenever it builds a pipeline. This module imports
spaCy alone; torch, transformers and the bundle load when the component is built.

**Spans.** Every entity becomes one span of the ``SpanGroup`` ``doc.spans[spans_key]`` (they may overlap and nest),
in the pipeline's order, labelled with its type, with ``span._.layer`` (nesting depth, 1 outermost) and
``span._.score``; ``doc.spans[spans_key].attrs["scores"]`` holds the scores too, in span order, as ``spancat``
writes them. ``nlp.pipe`` runs the pipeline on whole batches of texts (one call per batch of docs).

**Alignment.** A spaCy span is a run of whole tokens, while an entity's boundaries follow the project's word
tokenizer (letters and digits split, ``5mm`` is ``5`` + ``mm``). An entity is placed with
``doc.char_span(start, end, alignment_mode="expand")``, the fewest tokens that cover it; its exact offsets are
always ``span._.exact_start`` and ``span._.exact_end`` (and ``span._.exact_text``), equal to ``span.start_char``
and ``span.end_char`` unless a boundary falls inside a spaCy token (*misaligned*; the component counts them in
``misaligned``). spaCy keeps span attributes per (start_char, end_char), which two entities can share (``RD`` as
``Anatomical_Entity`` and as ``Abbreviation``; two entities inside one token), so this module keys them by the
span's offsets, label and id, and a misaligned span gets the id ``"<exact_start>:<exact_end>"`` (an aligned one
keeps the empty id): no two entities share a key.

**doc.ents** (``set_ents=True``): the outermost (layer 1) entities, which never overlap each other; expanded to
tokens two of them can (both inside one token): the later one is left out of ``doc.ents`` (counted in
``ents_left_out``) and stays in ``doc.spans``. ``doc.ents`` is replaced.

**DocBin.** Spans, labels and ids (so the exact offsets) survive any ``DocBin``; ``layer`` and ``score`` live in
``doc.user_data``, which ``DocBin(store_user_data=True)`` keeps. ``python -m hf_pipeline.predict --format spacy``
writes such files. Two ``radiology_ner`` pipes in one pipeline share the attributes of an entity both predict.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import minibatch

FACTORY = "radiology_ner"
SPANS_KEY = "radiology_ner"
_RECORD = "radiology_ner"  # first element of the doc.user_data keys of span attributes
_OFFSETS_ID = re.compile(r"(\d+):(\d+)")  # the id of a misaligned span: its exact offsets
REPORT_ID = "report_id"  # doc._.report_id: the report's id in files written by the predict command
_PIPELINE_OPTIONS = ("batch_size", "stride", "max_length")
__all__ = [
    "FACTORY",
    "SPANS_KEY",
    "RadiologyNer",
    "exact_offsets",
    "make_radiology_ner",
    "register_extensions",
    "set_entities",
]


def _key(span: Span) -> tuple[str, int, int, str, str]:
    return (_RECORD, span.start_char, span.end_char, span.label_, span.id_)


def _record(span: Span) -> dict[str, Any] | None:
    return span.doc.user_data.get(_key(span))


def _field(name: str) -> Any:
    def get(span: Span) -> Any:
        record = _record(span)
        return None if record is None else record[name]

    get.__qualname__ = get.__name__ = f"radiology_ner_{name}"
    return get


def exact_offsets(span: Span) -> tuple[int, int]:
    """The entity's own character offsets: from its attributes, else from a misaligned span's id
    (``"<start>:<end>"``, kept by any ``DocBin``), else the span's offsets."""
    record = _record(span)
    if record is not None:
        return record["exact_start"], record["exact_end"]
    match = _OFFSETS_ID.fullmatch(span.id_)
    if match:
        return int(match.group(1)), int(match.group(2))
    return span.start_char, span.end_char


def _exact_text(span: Span) -> str:
    start, end = exact_offsets(span)
    return span.doc.text[start:end]


_SPAN_EXTENSIONS = {
    "layer": _field("layer"),
    "score": _field("score"),
    "exact_start": lambda span: exact_offsets(span)[0],
    "exact_end": lambda span: exact_offsets(span)[1],
    "exact_text": _exact_text,
}
for _getter in _SPAN_EXTENSIONS.values():
    _getter.radiology_ner = True  # marks the getters of this module (also of a reloaded copy of it)


def _ours(name: str) -> bool:
    return getattr(Span.get_extension(name)[2], "radiology_ner", False)


def register_extensions() -> None:
    """Register ``Span._.layer``, ``score``, ``exact_start``, ``exact_end``, ``exact_text`` and ``Doc._.report_id``.

    Done when this module is imported (spaCy imports it through the entry point); an extension of the same name
    that another package registered is left alone, and building the component then fails naming it.
    """
    for name, getter in _SPAN_EXTENSIONS.items():
        if not Span.has_extension(name) or _ours(name):
            Span.set_extension(name, getter=getter, force=True)
    if not Doc.has_extension(REPORT_ID):
        Doc.set_extension(REPORT_ID, default=None)


def _check_extensions() -> None:
    foreign = [name for name in _SPAN_EXTENSIONS if not _ours(name)]
    if foreign:
        names = ", ".join(f"Span._.{name}" for name in foreign)
        raise ValueError(
            f"Another package registered {names}, which radiology_ner writes. Remove it first "
            "(spacy.tokens.Span.remove_extension(name), then hf_pipeline.spacy_component.register_extensions()), "
            "or run radiology_ner in a pipeline without that package."
        )


def set_entities(
    doc: Doc, entities: Sequence[dict[str, Any]], spans_key: str = SPANS_KEY, set_ents: bool = False
) -> tuple[int, int]:
    """Write the pipeline's entities for ``doc.text`` into ``doc.spans[spans_key]`` (and ``doc.ents``).

    Args:
        doc: the document whose text the entities were predicted on.
        entities: the pipeline's dicts (``entity_group``, ``score``, ``start``, ``end``, ``layer``).
        spans_key: the ``doc.spans`` key (replaced).
        set_ents: also replace ``doc.ents`` by the layer-1 entities (see the module docstring).

    Returns:
        How many entities are misaligned (a boundary inside a spaCy token), and how many layer-1 entities were
        left out of ``doc.ents`` because their tokens overlap an earlier one's.
    """
    spans, misaligned = [], 0
    for entity in entities:
        start, end = entity["start"], entity["end"]
        span = doc.char_span(start, end, label=entity["entity_group"], alignment_mode="expand")
        if span is None or not len(span):
            raise ValueError(
                f"The entity {entity['entity_group']} at characters {start}-{end} ({doc.text[start:end]!r}) covers "
                "no token of this doc: give the component docs whose text is the text the entities were predicted on."
            )
        if (span.start_char, span.end_char) != (start, end):
            misaligned += 1
            span.id_ = f"{start}:{end}"
        doc.user_data[_key(span)] = {"layer": entity["layer"], "score": entity["score"], "exact_start": start,
                                     "exact_end": end}  # fmt: skip
        spans.append(span)
    doc.spans[spans_key] = spans
    doc.spans[spans_key].attrs["scores"] = [float(entity["score"]) for entity in entities]
    left_out = 0
    if set_ents:
        ents: list[Span] = []
        for span, entity in zip(spans, entities):
            if entity["layer"] != 1:
                continue
            if ents and span.start < ents[-1].end:
                left_out += 1
                continue
            ents.append(span)
        doc.ents = ents
    return misaligned, left_out


class RadiologyNer:
    """The ``radiology_ner`` pipe: runs the radiology-ner pipeline on each doc's text (see the module docstring)."""

    def __init__(
        self,
        nlp: Language,
        name: str,
        model: str,
        revision: str | None = None,
        spans_key: str = SPANS_KEY,
        set_ents: bool = False,
        batch_size: int | None = None,
        stride: int | None = None,
        max_length: int | None = None,
        device: str | int | None = None,
        quantize: str | None = None,
    ) -> None:
        if not model:
            raise ValueError(
                'radiology_ner needs a model: nlp.add_pipe("radiology_ner", config={"model": "path/or/org-name"}), '
                "a bundle folder written by train.py or a Hub repo id."
            )
        _check_extensions()
        from hf_pipeline.bundle import load_pipeline

        options = {key: value for key, value in (("device", device), ("quantize", quantize)) if value is not None}
        self.name = name
        self.model = model
        self.spans_key = spans_key
        self.set_ents = set_ents
        self.pipeline = load_pipeline(model, revision=revision, **options)
        self.call_options = {
            key: value for key, value in zip(_PIPELINE_OPTIONS, (batch_size, stride, max_length)) if value is not None
        }
        self.misaligned = 0  # entities with a boundary inside a spaCy token, over every call
        self.ents_left_out = 0  # layer-1 entities left out of doc.ents (set_ents), over every call

    def __call__(self, doc: Doc) -> Doc:
        return self._annotate([doc])[0]

    def pipe(self, docs: Iterable[Doc], batch_size: int = 128) -> Iterator[Doc]:
        """Annotate ``docs`` in batches of ``batch_size`` docs, one pipeline call per batch."""
        for batch in minibatch(docs, size=batch_size):
            yield from self._annotate(list(batch))

    def _annotate(self, docs: list[Doc]) -> list[Doc]:
        results = self.pipeline([doc.text for doc in docs], **self.call_options)
        for doc, entities in zip(docs, results):
            misaligned, left_out = set_entities(doc, entities, self.spans_key, self.set_ents)
            self.misaligned += misaligned
            self.ents_left_out += left_out
        return docs


@Language.factory(
    FACTORY,
    default_config={
        "model": None,
        "revision": None,
        "spans_key": SPANS_KEY,
        "set_ents": False,
        "batch_size": None,
        "stride": None,
        "max_length": None,
        "device": None,
        "quantize": None,
    },
    assigns=["doc.spans", "doc.ents"],
)
def make_radiology_ner(
    nlp: Language,
    name: str,
    model: str | None,
    revision: str | None,
    spans_key: str,
    set_ents: bool,
    batch_size: int | None,
    stride: int | None,
    max_length: int | None,
    device: str | int | None,
    quantize: str | None,
) -> RadiologyNer:
    """Build the ``radiology_ner`` pipe.

    Args:
        model: the bundle: a folder written by ``train.py`` or a Hub repo id (required).
        revision: the Hub revision (branch, tag or commit) of ``model``.
        spans_key: the ``doc.spans`` key the entities go to (default ``radiology_ner``).
        set_ents: also fill ``doc.ents`` with the outermost (layer 1) entities.
        batch_size: windows per forward pass of the pipeline (its default, 32, when ``None``); how many docs go to
            one pipeline call is ``nlp.pipe``'s ``batch_size``.
        stride, max_length: the pipeline's window options (its defaults when ``None``).
        device: where the models run (``"cpu"``, ``"cuda:0"``, ``0``); transformers' default when ``None``.
        quantize: ``"int8"`` runs int8 ONNX graphs with ONNX Runtime (CPU).
    """
    return RadiologyNer(nlp, name, model or "", revision, spans_key, set_ents, batch_size, stride, max_length,
                        device, quantize)  # fmt: skip


register_extensions()
