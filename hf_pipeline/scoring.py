"""The official SpRadIE metrics: exact and lenient precision, recall and F1 over (discontinuous) entities.

Per document and entity type, gold and predicted entities are matched one to one so that the sum of their
similarities is maximal (an assignment problem, solved exactly). Lenient similarity is the Jaccard index of
the characters covered by all fragments (only overlapping pairs count); exact similarity is 1 for identical
fragments and 0 otherwise. Precision = summed similarity / predictions, recall = summed similarity / gold,
micro-averaged over all types and documents. Empty gold or predictions give 0, never a division error.

Nested and flat figures: an entity is *nested* when it shares a character with another entity of its own side in
the same document (a gold entity with another gold entity, a predicted one with another predicted one; any type;
an exact duplicate counts as another entity), else *flat*. Nested F1 scores the nested predictions against the
nested gold entities with the same matching and similarities, flat F1 the flat ones: a nested gold entity found
only by a prediction that overlaps no other prediction counts as a miss of nested and a false positive of flat.

Only overlapping pairs have a similarity, so the assignment splits into connected groups of overlapping
entities, found by a sweep over sorted starts and solved one by one: the cost follows the number of
overlapping pairs, not gold x predicted. Exact matching needs no assignment: per distinct fragment list, the
smaller of its gold and predicted counts.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from scipy.optimize import linear_sum_assignment

Fragment = tuple[int, int]
SUBSETS = ("nested", "flat")


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


def overlapping_pairs(
    gold: Sequence[tuple[Fragment, ...]], predicted: Sequence[tuple[Fragment, ...]]
) -> Iterator[tuple[int, int, float]]:
    """(gold index, predicted index, Jaccard) for every pair that shares a character.

    A sweep over the entities sorted by start keeps the ones whose hull is still open; a new entity is
    compared only with the open ones of the other side.
    """
    events = sorted(
        (fragments[0][0], side, index)
        for side, group in enumerate((gold, predicted))
        for index, fragments in enumerate(group)
        if fragments
    )
    open_ends: list[list[tuple[int, int]]] = [[], []]  # per side: heap of (hull end, index)
    open_sets: list[set[int]] = [set(), set()]
    for start, side, index in events:
        for other in (0, 1):
            while open_ends[other] and open_ends[other][0][0] <= start:
                open_sets[other].discard(heapq.heappop(open_ends[other])[1])
        entity = (gold, predicted)[side][index]
        for partner in open_sets[1 - side]:
            g, p = (index, partner) if side == 0 else (partner, index)
            similarity = jaccard(gold[g], predicted[p])
            if similarity:
                yield g, p, similarity
        heapq.heappush(open_ends[side], (entity[-1][1], index))
        open_sets[side].add(index)


def exact_matches(gold: Sequence[tuple[Fragment, ...]], predicted: Sequence[tuple[Fragment, ...]]) -> int:
    """Size of the best one-to-one matching of identical fragment lists: per distinct list, the smaller count."""
    gold_counts, predicted_counts = Counter(gold), Counter(predicted)
    return sum(min(count, predicted_counts[fragments]) for fragments, count in gold_counts.items())


def lenient_matching_sum(gold: Sequence[tuple[Fragment, ...]], predicted: Sequence[tuple[Fragment, ...]]) -> float:
    """Best one-to-one sum of Jaccard similarities, solved per connected group of overlapping entities."""
    pairs = list(overlapping_pairs(gold, predicted))
    groups = _connected_groups(len(gold), pairs)
    total = 0.0
    for rows, cols, members in groups:
        matrix = np.zeros((len(rows), len(cols)))
        for g, p, similarity in members:
            matrix[rows[g], cols[p]] = similarity
        total += best_matching_sum(matrix)
    return total


def _connected_groups(
    num_gold: int, pairs: Sequence[tuple[int, int, float]]
) -> list[tuple[dict[int, int], dict[int, int], list[tuple[int, int, float]]]]:
    """Union-find over gold (``g``) and predicted (``num_gold + p``) nodes; per group: row and column numbers."""
    parent: dict[int, int] = {}

    def find(node: int) -> int:
        root = node
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(node, node) != root:
            parent[node], node = root, parent[node]
        return root

    for g, p, _ in pairs:
        parent[find(g)] = find(num_gold + p)
    groups: dict[int, tuple[dict[int, int], dict[int, int], list]] = {}
    for g, p, similarity in pairs:
        rows, cols, members = groups.setdefault(find(g), ({}, {}, []))
        rows.setdefault(g, len(rows))
        cols.setdefault(p, len(cols))
        members.append((g, p, similarity))
    return list(groups.values())


def score_type(gold: Sequence[tuple[Fragment, ...]], predicted: Sequence[tuple[Fragment, ...]]) -> Counts:
    """Exact and lenient matched sums for one document and one type (normalized fragment lists)."""
    return Counts(
        float(exact_matches(gold, predicted)), lenient_matching_sum(gold, predicted), len(gold), len(predicted)
    )


@dataclass
class Report:
    """Micro-averaged results and one :class:`Counts` per type."""

    per_type: dict[str, Counts] = field(default_factory=dict)
    documents: int = 0
    missing_predictions: int = 0
    subsets: dict[str, Counts] = field(default_factory=lambda: {name: Counts() for name in SUBSETS})

    def add(self, other: Report) -> None:
        """Add another report's counts (of other documents) to these."""
        for name, counts in other.per_type.items():
            self.per_type.setdefault(name, Counts()).add(counts)
        for name, counts in other.subsets.items():
            self.subsets[name].add(counts)
        self.documents += other.documents
        self.missing_predictions += other.missing_predictions

    @property
    def total(self) -> Counts:
        total = Counts()
        for counts in self.per_type.values():
            total.add(counts)
        return total

    def to_dict(self) -> dict:
        """``exact``/``lenient`` micro P/R/F1, ``per_type`` tables, ``nested`` and ``flat`` figures, and document
        counts (JSON-ready)."""
        total = self.total
        return {
            "exact": total.prf("exact"),
            "lenient": total.prf("lenient"),
            "gold": total.gold,
            "predicted": total.predicted,
            "documents": self.documents,
            "missing_predictions": self.missing_predictions,
            **{
                name: {
                    "exact": counts.prf("exact"),
                    "lenient": counts.prf("lenient"),
                    "gold": counts.gold,
                    "predicted": counts.predicted,
                }
                for name, counts in self.subsets.items()
            },  # fmt: skip
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
        report.add(score_document(gold_entities, predicted.get(doc_id, ()), types))
    report.documents, report.missing_predictions = len(gold), len(set(gold) - set(predicted))
    for name in types or ():
        report.per_type.setdefault(name, Counts())
    return report


def score_document(gold: Sequence[Scorable], predicted: Sequence[Scorable], types: Sequence[str] | None) -> Report:
    """The counts of one document: per type, and over its nested and its flat entities."""
    groups: dict[str, tuple[list, list]] = {}
    for side, entities in enumerate((gold, predicted)):
        for entity, nested in zip(entities, nested_flags(entities)):
            if types is None or entity.type in types:
                groups.setdefault(entity.type, ([], []))[side].append((normalize(entity.fragments), nested))
    report = Report()
    for name, (gold_side, predicted_side) in groups.items():
        report.per_type[name] = score_type([f for f, _ in gold_side], [f for f, _ in predicted_side])
        for subset, wanted in (("nested", True), ("flat", False)):
            report.subsets[subset].add(
                score_type(
                    [f for f, nested in gold_side if nested == wanted],
                    [f for f, nested in predicted_side if nested == wanted],
                )
            )
    return report


def nested_flags(entities: Sequence[Scorable]) -> list[bool]:
    """For each entity: does it share a character with another entity of ``entities`` (any type)?

    >>> from collections import namedtuple
    >>> E = namedtuple("E", "type fragments")
    >>> nested_flags([E("X", ((0, 10),)), E("Y", ((2, 4),)), E("X", ((20, 25),)), E("X", ((10, 12),))])
    [True, True, False, False]
    """
    fragments = [normalize(entity.fragments) for entity in entities]
    nested = [False] * len(entities)
    for first, second, _ in overlapping_pairs(fragments, fragments):
        if first != second:
            nested[first] = nested[second] = True
    return nested


def format_report(result: dict) -> str:
    """A plain-text table of a :meth:`Report.to_dict` result."""
    header = f"{'type':<24}{'gold':>7}{'pred':>7}{'exact P':>9}{'R':>7}{'F1':>7}{'lenient P':>11}{'R':>7}{'F1':>7}"
    rows = [header, "-" * len(header)]
    entries = list(result["per_type"].items()) + [(f"({name})", result[name]) for name in SUBSETS if name in result]
    entries.append(("micro", result))
    for name, row in entries:
        exact, lenient = row["exact"], row["lenient"]
        rows.append(
            f"{name:<24}{row['gold']:>7}{row['predicted']:>7}"
            f"{exact['precision']:>9.4f}{exact['recall']:>7.4f}{exact['f1']:>7.4f}"
            f"{lenient['precision']:>11.4f}{lenient['recall']:>7.4f}{lenient['f1']:>7.4f}"
        )
    return "\n".join(rows)


def paired_bootstrap(
    gold: Mapping[str, Sequence[Scorable]],
    first: Mapping[str, Sequence[Scorable]],
    second: Mapping[str, Sequence[Scorable]],
    types: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """How much better ``second`` is than ``first`` on the same gold, with its noise: a paired bootstrap over
    documents. Each resample draws as many documents as gold has, with replacement, and scores both prediction
    sets on the same draw; the 95% interval is the 2.5th to 97.5th percentile of the differences of F1.

    Returns:
        For ``all``, ``nested`` and ``flat`` entities and each of ``exact`` and ``lenient``: ``first`` and
        ``second`` (F1 on all documents), ``difference`` (second - first), ``interval`` ([low, high]) and
        ``second_better`` (the share of resamples in which second scores higher); and ``resamples``, ``seed``,
        ``documents``.
    """
    documents = sorted(gold)
    draws = np.random.default_rng(seed).integers(0, len(documents), size=(resamples, len(documents)))
    per_document = [
        [score_document(gold[doc], predictions.get(doc, ()), types) for doc in documents]
        for predictions in (first, second)
    ]
    result: dict = {"resamples": resamples, "seed": seed, "documents": len(documents)}
    for subset in ("all", *SUBSETS):
        counts = [[r.total if subset == "all" else r.subsets[subset] for r in side] for side in per_document]
        result[subset] = {strategy: _bootstrap_f1(counts, strategy, draws) for strategy in ("exact", "lenient")}
    return result


def _bootstrap_f1(counts: Sequence[Sequence[Counts]], strategy: str, draws: np.ndarray) -> dict:
    observed, resampled = [], []
    for side in counts:
        matched = np.array([getattr(c, strategy) for c in side] or [0.0])
        gold = np.array([c.gold for c in side] or [0])
        predicted = np.array([c.predicted for c in side] or [0])
        observed.append(_f1(matched.sum(), gold.sum(), predicted.sum()))
        resampled.append(_f1(matched[draws].sum(1), gold[draws].sum(1), predicted[draws].sum(1)))
    differences = resampled[1] - resampled[0]
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "first": float(observed[0]),
        "second": float(observed[1]),
        "difference": float(observed[1] - observed[0]),
        "interval": [float(low), float(high)],
        "second_better": float(np.mean(differences > 0)),
    }


def _f1(matched: np.ndarray, gold: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Micro F1 from summed counts, 0 where it is undefined (works on arrays of resamples)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = 2 * matched / (np.asarray(gold) + np.asarray(predicted))
    return np.nan_to_num(f1)


def format_comparison(result: dict, first: str, second: str) -> str:
    """A plain-text table of a :func:`paired_bootstrap` result."""
    lines = [
        f"paired bootstrap over {result['documents']} documents ({result['resamples']} resamples, "
        f"seed {result['seed']}): A = {first}, B = {second}",
        f"{'entities':<10}{'F1':<9}{'A':>8}{'B':>8}{'B - A':>9}   95% interval      B better",
    ]
    for subset in ("all", *SUBSETS):
        for strategy in ("exact", "lenient"):
            r = result[subset][strategy]
            low, high = r["interval"]
            lines.append(
                f"{subset:<10}{strategy:<9}{r['first']:>8.4f}{r['second']:>8.4f}{r['difference']:>+9.4f}"
                f"   [{low:+.4f}, {high:+.4f}]   {r['second_better']:.1%}"
            )
    return "\n".join(lines)
