"""SpRadIE exact and lenient F1 as an ``evaluate`` metric: ``evaluate.load(hf_pipeline.METRIC_PATH)`` (this folder).

It wraps :func:`hf_pipeline.scoring.score`, so the figures are the same as ``python -m hf_pipeline.score``.
Each prediction and reference is one document's list of entities, ``{"type": str, "fragments": [[start, end], ...]}``.
"""

from types import SimpleNamespace

import datasets
import evaluate

from hf_pipeline.scoring import score

_ENTITY = {"type": datasets.Value("string"), "fragments": datasets.Sequence(datasets.Sequence(datasets.Value("int32")))}

_KWARGS_DESCRIPTION = """
Args:
    predictions: one list of entities per document, each {"type": str, "fragments": [[start, end], ...]}.
    references: the gold entities, in the same format and document order.
    types: optional list of types to score (default: all found).
Returns:
    exact_precision, exact_recall, exact_f1, lenient_precision, lenient_recall, lenient_f1 (micro),
    and per_type: {type: {"gold", "predicted", "exact": {...}, "lenient": {...}}}.
Examples:
    >>> import hf_pipeline
    >>> metric = evaluate.load(hf_pipeline.METRIC_PATH)
    >>> gold = [[{"type": "Finding", "fragments": [[0, 10]]}]]
    >>> metric.compute(predictions=[[{"type": "Finding", "fragments": [[5, 15]]}]], references=gold)["lenient_f1"]
    0.3333333333333333
"""


class RadiologyNerMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description="Exact and lenient F1 of the CLEF eHealth 2021 SpRadIE task (optimal Jaccard matching).",
            citation="Cotik et al., Overview of CLEF eHealth Task 1 - SpRadIE, CLEF 2021.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": [_ENTITY], "references": [_ENTITY]}),
        )

    def _compute(self, predictions, references, types=None):
        def as_entities(documents):
            return {
                str(index): [SimpleNamespace(type=e["type"], fragments=e["fragments"]) for e in _rows(entities)]
                for index, entities in enumerate(documents)
            }

        result = score(as_entities(references), as_entities(predictions), types).to_dict()
        flat = {
            f"{strategy}_{key}": result[strategy][key] for strategy in ("exact", "lenient") for key in result[strategy]
        }
        return {**flat, "per_type": result["per_type"]}


def _rows(entities):
    """Entities as dicts, whether ``datasets`` hands them over as a list of dicts or a dict of lists."""
    if isinstance(entities, dict):
        return [dict(zip(entities, values)) for values in zip(*entities.values())]
    return entities
