"""The training half of the heads: each head's loss, what it adds to the model while it trains, and the decoding
parameters validation uses, registered under the name ``config.json["ner_decoder"]`` records (:data:`TRAINING_HEADS`).
The decoding half travels with the bundle (``hf_pipeline.heads``), and validation decodes through it.

- ``softmax``: the sum over tag sequences of each sequence's mean token cross-entropy;
- ``crf``: a linear-chain CRF per sequence (``hf_pipeline.training.crf``), its negative log-likelihood; the learned
  transitions move into ``config.json`` when training ends;
- ``span``: the span head's weights (:class:`SpanScorer`) ride along as the model's ``span_head`` submodule; the loss
  is each candidate span's binary cross-entropy summed over types, averaged over the spans of the batch (a span may
  be several types; a gold span and type weigh ``--span_positive_weight`` times a non-entity). Validation decodes at
  every threshold of :data:`SPAN_THRESHOLDS` and reports the best; when training ends the best checkpoint's
  threshold goes into ``config.json`` and the weights beside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from hf_pipeline import spans
from hf_pipeline.training.crf import attach_crf, crf_loss, move_crf_to_config, words_first
from hf_pipeline.training.data import layered_loss
from hf_pipeline.training.schemes import SPAN_POSITIVE_WEIGHT, SPAN_SCORER, Encoding

Loss = Callable[..., torch.Tensor]
SPAN_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20))
SPAN_PRIOR_LOGIT = -4.0  # the span head's initial bias: most spans are no entity


@dataclass(frozen=True)
class TrainingHead:
    """``attach(model, encoding)`` readies a model to learn the encoding's labels and returns its loss;
    ``parameters`` gives the decoder's parameters of the model now; ``finish(model, evaluate)`` makes the trained
    model a stock one whose config (and, for the span head, the weights file saved beside it) holds what decoding
    needs (``evaluate()``: the validation metrics of the model now); ``thresholds``: the score thresholds validation
    tries (none: the head keeps what it decodes)."""

    attach: Callable[[PreTrainedModel, Encoding], Loss]
    parameters: Callable[[PreTrainedModel, int], Any]
    finish: Callable[[PreTrainedModel, Callable[[], dict[str, float]]], None]
    thresholds: tuple[float, ...] = ()


def _attach_softmax(model: PreTrainedModel, encoding: Encoding) -> Loss:
    return layered_loss


def _attach_crf(model: PreTrainedModel, encoding: Encoding) -> Loss:
    labels = encoding.sequence_labels
    return crf_loss(attach_crf(model, labels[0], len(labels)))


def _crf_parameters(model: PreTrainedModel, sequences: int) -> list[Any]:
    return list(model.crf.transitions.detach().cpu().double().numpy())


class SpanScorer(nn.Module):
    """The span head's weights (``hf_pipeline.spans``) while they train, and its loss."""

    def __init__(
        self,
        types: int,
        dims: int,
        max_words: int,
        scorer: str = SPAN_SCORER,
        positive_weight: float = SPAN_POSITIVE_WEIGHT,
    ) -> None:
        super().__init__()
        self.names = spans.SCORER_WEIGHTS[scorer]
        self.positive_weight = positive_weight
        for name, shape in spans.weight_shapes(scorer, types, dims, max_words).items():
            self.register_parameter(name, nn.Parameter(_initial(name, shape)))

    def weights(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.names}

    def trained_weights(self) -> dict[str, torch.Tensor]:
        """The weights as decoding reads them: detached, float32, on the CPU."""
        return {name: tensor.detach().float().cpu() for name, tensor in self.weights().items()}

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[batch, token, 2D]``; ``labels`` ``[batch, token, width]``: on each word's first subword,
        per width, the bit mask of the gold types of that span (-100 elsewhere)."""
        features, labels, mask = words_first(logits[:, :, None], labels)
        scores = spans.span_logits(features[:, :, 0], self.weights())  # [batch, word, width, type]
        types = scores.shape[-1]
        bits = torch.arange(types, device=labels.device)
        targets = ((labels.clamp(min=0)[..., None] >> bits) & 1).to(scores.dtype)
        valid = spans.valid_spans(mask.sum(1), labels.shape[-1], length=mask.shape[1])
        weight = torch.tensor(self.positive_weight, dtype=scores.dtype, device=scores.device)
        losses = F.binary_cross_entropy_with_logits(scores, targets, reduction="none", pos_weight=weight).sum(-1)
        return losses[valid].sum() / valid.sum().clamp(min=1)


def _initial(name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A weight's value before training: projections random at the scale of their inputs (``nn.Linear``'s),
    width terms and hidden biases zero, type biases at :data:`SPAN_PRIOR_LOGIT`."""
    if name == "bias":
        return torch.full(shape, SPAN_PRIOR_LOGIT)
    if name in ("width", "width_in", "hidden_bias", "start", "end"):
        return torch.zeros(shape)
    return torch.randn(shape) * shape[-1] ** -0.5


def _attach_span(model: PreTrainedModel, encoding: Encoding) -> Loss:
    config = model.config
    scorer = SpanScorer(
        len(getattr(config, spans.TYPES_KEY)),
        config.num_labels // 2,
        getattr(config, spans.MAX_WORDS_KEY),
        spans.scorer_of(config),
        encoding.positive_weight,
    )
    saved = getattr(model, spans.WEIGHTS_ATTRIBUTE, None)  # a resumed model's trained head
    if saved is not None:
        scorer.load_state_dict(saved)
    model.span_head = scorer.to(model.device)

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        return model.span_head.loss(outputs.logits, labels)

    return loss


def _span_parameters(model: PreTrainedModel, sequences: int) -> spans.SpanParameters:
    overlaps = bool(getattr(model.config, spans.OVERLAPS_KEY))
    return spans.SpanParameters(model.span_head.trained_weights(), min(SPAN_THRESHOLDS), overlaps)


def _finish_span(model: PreTrainedModel, evaluate: Callable[[], dict[str, float]]) -> None:
    """The threshold of the model now (the best checkpoint) into the config; the weights out of the module tree."""
    if getattr(model, "span_head", None) is None:
        return
    setattr(model.config, spans.THRESHOLD_KEY, float(evaluate().get("eval_span_threshold", 0.5)))
    setattr(model, spans.WEIGHTS_ATTRIBUTE, model.span_head.trained_weights())
    del model.span_head


TRAINING_HEADS: dict[str, TrainingHead] = {
    "softmax": TrainingHead(_attach_softmax, lambda model, sequences: [None] * sequences, lambda model, _: None),
    "crf": TrainingHead(_attach_crf, _crf_parameters, lambda model, _: move_crf_to_config(model)),
    "span": TrainingHead(_attach_span, _span_parameters, _finish_span, SPAN_THRESHOLDS),
}
