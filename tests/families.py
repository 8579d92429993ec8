"""Tiny, random, offline base checkpoints of the encoder families a Spanish clinical NLP user fine-tunes.

Each family gets a tokenizer trained from scratch (with the `tokenizers` library) on the given texts, of the kind the
real checkpoints ship (WordPiece, byte-level BPE or SentencePiece-style Unigram), wrapped in the transformers class
that `AutoTokenizer` reloads it as, and a randomly initialised base model (no head): hidden size 32, 2 layers.

The transformers 5 tokenizer classes of BERT, RoBERTa, XLM-RoBERTa and DeBERTa-v2 rebuild their normalizer and
pre-tokenizer from their own arguments on every load, and keep only the vocabulary (and merges) of `tokenizer.json`.
So the tokenizer is trained through the very pipeline that class builds, and the class is then built again from the
trained vocabulary: what is built is exactly what reloads. ModernBERT ships a plain `tokenizer.json`
(`PreTrainedTokenizerFast`, an alias of `TokenizersBackend`), which reloads as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModel,
    BertForTokenClassification,
    BertTokenizer,
    DebertaV2Tokenizer,
    DistilBertTokenizer,
    PreTrainedConfig,
    PreTrainedTokenizerFast,
    RobertaTokenizer,
    XLMRobertaTokenizer,
)

VOCAB_SIZE = 800
"""Target vocabulary size of every trained tokenizer (byte-level BPE starts from its 256 byte symbols)."""

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
"""The tiny size shared by every family whose config uses the standard attribute names."""

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
DEBERTA_SPECIALS = ("[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]")
MODERNBERT_SPECIALS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")


def _wordpiece(specials: tuple[str, ...], alphabet: list[str]) -> trainers.Trainer:
    """A WordPiece trainer with the `##` continuation prefix of BERT.

    The `##` symbols are listed up front, in order: the trainer would number them in hash-map order, which breaks ties
    between merges differently on every run. As extra special tokens of the trainer they end up as plain vocabulary,
    because the transformers class is rebuilt from the vocabulary alone.
    """
    continuations = [f"##{char}" for char in alphabet]
    return trainers.WordPieceTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[*specials, *continuations], show_progress=False
    )


def _byte_bpe(specials: tuple[str, ...], alphabet: list[str]) -> trainers.Trainer:
    """A byte-level BPE trainer that starts from all 256 byte symbols, so no text is ever unknown."""
    return trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )


def _unigram(specials: tuple[str, ...], alphabet: list[str]) -> trainers.Trainer:
    """A SentencePiece-style Unigram trainer; the unknown piece is the fourth special (`<unk>` / `[UNK]`)."""
    return trainers.UnigramTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(specials), unk_token=specials[3], show_progress=False
    )


def _canonical_unigram(vocab: list[tuple[str, float]], specials: int) -> list[tuple[str, float]]:
    """Make a trained Unigram vocabulary the same on every run.

    Its scores vary in their last bits, and the trainer appends the characters it has no piece for with scores
    `min + 1e-4 * k`, k in hash-set order: round the scores, give that tail the lowest score, sort the ties by piece.
    """
    pieces = [(piece, round(score, 6)) for piece, score in vocab[specials:]]
    scores = {score for _, score in pieces}
    low = top = min(scores)
    while round(top + 1e-4, 6) in scores:
        top = round(top + 1e-4, 6)
    pieces = [(piece, low if score <= top else score) for piece, score in pieces]
    return vocab[:specials] + sorted(pieces, key=lambda piece: (-piece[1], piece[0]))


@dataclass(frozen=True)
class Family:
    """How to build one encoder family: its tokenizer class and trainer, and its config."""

    model_type: str
    tokenizer_class: type[PreTrainedTokenizerFast]
    trainer: Callable[[tuple[str, ...], list[str]], trainers.Trainer]
    specials: tuple[str, ...]
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)
    config_kwargs: dict[str, Any] = field(default_factory=lambda: dict(TINY))
    position_offset: int = 0
    """RoBERTa-style models number positions from pad_token_id + 1, so they need that many more embeddings."""
    config_ids: dict[str, str] = field(default_factory=lambda: {"pad_token_id": "pad_token_id"})
    """The config's special token ids, each read from the tokenizer attribute it maps to."""


