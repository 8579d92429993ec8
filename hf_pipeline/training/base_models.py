"""The model to fine-tune: a base encoder from the Hub or a folder (any family AutoModelForTokenClassification knows),
or the tiny preset's small BERT and WordPiece tokenizer trained from scratch, offline."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    BertTokenizerFast,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from hf_pipeline.hub import UnusableError, check_usable
from hf_pipeline.training.arguments import ModelArguments, NerTrainingArguments
from hf_pipeline.training.schemes import Encoding

logger = logging.getLogger("train")
BASE_MODEL_ADVICE = (
    "or point --model_name_or_path at a local folder holding config.json, the tokenizer and the weights (e.g. one "
    "saved with `save_pretrained`), or run the offline default: python train.py --preset tiny."
)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(
    texts: list[str], vocab_size: int = 4000, model_max_length: int = 128, uncased: bool = False
) -> BertTokenizerFast:
    """A WordPiece tokenizer trained on ``texts`` (the tiny preset's: cased and accent-keeping; ``uncased``
    lowercases and strips accents, as all-MiniLM-L6-v2 or bert-base-uncased do)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=uncased, strip_accents=uncased)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", tokenizer.token_to_id("[SEP]")), ("[CLS]", tokenizer.token_to_id("[CLS]"))
    )
    return BertTokenizerFast(
        tokenizer_object=tokenizer, do_lower_case=uncased, strip_accents=uncased, model_max_length=model_max_length
    )


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase, labels: list[str], max_position_embeddings: int = 128, hidden_size: int = 128
) -> BertForTokenClassification:
    """A small BERT token classifier from scratch: the same classes as mBERT, a fraction of the size."""
    return BertForTokenClassification(tiny_config(tokenizer, labels, max_position_embeddings, hidden_size))


def tiny_config(
    tokenizer: PreTrainedTokenizerBase, labels: list[str], max_position_embeddings: int = 128, hidden_size: int = 128
) -> BertConfig:
    """The tiny preset's BERT configuration."""
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=hidden_size * 4,
        max_position_embeddings=max_position_embeddings,
        hidden_dropout_prob=0.1,
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )


def check_model_reachable(name_or_path: str) -> None:
    """Fail within seconds, with what to do, unless the base model is a folder, in the Hub cache, or downloadable
    now (:func:`hf_pipeline.hub.check_usable`)."""
    try:
        check_usable(name_or_path, "model", "--model_name_or_path", advice=BASE_MODEL_ADVICE)
    except UnusableError as error:
        raise SystemExit(str(error)) from None


def base_tokenizer(
    model_args: ModelArguments, dataset: datasets.DatasetDict, max_length: int, training_args: NerTrainingArguments
) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, or (tiny preset) a WordPiece trained on the training texts and kept with the
    checkpoints: a resumed run, and every process of a distributed run, tokenize exactly as the first one did."""
    if model_args.preset != "tiny":
        return pretokenized_input_tokenizer(model_args.model_name_or_path)
    saved = Path(training_args.output_dir) / "checkpoints" / "tokenizer"
    with training_args.main_process_first(desc="training the tiny preset's tokenizer"):
        reuse = model_args.resume or training_args.local_process_index != 0
        if reuse and (saved / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(saved)
        tokenizer = train_wordpiece(list(dataset["train"]["text"]), model_max_length=max_length)
        tokenizer.save_pretrained(saved)
        return tokenizer


def pretokenized_input_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, able to tokenize words (``is_split_into_words``): byte-level BPE tokenizers
    (RoBERTa, GPT-2 style) need ``add_prefix_space=True`` for that, which the bundle then keeps."""
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if getattr(tokenizer, "add_prefix_space", None) is False:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, add_prefix_space=True)
    return tokenizer


def base_model(
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    encoding: Encoding,
    max_length: int,
    shared: bool = False,
) -> PreTrainedModel:
    """The model to fine-tune: one layer's classifier, or (``shared``) one head per tag sequence of ``encoding``."""
    labels = encoding.sequence_labels[0]
    if model_args.preset == "tiny":
        config = tiny_config(tokenizer, labels, max_position_embeddings=max_length)
    else:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
        head_size = config.num_labels if _has_token_classification_head(config) else None
    config.num_labels = len(labels)
    config.id2label, config.label2id = dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}
    if shared:
        encoding.configure(config)
    if model_args.preset == "tiny":
        return BertForTokenClassification(config)
    if head_size is not None and head_size != config.num_labels:
        _say_new_head(model_args.model_name_or_path, head_size, config.num_labels)
    with _quiet_load_report():  # a fresh head is the point here; said above when it replaces another
        return AutoModelForTokenClassification.from_pretrained(
            model_args.model_name_or_path, config=config, ignore_mismatched_sizes=True
        )


@contextlib.contextmanager
def _quiet_load_report() -> Iterator[None]:
    """transformers' load report (pooler unexpected, classifier missing) only at ``--log_level debug``."""
    verbosity = transformers.logging.get_verbosity()
    if verbosity > logging.DEBUG:
        transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)


def _has_token_classification_head(config: PretrainedConfig) -> bool:
    return any(name.endswith("ForTokenClassification") for name in getattr(config, "architectures", None) or [])


@functools.cache
def _say_new_head(base: str, old: int, new: int) -> None:
    """Said once per base and size, however many layers start from it."""
    logger.info(
        "%s has a token-classification head of %d labels; this run needs %d: the head starts afresh "
        "(the encoder's weights are kept).",
        base,
        old,
        new,
    )
