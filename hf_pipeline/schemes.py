"""Labeling schemes: which IOB2 tag sequences a bundle predicts, and how its tags become entities (no torch).

It travels with every model bundle. A *scheme* says how a report's entities become tag sequences, each a valid
IOB2 sequence over the report's words; the model predicts every sequence at once (one block of classifier outputs
per sequence, or one model per sequence), a *head* (``heads.py``) turns each sequence's word probabilities into
tags, and this module turns the tags of all sequences into one list of entities, the same way for every scheme:

- ``depth`` (the paper's): one sequence per nesting layer (``config.json["ner_layers"]``), every sequence over every
  type's labels (``ner_labels``, or the layer model's ``id2label``), exactly the dataset's ``ner_tags_1..3``;
- ``type``: one sequence per entity type, plus sub-layers within a type only where entities of that type overlap
  (``config.json["ner_sequences"]`` lists ``[type, sub-layer]`` of each), each over ``O``, ``B-<type>``,
  ``I-<type>``;
- ``span``: no tag sequences at all: the span head (``spans.py``) scores every span of up to K words for every type
  of ``config.json["ner_span_types"]``; its one "sequence" here lists those types' labels, for their order.

Whatever the scheme, an entity predicted by two sequences (same type, same span) is returned once, with its higher
score, and counted; and every entity's ``layer`` is the nesting depth that the dataset's layering policy gives it
among the entities predicted for that text: sorted by (start, longer first, type order), each takes the lowest
layer in which it overlaps no entity already there, 1 being outermost. It has no upper bound (a text whose
predictions nest four deep has a layer 4). The encoding half (entities to tags) runs at training time only:
``hf_pipeline.training.schemes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .words import decode_bio

SCHEME_KEY = "ner_scheme"  # "depth" (default, bundles saved before schemes existed) or "type"
SEQUENCES_KEY = "ner_sequences"  # type scheme: [type, sub-layer] of each tag sequence, in classifier order
LAYERS_CONFIG_KEY = "ner_layers"  # depth: the layer of each sequence; type: the depths seen in training
LABELS_KEY = "ner_labels"  # depth + shared: the label names of every layer (layers x labels outputs)
ARCHITECTURE_KEY = "ner_architecture"  # "per_layer" (one model per sequence) or "shared" (one encoder, a head each)
SPAN_TYPES_KEY = "ner_span_types"  # span: the entity types, in the order of the span head's weights
SCHEMES = ("depth", "type", "span")


def config_choice(config: Any, key: str, choices: Sequence[str], default: str) -> str:
    """``config.json[key]``, one of ``choices`` (``default`` when a bundle saved before the key existed lacks it)."""
    value = getattr(config, key, None) or default
    if value not in choices:
        raise ValueError(
            f"config.json[{key!r}] is {value!r}; expected one of {tuple(choices)}. The bundle was saved by another "
            "version of this project, or edited by hand: save it again with hf_pipeline.save_bundle."
        )
    return value


def scheme_of(config: Any) -> str:
    """The bundle's scheme, checked (a bundle saved before schemes existed is ``depth``)."""
    return config_choice(config, SCHEME_KEY, SCHEMES, "depth")


def type_labels(entity_type: str) -> list[str]:
    """The labels of one type-scheme sequence.

    >>> type_labels("ANAT")
    ['O', 'B-ANAT', 'I-ANAT']
    """
    return ["O", f"B-{entity_type}", f"I-{entity_type}"]


def sequence_labels(config: Any, models: int = 1) -> list[list[str]]:
    """The IOB2 label names of each tag sequence a bundle predicts, in the order of its classifier outputs
    (``models``: how many models a per-layer bundle holds, one sequence each)."""
    scheme = scheme_of(config)
    if scheme == "type":
        return [type_labels(entity_type) for entity_type, _ in getattr(config, SEQUENCES_KEY, None) or []]
    if scheme == "span":
        types = getattr(config, SPAN_TYPES_KEY, None) or []
        return [["O", *(label for kind in types for label in type_labels(kind)[1:])]]
    if getattr(config, ARCHITECTURE_KEY, None) == "shared":
        labels = list(getattr(config, LABELS_KEY, None) or [])
        return [labels for _ in getattr(config, LAYERS_CONFIG_KEY, None) or [1]]
    labels = [config.id2label[i] for i in range(config.num_labels)]
    return [labels for _ in range(models)]