CASED = {"do_lower_case": False, "strip_accents": False}
ROBERTA_IDS = {"pad_token_id": "pad_token_id", "bos_token_id": "cls_token_id", "eos_token_id": "sep_token_id"}
MODERNBERT_IDS = {**ROBERTA_IDS, "cls_token_id": "cls_token_id", "sep_token_id": "sep_token_id"}
SPEC: dict[str, Family] = {
    "bert-cased": Family("bert", BertTokenizer, _wordpiece, BERT_SPECIALS, CASED),
    "bert-uncased": Family("bert", BertTokenizer, _wordpiece, BERT_SPECIALS, {"do_lower_case": True}),
    "roberta": Family(
        "roberta",
        RobertaTokenizer,
        _byte_bpe,
        ROBERTA_SPECIALS,
        {"add_prefix_space": True},  # needed for is_split_into_words=True
        position_offset=2,
        config_ids=ROBERTA_IDS,
    ),
    "xlm-roberta": Family(
        "xlm-roberta", XLMRobertaTokenizer, _unigram, ROBERTA_SPECIALS, position_offset=2, config_ids=ROBERTA_IDS
    ),
    "deberta-v2": Family(
        "deberta-v2",
        DebertaV2Tokenizer,
        _unigram,
        DEBERTA_SPECIALS,
        # DeBERTa-v3 (what users fine-tune) is DeBERTa-v2 with relative positions only.
        config_kwargs={
            **TINY,
            "relative_attention": True,
            "position_buckets": 32,
            "pos_att_type": ["p2c", "c2p"],
            "position_biased_input": False,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
        },
    ),
    "distilbert": Family(
        "distilbert",
        DistilBertTokenizer,
        _wordpiece,
        BERT_SPECIALS,
        CASED,
        config_kwargs={"dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64},
    ),
    "electra": Family("electra", BertTokenizer, _wordpiece, BERT_SPECIALS, CASED, {**TINY, "embedding_size": 32}),
    "modernbert": Family(
        "modernbert", PreTrainedTokenizerFast, _byte_bpe, MODERNBERT_SPECIALS, config_ids=MODERNBERT_IDS
    ),
}
FAMILIES: tuple[str, ...] = tuple(SPEC)


def _modernbert_backend() -> Tokenizer:
    """The pipeline of answerdotai/ModernBERT-base's `tokenizer.json`: byte-level BPE, no prefix space."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def build_tokenizer(family: str, texts: list[str], max_positions: int = 128) -> PreTrainedTokenizerFast:
    """Train the family's tokenizer on `texts` and wrap it in the transformers class it is loaded as."""
    spec = SPEC[family]
    kwargs = {**spec.tokenizer_kwargs, "model_max_length": max_positions}
    if spec.tokenizer_class is PreTrainedTokenizerFast:
        backend = _modernbert_backend()
    else:  # the class's own pipeline (normalizer, pre-tokenizer) around a placeholder vocabulary
        backend = spec.tokenizer_class(**kwargs).backend_tokenizer
    normalize = backend.normalizer.normalize_str if backend.normalizer else str
    alphabet = sorted({char for text in texts for char in normalize(text) if not char.isspace()})
    backend.train_from_iterator(texts, trainer=spec.trainer(spec.specials, alphabet))
    if spec.tokenizer_class is not PreTrainedTokenizerFast:
        trained = json.loads(backend.to_str())["model"]
        if trained["type"] == "Unigram":
            kwargs["vocab"] = _canonical_unigram([tuple(piece) for piece in trained["vocab"]], len(spec.specials))
        else:
            kwargs["vocab"] = trained["vocab"]
        if trained["type"] == "BPE":
            kwargs["merges"] = [tuple(merge) for merge in trained["merges"]]
        return spec.tokenizer_class(**kwargs)
    cls, sep, pad, unk, mask = spec.specials
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:0 {sep}:0",
        special_tokens=[(cls, backend.token_to_id(cls)), (sep, backend.token_to_id(sep))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        cls_token=cls,
        sep_token=sep,
        pad_token=pad,
        unk_token=unk,
        mask_token=mask,
        model_input_names=["input_ids", "attention_mask"],
        **kwargs,
    )


def tiny_config(
    family: str, tokenizer: PreTrainedTokenizerFast, max_positions: int = 128, **extra: Any
) -> PreTrainedConfig:
    """The family's config at tiny size, sized and given special token ids after `tokenizer`."""
    spec = SPEC[family]
    return AutoConfig.for_model(
        spec.model_type,
        vocab_size=len(tokenizer),
        max_position_embeddings=max_positions + spec.position_offset,
        **{key: getattr(tokenizer, attribute) for key, attribute in spec.config_ids.items()},
        **spec.config_kwargs,
        **extra,
    )


def build_base(family: str, folder: Path, texts: list[str], max_positions: int = 128, seed: int = 0) -> Path:
    """Save a tiny random base checkpoint (model without head, and tokenizer) of `family` in `folder`."""
    tokenizer = build_tokenizer(family, texts, max_positions)
    torch.manual_seed(seed)
    AutoModel.from_config(tiny_config(family, tokenizer, max_positions)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_with_head(folder: Path, texts: list[str], num_labels: int = 5) -> Path:
    """Save a tiny cased BERT that already has a token-classification head of `num_labels` outputs, like a NER model.

    Its labels are the default names `LABEL_0`, `LABEL_1`, ...
    """
    tokenizer = build_tokenizer("bert-cased", texts)
    torch.manual_seed(0)
    BertForTokenClassification(tiny_config("bert-cased", tokenizer, num_labels=num_labels)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
