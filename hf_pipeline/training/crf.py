"""The CRF head's training half: a linear-chain CRF per layer over the words of each window, its negative
log-likelihood as the loss, and the move of the learned transitions into ``config.json`` for the bundle.

The encoder stays a stock ``AutoModelForTokenClassification``: its logits are the CRF's emissions, and the
transition matrices (``layers x labels x labels``) ride along as the model's ``crf`` submodule while it trains
(so the optimizer, checkpoints and the best-checkpoint reload carry them), then move into the config under
``ner_crf_transitions``, where the pipeline's Viterbi decoder (``hf_pipeline.crf``) reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_pipeline.crf import TRANSITIONS_KEY, bio_masks

NEVER = -1e4  # a transition IOB2 forbids: exp(-1e4) is 0 in float32, and the arithmetic stays finite


class LayeredCrf(nn.Module):
    """One transition matrix per layer over the labels; IOB2-invalid transitions are masked, not learned."""

    def __init__(self, labels: Sequence[str], layers: int) -> None:
        super().__init__()
        self.transitions = nn.Parameter(torch.zeros(layers, len(labels), len(labels)))
        allowed, _ = bio_masks(labels)
        self.register_buffer("allowed", torch.from_numpy(allowed), persistent=False)

    def negative_log_likelihood(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over layers of the mean per-word NLL. ``logits`` is ``[batch, token, layer * label]``, ``labels``
        ``[batch, token, layer]`` with -100 on tokens that are not a word's first subword (the same in every
        layer). A window may start inside an entity, so any label may start a window."""
        layers = labels.shape[-1]
        emissions = logits.float().view(*logits.shape[:2], layers, -1)
        emissions, labels, mask = words_first(emissions, labels)
        batch, length = mask.shape
        # Layers become batch rows: [batch * layer, word, label] and [batch * layer, word].
        emissions = emissions.permute(0, 2, 1, 3).reshape(batch * layers, length, -1)
        labels = labels.permute(0, 2, 1).reshape(batch * layers, length).clamp(min=0)
        mask = mask.repeat_interleave(layers, dim=0)
        transitions = self.transitions.masked_fill(~self.allowed, NEVER).repeat(batch, 1, 1)
        nll = _log_partition(emissions, transitions, mask) - _path_score(emissions, transitions, labels, mask)
        nll = nll * mask[:, 0]  # a window without a word start adds nothing
        return nll.sum() / mask[::layers].sum().clamp(min=1)


def words_first(emissions: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each window's labelled tokens (its words) moved to the front, in order; the mask says which are words."""
    labelled = labels[..., 0] != -100
    order = torch.argsort((~labelled).to(torch.int8), dim=1, stable=True)
    emissions = emissions.gather(1, order[..., None, None].expand_as(emissions))
    labels = labels.gather(1, order[..., None].expand_as(labels))
    length = int(labelled.sum(1).max().clamp(min=1))
    mask = torch.arange(labels.shape[1], device=labels.device)[None] < labelled.sum(1, keepdim=True)
    return emissions[:, :length], labels[:, :length], mask[:, :length]


def _path_score(
    emissions: torch.Tensor, transitions: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    emitted = emissions.gather(2, labels[..., None]).squeeze(-1)
    rows = torch.arange(len(labels), device=labels.device)[:, None]
    moved = transitions[rows, labels[:, :-1], labels[:, 1:]]
    return (emitted * mask).sum(1) + (moved * mask[:, 1:]).sum(1)


def _log_partition(emissions: torch.Tensor, transitions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    score = emissions[:, 0]
    for position in range(1, emissions.shape[1]):
        step = torch.logsumexp(score[:, :, None] + transitions, dim=1) + emissions[:, position]
        score = torch.where(mask[:, position, None], step, score)
    return torch.logsumexp(score, dim=1)


def crf_loss(crf: LayeredCrf) -> Callable[..., torch.Tensor]:
    """compute_loss_func for the Trainer: the CRF's NLL of the model's logits."""

    def loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        return crf.negative_log_likelihood(outputs.logits, labels)

    return loss


def attach_crf(model: PreTrainedModel, labels: Sequence[str], layers: int) -> LayeredCrf:
    """Give ``model`` a ``crf`` submodule (trained with it); start from transitions the config already holds."""
    model.crf = LayeredCrf(labels, layers)
    saved = getattr(model.config, TRANSITIONS_KEY, None)
    if saved is not None and torch.tensor(saved).shape == model.crf.transitions.shape:
        model.crf.transitions.data.copy_(torch.tensor(saved))
    return model.crf


def move_crf_to_config(model: PreTrainedModel) -> None:
    """The learned transitions into ``config.json`` (``ner_crf_transitions``); the model is stock again."""
    crf = getattr(model, "crf", None)
    if crf is not None:
        setattr(model.config, TRANSITIONS_KEY, crf.transitions.detach().cpu().tolist())
        del model.crf
