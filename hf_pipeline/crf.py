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
    """The best IOB2-valid label sequence: ``emissions`` is ``[word, label]``, ``transitions`` ``[from, to]``; or
    several sequences at once, ``[sequence, word, label]`` and ``[sequence, from, to]`` (``labels`` of the same
    IOB2 shape for all: one Python step per word, not per word and sequence).

    >>> labels = ["O", "B-X", "I-X"]
    >>> emissions = np.log([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]])  # alone, word 1 would be "I-X" after "O"
    >>> viterbi(emissions, np.zeros((3, 3)), labels).tolist()
    [1, 2]
    >>> viterbi(np.stack([emissions, emissions[::-1]]), np.zeros((2, 3, 3)), labels).tolist()
    [[1, 2], [0, 0]]
    """
    single = emissions.ndim == 2
    emissions, transitions, start = _batched(emissions, transitions, labels)
    batch, count, _ = emissions.shape
    if count == 0:
        path = np.zeros((batch, 0), dtype=np.int64)
        return path[0] if single else path
    rows = np.arange(batch)
    score = start + emissions[:, 0]
    backpointers = np.zeros(emissions.shape, dtype=np.int64)
    for position in range(1, count):
        candidates = score[:, :, None] + transitions
        backpointers[:, position] = candidates.argmax(1)
        score = candidates.max(1) + emissions[:, position]
    path = np.zeros((batch, count), dtype=np.int64)
    path[:, -1] = score.argmax(1)
    for position in range(count - 1, 0, -1):
        path[:, position - 1] = backpointers[rows, position, path[:, position]]
    return path[0] if single else path


def marginals(emissions: np.ndarray, transitions: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """``[word, label]`` probability of each label at each word under the CRF (forward-backward); batched like
    :func:`viterbi`.

    >>> labels = ["O", "B-X", "I-X"]
    >>> p = marginals(np.log([[0.6, 0.3, 0.1], [0.2, 0.1, 0.7]]), np.zeros((3, 3)), labels)
    >>> bool(np.allclose(p.sum(1), 1)), float(p[0, 2])  # "I-X" cannot start a text
    (True, 0.0)
    """
    single = emissions.ndim == 2
    emissions, transitions, start = _batched(emissions, transitions, labels)
    count = emissions.shape[1]
    forward, backward = np.zeros(emissions.shape), np.zeros(emissions.shape)
    if count:
        forward[:, 0] = start + emissions[:, 0]
        for position in range(1, count):
            step = forward[:, position - 1, :, None] + transitions
            forward[:, position] = _logsumexp(step, axis=1) + emissions[:, position]
        for position in range(count - 2, -1, -1):
            following = (emissions[:, position + 1] + backward[:, position + 1])[:, None, :]
            backward[:, position] = _logsumexp(transitions + following, axis=2)
        log_z = _logsumexp(forward[:, -1], axis=1)
        forward = np.exp(forward + backward - log_z[:, None, None])
    return forward[0] if single else forward


def _batched(
    emissions: np.ndarray, transitions: np.ndarray, labels: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[sequence, word, label]`` emissions, ``[sequence, from, to]`` masked transitions, the start scores."""
    emissions = np.asarray(emissions, dtype=np.float64)
    emissions = emissions[None] if emissions.ndim == 2 else emissions
    transitions, start = _masked(np.asarray(transitions, dtype=np.float64), labels)
    transitions = np.broadcast_to(transitions, (len(emissions), *transitions.shape[-2:]))
    return emissions, transitions, start


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(values, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(peak, axis=axis) + np.log(np.sum(np.exp(values - peak), axis=axis))
