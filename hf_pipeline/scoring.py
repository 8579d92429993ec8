"""The official SpRadIE metrics: exact and lenient precision, recall and F1 over (discontinuous) entities.

Per document and entity type, gold and predicted entities are matched one to one so that the sum of their
similarities is maximal (an assignment problem, solved exactly). Lenient similarity is the Jaccard index of
the characters covered by all fragments (only overlapping pairs count); exact similarity is 1 for identical
fragments and 0 otherwise. Precision = summed similarity / predictions, recall = summed similarity / gold,
micro-averaged over all types and documents. Empty gold or predictions give 0, never a division error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

Fragment = tuple[int, int]


class Scorable(Protocol):
    type: str
    fragments: tuple[Fragment, ...]


def normalize(fragments: Iterable[Sequence[int]]) -> tuple[Fragment, ...]:
    """Sort fragments and join overlapping or touching ones, so each character counts once."""
    joined: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in fragments):
        if joined and start <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], end)
        else:
            joined.append([start, end])
    return tuple((start, end) for start, end in joined)


def size(fragments: Sequence[Fragment]) -> int:
    return sum(end - start for start, end in fragments)


def overlap(a: Sequence[Fragment], b: Sequence[Fragment]) -> int:
    """Number of characters covered by both normalized fragment lists."""
    total, i, j = 0, 0, 0
    while i < len(a) and j < len(b):
        total += max(0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def jaccard(a: Sequence[Fragment], b: Sequence[Fragment]) -> float:
    """Jaccard index of two normalized fragment lists' characters.

    >>> jaccard(((0, 10),), ((5, 15),))
    0.3333333333333333
    """
    shared = overlap(a, b)
    return shared / (size(a) + size(b) - shared) if shared else 0.0


def best_matching_sum(similarity: np.ndarray) -> float:
    """Largest sum of similarities over one-to-one matchings (Hungarian algorithm)."""
    if similarity.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(similarity, maximize=True)
    return float(similarity[rows, cols].sum())


@dataclass
class Counts:
    """Summed similarities and entity counts; adds up across documents and types."""

    exact: float = 0.0
    lenient: float = 0.0
    gold: int = 0
    predicted: int = 0

    def add(self, other: Counts) -> None:
        self.exact += other.exact
        self.lenient += other.lenient
        self.gold += other.gold
        self.predicted += other.predicted

    def prf(self, strategy: str) -> dict[str, float]:
        matched = getattr(self, strategy)
        precision = matched / self.predicted if self.predicted else 0.0
        recall = matched / self.gold if self.gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1}


def score_type(gold: Sequence[tuple[Fragment, ...]], predicted: Sequence[tuple[Fragment, ...]]) -> Counts:
    """Exact and lenient matched sums for one document and one type."""
    lenient = np.array([[jaccard(g, p) for p in predicted] for g in gold]).reshape(len(gold), len(predicted))
    exact = (lenient == 1.0).astype(float)
    return Counts(best_matching_sum(exact), best_matching_sum(lenient), len(gold), len(predicted))


@dataclass
class Report:
    """Micro-averaged results and one :class:`Counts` per type."""

    per_type: dict[str, Counts] = field(default_factory=dict)
    documents: int = 0
    missing_predictions: int = 0

    @property
    def total(self) -> Counts:
        total = Counts()
        for counts in self.per_type.values():
            total.add(counts)
        return total

    def to_dict(self) -> dict:
        """``exact``/``lenient`` micro P/R/F1, ``per_type`` tables, and document counts (JSON-ready)."""
        total = self.total
        return {
            "exact": total.prf("exact"),
            "lenient": total.prf("lenient"),
            "gold": total.gold,
            "predicted": total.predicted,
            "documents": self.documents,
            "missing_predictions": self.missing_predictions,
            "per_type": {
                name: {
                    "gold": counts.gold,
                    "predicted": counts.predicted,
                    "exact": counts.prf("exact"),
                    "lenient": counts.prf("lenient"),
                }
                for name, counts in sorted(self.per_type.items())
            },
        }


def score(
    gold: Mapping[str, Sequence[Scorable]],
    predicted: Mapping[str, Sequence[Scorable]],
    types: Sequence[str] | None = None,
) -> Report:
    """Score predicted entities against gold, document by document.

    Args:
        gold: document id to gold entities (anything with ``type`` and ``fragments``).
        predicted: document id to predicted entities; a gold document absent here predicts nothing.
        types: score only these types (default: every type found in gold or predictions).

    Returns:
        A :class:`Report`; ``report.to_dict()`` gives the figures.

    Raises:
        ValueError: a prediction for a document that is not in gold.
    """
    unknown = sorted(set(predicted) - set(gold))
    if unknown:
        raise ValueError(f"Predictions for {len(unknown)} document(s) not in gold, e.g. {unknown[:3]}.")
    report = Report(documents=len(gold), missing_predictions=len(set(gold) - set(predicted)))
    for doc_id, gold_entities in gold.items():
        by_type = _group(gold_entities, predicted.get(doc_id, ()), types)
        for name, (gold_fragments, predicted_fragments) in by_type.items():
            report.per_type.setdefault(name, Counts()).add(score_type(gold_fragments, predicted_fragments))
    for name in types or ():
        report.per_type.setdefault(name, Counts())
    return report


def _group(
    gold: Iterable[Scorable], predicted: Iterable[Scorable], types: Sequence[str] | None
) -> dict[str, tuple[list, list]]:
    groups: dict[str, tuple[list, list]] = {}
    for side, entities in enumerate((gold, predicted)):
        for entity in entities:
            if types is None or entity.type in types:
                groups.setdefault(entity.type, ([], []))[side].append(normalize(entity.fragments))
    return groups


def format_report(result: dict) -> str:
    """A plain-text table of a :meth:`Report.to_dict` result."""
    header = f"{'type':<24}{'gold':>7}{'pred':>7}{'exact P':>9}{'R':>7}{'F1':>7}{'lenient P':>11}{'R':>7}{'F1':>7}"
    rows = [header, "-" * len(header)]
    entries = list(result["per_type"].items()) + [("micro", result)]
    for name, row in entries:
        exact, lenient = row["exact"], row["lenient"]
        rows.append(
            f"{name:<24}{row['gold']:>7}{row['predicted']:>7}"
            f"{exact['precision']:>9.4f}{exact['recall']:>7.4f}{exact['f1']:>7.4f}"
            f"{lenient['precision']:>11.4f}{lenient['recall']:>7.4f}{lenient['f1']:>7.4f}"
        )
    return "\n".join(rows)
