"""The training half of the heads: each head's loss, what it adds to the model while it trains, and the decoding
parameters validation uses, registered under the name ``config.json["ner_decoder"]`` records (:data:`TRAINING_HEADS`).
The decoding half travels with the bundle (``hf_pipeline.heads``), and validation decodes through it.

- ``softmax``: the sum over tag sequences of each sequence's mean token cross-entropy;
- ``crf``: a linear-chain CRF per sequence (``hf_pipeline.training.crf``), its negative log-likelihood; the learned
  transitions move into ``config.json`` when training ends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_pipeline.training.crf import attach_crf, crf_loss, move_crf_to_config
from hf_pipeline.training.data import layered_loss

Loss = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TrainingHead:
    """``attach`` readies a model and returns its loss; ``parameters`` gives the decoder's parameters of the model
    now (one per sequence); ``finish`` makes the trained model a stock one whose config holds what decoding needs."""

    attach: Callable[[PreTrainedModel, Sequence[Sequence[str]]], Loss]
    parameters: Callable[[PreTrainedModel, int], list[Any]]
    finish: Callable[[PreTrainedModel], None]


def _attach_softmax(model: PreTrainedModel, labels: Sequence[Sequence[str]]) -> Loss:
    return layered_loss


def _attach_crf(model: PreTrainedModel, labels: Sequence[Sequence[str]]) -> Loss:
    return crf_loss(attach_crf(model, labels[0], len(labels)))


def _crf_parameters(model: PreTrainedModel, sequences: int) -> list[Any]:
    return list(model.crf.transitions.detach().cpu().double().numpy())


TRAINING_HEADS: dict[str, TrainingHead] = {
    "softmax": TrainingHead(_attach_softmax, lambda model, sequences: [None] * sequences, lambda model: None),
    "crf": TrainingHead(_attach_crf, _crf_parameters, move_crf_to_config),
}
