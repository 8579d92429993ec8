"""Linear-chain CRF decoding over one layer's words (numpy only): it travels with every model bundle.

A bundle trained with ``--decoder crf`` keeps, in ``config.json``, one matrix of label-to-label transition scores
per layer (``ner_crf_transitions``); the emissions are the classifier's log-probabilities of each word (its first
subword). Transitions that break IOB2 (``I-T`` after anything but ``B-T``/``I-T``, or at the start of a text) are
never taken, so every decoded layer is a valid BIO sequence. Training (``hf_pipeline.training.crf``) uses the same
masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TRANSITIONS_KEY = "ner_crf_transitions"


def layer_transitions(found: Sequence, layers: Sequence[int], labels: Sequence[str]) -> list[np.ndarray]:
    """The transition matrices a bundle's configs hold, checked: one ``labels x labels`` matrix per layer."""
    matrices = [np.asarray(matrix, dtype=np.float64) for matrix in found]
    size = (len(labels), len(labels))
    if len(matrices) != len(layers) or any(matrix.shape != size for matrix in matrices):
        raise ValueError(
            f"This bundle decodes with a CRF (ner_decoder is 'crf') but its configs hold {len(matrices)} transition "
            f"matrices for layers {list(layers)}, each of which needs a {size[0]} x {size[1]} matrix under "
            f"{TRANSITIONS_KEY!r}. Save the bundle again with hf_pipeline.save_bundle."
        )
    broken = [index for index, matrix in enumerate(matrices) if not np.isfinite(matrix).all()]
    if broken:
        raise ValueError(
            f"config.json[{TRANSITIONS_KEY!r}]: the transition matrices {broken} hold NaN or infinite scores, which "
            "decode to nonsense. The file was damaged or edited: save the bundle again with hf_pipeline.save_bundle."
        )
    return matrices


def bio_masks(labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Which transitions IOB2 allows (``[from, to]``) and which labels may start a text.

    >>> allowed, start = bio_masks(["O", "B-X", "I-X", "B-Y", "I-Y"])
    >>> allowed.astype(int)
    array([[1, 1, 0, 1, 0],
           [1, 1, 1, 1, 0],
           [1, 1, 1, 1, 0],
           [1, 1, 0, 1, 1],
           [1, 1, 0, 1, 1]])
    >>> start.astype(int)
    array([1, 1, 0, 1, 0])
    """
    inside = [label[2:] if label.startswith("I-") else None for label in labels]
    entity = [label[2:] if label[:2] in ("B-", "I-") else None for label in labels]
    allowed = np.array([[inside[to] is None or entity[source] == inside[to] for to in range(len(labels))]
                        for source in range(len(labels))])  # fmt: skip
    start = np.array([kind is None for kind in inside])
    return allowed, start


def _masked(transitions: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    allowed, start = bio_masks(labels)
    return np.where(allowed, transitions, -np.inf), np.where(start, 0.0, -np.inf)


def viterbi(emissions: np.ndarray, transitions: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The best IOB2-valid label sequence: ``emissions`` is ``[word, label]``, ``transitions`` ``[from, to]``.

    >>> labels = ["O", "B-X", "I-X"]
    >>> emissions = np.log([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])  # alone, word 1 would be "I-X" after "O"
    >>> viterbi(emissions, np.zeros((3, 3)), labels).tolist()
    [1, 2]
    """
    transitions, start = _masked(np.asarray(transitions, dtype=np.float64), labels)
    if len(emissions) == 0:
        return np.zeros(0, dtype=np.int64)
    score = start + emissions[0]
    backpointers = np.zeros(emissions.shape, dtype=np.int64)
    for position in range(1, len(emissions)):
        candidates = score[:, None] + transitions
        backpointers[position] = candidates.argmax(0)
        score = candidates.max(0) + emissions[position]
    path = [int(score.argmax())]
    for position in range(len(emissions) - 1, 0, -1):
        path.append(int(backpointers[position, path[-1]]))
    return np.array(path[::-1], dtype=np.int64)


def marginals(emissions: np.ndarray, transitions: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """``[word, label]`` probability of each label at each word under the CRF (forward-backward).

    >>> labels = ["O", "B-X", "I-X"]
    >>> p = marginals(np.log([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]]), np.zeros((3, 3)), labels)
    >>> bool(np.allclose(p.sum(1), 1)), float(p[0, 2])  # "I-X" cannot start a text
    (True, 0.0)
    """
    transitions, start = _masked(np.asarray(transitions, dtype=np.float64), labels)
    count = len(emissions)
    forward, backward = np.zeros(emissions.shape), np.zeros(emissions.shape)
    if count == 0:
        return forward
    forward[0] = start + emissions[0]
    for position in range(1, count):
        forward[position] = _logsumexp(forward[position - 1][:, None] + transitions, axis=0) + emissions[position]
    for position in range(count - 2, -1, -1):
        backward[position] = _logsumexp(transitions + (emissions[position + 1] + backward[position + 1])[None], axis=1)
    log_z = _logsumexp(forward[-1], axis=0)
    return np.exp(forward + backward - log_z)


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(values - peak), axis=axis))