def check_labels(labels: Sequence[Sequence[str]]) -> None:
    """Each sequence's labels must be IOB2 in the project's order: ``O``, then ``B-T``, ``I-T`` for each type.

    >>> check_labels([["O", "B-X", "I-X"]])
    >>> try:
    ...     check_labels([["B-X", "O", "I-X"]])
    ... except ValueError as error:
    ...     print(str(error)[:75])
    config.json: the labels of tag sequence 1 are ['B-X', 'O', 'I-X']; expected
    """
    for number, sequence in enumerate(labels, start=1):
        sequence = list(sequence)
        types = [label[2:] for label in sequence[1::2]]
        expected = ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]
        if sequence != expected or len(sequence) < 3 or len(set(types)) != len(types) or "" in types:
            raise ValueError(
                f"config.json: the labels of tag sequence {number} are {sequence}; expected 'O' then 'B-<type>', "
                "'I-<type>' for each type. The labels were reordered or edited: save the bundle again with "
                "hf_pipeline.save_bundle."
            )


@dataclass(frozen=True)
class Predicted:
    """One entity of a text: its type, its end-exclusive character span and its score."""

    type: str
    start: int
    end: int
    score: float


def tags_to_entities(
    tags: Sequence[Sequence[str]], scores: Sequence[Sequence[float]], spans: Sequence[tuple[int, int]]
) -> tuple[list[Predicted], int]:
    """The entities of every tag sequence (``tags[sequence][word]``, ``scores`` alike, ``spans`` the words'
    character spans), an entity predicted by several sequences once with its highest score; and how many
    such duplicates were merged.

    >>> tags = [["B-X", "I-X", "O"], ["B-X", "I-X", "B-Y"]]
    >>> entities, merged = tags_to_entities(tags, [[0.9, 0.7, 0.1], [0.6, 0.6, 0.8]], [(0, 4), (5, 9), (10, 12)])
    >>> [(e.type, e.start, e.end, round(e.score, 2)) for e in entities], merged
    ([('X', 0, 9, 0.8), ('Y', 10, 12, 0.8)], 1)
    """
    best: dict[tuple[str, int, int], float] = {}
    found = 0
    for sequence_tags, sequence_scores in zip(tags, scores):
        for span in decode_bio(sequence_tags):
            words = sequence_scores[span.first : span.last + 1]
            key = (span.type, spans[span.first][0], spans[span.last][1])
            best[key] = max(best.get(key, float("-inf")), sum(words) / len(words))
            found += 1
    return [Predicted(kind, start, end, score) for (kind, start, end), score in best.items()], found - len(best)


def nesting_layers(entities: Sequence[Predicted], type_order: Sequence[str] = ()) -> list[int]:
    """Each entity's layer under the dataset's layering policy, with no bound on the depth: sorted by (start,
    longer first, type order), each takes the lowest layer where it overlaps no entity already there.

    >>> nesting_layers([Predicted("Y", 5, 9, 1.0), Predicted("X", 0, 20, 1.0), Predicted("Z", 5, 7, 1.0)])
    [2, 1, 3]
    """
    order = {name: index for index, name in enumerate(type_order)}
    ranked = sorted(
        range(len(entities)),
        key=lambda i: (entities[i].start, entities[i].start - entities[i].end, order.get(entities[i].type, len(order))),
    )
    layer_ends: list[int] = []  # per layer, the furthest end of the entities in it (they all start earlier)
    layers = [0] * len(entities)
    for index in ranked:
        entity = entities[index]
        layer = next((n for n, end in enumerate(layer_ends) if end <= entity.start), len(layer_ends))
        if layer == len(layer_ends):
            layer_ends.append(entity.end)
        layer_ends[layer] = max(layer_ends[layer], entity.end)
        layers[index] = layer + 1
    return layers


def output_entities(text: str, entities: Sequence[Predicted], type_order: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The pipeline's output dicts, each with its nesting ``layer``, sorted by (start, -end, layer)."""
    layers = nesting_layers(entities, type_order)
    found = [
        {"entity_group": e.type, "score": float(e.score), "word": text[e.start : e.end], "start": e.start,
         "end": e.end, "layer": layer}
        for e, layer in zip(entities, layers)
    ]  # fmt: skip
    return sorted(found, key=lambda e: (e["start"], -e["end"], e["layer"]))


def type_order(labels: Sequence[Sequence[str]]) -> list[str]:
    """The entity types in the order the bundle's labels name them (the layering policy's tie-break).

    >>> type_order([["O", "B-X", "I-X", "B-Y", "I-Y"], ["O", "B-X", "I-X", "B-Y", "I-Y"]])
    ['X', 'Y']
    """
    seen: dict[str, None] = {}
    for sequence in labels:
        for label in sequence:
            if label.startswith("B-"):
                seen.setdefault(label[2:], None)
    return list(seen)
