"""Fine-tune the layered token classifiers, save the bundle, evaluate it with the task's scorer.

Two architectures: ``per_layer`` (default, the paper's method: one encoder fine-tuned per layer) and ``shared``
(one encoder fine-tuned once, one classifier head per layer, the layers' token losses summed).

    python train.py --preset tiny --output_dir runs/tiny                      # offline, a few minutes on CPU
    python train.py --dataset DIR_OR_HUB_ID --output_dir runs/mbert          # bert-base-multilingual-cased
    python train.py --brat_dir CORPUS --types auto --output_dir runs/x       # build the dataset on the fly
    python train.py args.json                                                # every argument from one JSON file
    torchrun --nproc_per_node 4 train.py --dataset DIR --output_dir runs/ddp   # data parallel on 4 GPUs

Writes ``OUT/model/`` (the bundle and its card), ``OUT/eval_results.json``, ``OUT/predictions/<split>/*.ann``
``OUT/train.log`` (every Trainer log line) and checkpoints under ``OUT/checkpoints/layer_<k>/`` (``shared``:
``OUT/checkpoints/shared/``); the checkpoint kept is the one with the best validation exact F1 (see
:func:`entity_metrics`).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tqdm.auto import tqdm
from transformers import (
    AutoConfig,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    BertTokenizerFast,
    EvalPrediction,
    HfArgumentParser,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

import hf_dataset
from hf_dataset.brat import Entity, write_ann
from hf_dataset.builder import oracle_f1
from hf_dataset.layers import decode, spans_to_entities
from hf_pipeline import load_pipeline, save_bundle
from hf_pipeline.bundle import make_shared_config
from hf_pipeline.hub import hub_unreachable
from hf_pipeline.model_card import entity_types, plain_name, write_model_card
from hf_pipeline.radiology_ner import ARCHITECTURES
from hf_pipeline.scoring import score
from hf_pipeline.words import decode_bio, locate_words, window_starts

logger = logging.getLogger("train")
DEFAULT_MODEL = "bert-base-multilingual-cased"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SAMPLE_LICENSE = "apache-2.0"  # the bundled synthetic sample was written for this project
UNKNOWN_LICENSE = "unknown"  # never a permissive default for a user's corpus

# The embedded default: trains from scratch, offline, in a few minutes on two CPU cores.
TINY_PRESET: dict[str, Any] = {
    "max_seq_length": 128,
    "doc_stride": 32,
    "num_train_epochs": 150,
    "learning_rate": 2e-3,
    "warmup_steps": 0.05,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "weight_decay": 0.0,
    "logging_steps": 50,
    # Eight validation reports are too few to pick a checkpoint by: keep the last one (it fits train best).
    "load_best_model_at_end": False,
    "eval_strategy": "no",
}


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "Folder written by `python -m hf_dataset build`, or a Hub dataset id."},
    )
    brat_dir: str | None = field(
        default=None, metadata={"help": "Build the dataset on the fly from this brat folder instead of --dataset."}
    )
    types: str | None = field(
        default=None, metadata={"help": "With --brat_dir: comma-separated types or 'auto' (default: SpRadIE)."}
    )
    max_layers: int = field(default=3, metadata={"help": "With --brat_dir: number of tag layers."})
    discontinuous: str = field(
        default="hull", metadata={"help": "With --brat_dir: 'hull' or 'split' for discontinuous entities."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "With --brat_dir: skip (and itemise) invalid annotations instead of failing."}
    )
    max_seq_length: int = field(
        default=512,
        metadata={"help": "Window length in subword tokens, special tokens included; the bundle predicts with it."},
    )
    doc_stride: int = field(
        default=128, metadata={"help": "Tokens shared by consecutive windows of a long report (no truncation)."}
    )

    def __post_init__(self) -> None:
        if self.dataset and self.brat_dir:
            raise ValueError("Give --dataset or --brat_dir, not both.")
        if not 0 <= self.doc_stride < self.max_seq_length - 2:
            raise ValueError(f"--doc_stride must be between 0 and max_seq_length - 3 ({self.max_seq_length - 3}).")
        if self.discontinuous not in ("hull", "split"):
            raise ValueError(f"--discontinuous must be 'hull' or 'split', got {self.discontinuous!r}.")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Base model: a Hub id or a local folder with config, tokenizer, weights."},
    )
    architecture: str = field(
        default="per_layer",
        metadata={"help": "'per_layer' (an encoder per layer, the paper) or 'shared' (one encoder, a head per layer)."},
    )
    layers: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Layers to train; 1 is required."})
    preset: str | None = field(
        default=None, metadata={"help": "'tiny': a small BERT and WordPiece tokenizer trained from scratch, offline."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Resume each layer from its last checkpoint; skip done layers."}
    )
    license: str | None = field(
        default=None,
        metadata={"help": "License of the weights for the model card (default: the dataset card's license)."},
    )

    def __post_init__(self) -> None:
        if self.preset not in (None, "tiny"):
            raise ValueError(f"--preset must be 'tiny', got {self.preset!r}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if 1 not in self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 1:
            raise ValueError(f"--layers must be distinct positive numbers including 1; got {self.layers}.")
        self.layers = sorted(self.layers)


@dataclass
class NerTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults suited to mBERT on a few hundred reports.

    Every field here is a TrainingArguments field (tests check it), so each one reaches the Trainer. The
    warm-up is ``warmup_steps``: below 1 it is the fraction of all steps (transformers 5 has no warmup_ratio).
    """

    output_dir: str = field(default="runs/radiology-ner", metadata={"help": "Where the run writes everything."})
    learning_rate: float = 5e-5
    num_train_epochs: float = 10
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    weight_decay: float = 0.01
    warmup_steps: float = 0.1
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_total_limit: int | None = 1
    load_best_model_at_end: bool = True
    metric_for_best_model: str = "exact_f1"
    logging_steps: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            self.use_cpu = True  # torchrun on CPUs: data parallel over gloo, not one confused process per rank
        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; torch warns for every dataloader
        if self.eval_strategy in ("no", IntervalStrategy.NO):
            self.load_best_model_at_end = False
        super().__post_init__()


def parse_arguments(argv: list[str]) -> tuple[DataArguments, ModelArguments, NerTrainingArguments]:
    """Command line or one JSON file; a preset fills in defaults that explicit arguments override."""
    parser = HfArgumentParser((DataArguments, ModelArguments, NerTrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        preset = TINY_PRESET if values.get("preset") == "tiny" else {}
        return parser.parse_dict({**preset, **values})
    preset = TINY_PRESET if _preset_of(argv) == "tiny" else {}
    defaults = [token for key, value in preset.items() for token in (f"--{key}", str(value))]
    return parser.parse_args_into_dataclasses(defaults + argv)


def _preset_of(argv: list[str]) -> str | None:
    for index, token in enumerate(argv):
        if token == "--preset" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith("--preset="):
            return token.split("=", 1)[1]
    return None


# ---------------------------------------------------------------------------------------------- data


def load_data(args: DataArguments) -> datasets.DatasetDict:
    """The layered dataset: built from --brat_dir, loaded from --dataset, or built from the bundled sample."""
    if args.dataset:
        try:
            return datasets.load_dataset(args.dataset)
        except (ConnectionError, OSError, ValueError) as error:
            raise SystemExit(
                f"Cannot load the dataset {args.dataset!r}: {error}\nGive a folder written by "
                "`python -m hf_dataset build`, or --brat_dir to build one on the fly."
            ) from None
    try:
        dataset, _ = hf_dataset.build(args.brat_dir, args.types, args.max_layers, args.discontinuous, args.skip_invalid)
    except (hf_dataset.BratError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    return dataset


def dataset_license(args: DataArguments) -> str:
    """The license in the dataset card (``README.md`` of a dataset folder or Hub repo); the bundled sample's own
    license when training on it; ``unknown`` for a brat folder or a card without one."""
    if not args.dataset:
        return SAMPLE_LICENSE if not args.brat_dir else UNKNOWN_LICENSE
    from huggingface_hub import DatasetCard

    readme = Path(args.dataset) / "README.md"
    try:
        card = DatasetCard.load(readme if readme.is_file() else args.dataset)
    except Exception:  # noqa: BLE001 - any failure to read a card means the license is not known
        return UNKNOWN_LICENSE
    return card.data.get("license") or UNKNOWN_LICENSE


def label_list(dataset: datasets.DatasetDict) -> list[str]:
    return dataset["train"].features["ner_tags_1"].feature.names


def tag_layers(dataset: datasets.DatasetDict) -> int:
    """How many ``ner_tags_<k>`` columns the dataset has."""
    return sum(1 for name in dataset["train"].features if name.startswith("ner_tags_"))


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """A label on the first subword of each word, -100 on continuation subwords and special tokens.

    >>> align_labels([None, 0, 0, 1, None], [3, 5])
    [-100, 3, -100, 5, -100]
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(-100 if word is None or word == previous else word_labels[word])
        previous = word
    return labels


@dataclass
class DocumentWindows:
    """How one report was cut into windows: what evaluation needs to put window predictions back on words."""

    word_ids: list[int | None]
    starts: list[int]
    window: int


def windowed_features(
    words: list[str],
    layer_labels: Sequence[list[int]],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    stride: int,
) -> tuple[list[dict[str, list]], DocumentWindows]:
    """One report as overlapping windows of at most ``max_length`` tokens; nothing is truncated.

    ``layer_labels`` holds one word-label list per trained layer; each token's ``labels`` entry lists its
    label in every layer (-100 on special tokens and continuation subwords).
    """
    encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
    ids, word_ids = encoding["input_ids"], encoding.word_ids()
    labels = list(zip(*(align_labels(word_ids, word_labels) for word_labels in layer_labels)))
    window = max_length - 2
    starts = window_starts(len(ids), window, overlap=stride)
    edge = [(-100,) * len(layer_labels)]
    features = []
    for start in starts:
        input_ids = [tokenizer.cls_token_id, *ids[start : start + window], tokenizer.sep_token_id]
        features.append(
            {
                "input_ids": input_ids,
                "attention_mask": [1] * len(input_ids),
                "labels": [list(row) for row in edge + labels[start : start + window] + edge],
            }
        )
    return features, DocumentWindows(word_ids, starts, window)


def windowed_split(
    split: datasets.Dataset, layers: Sequence[int], tokenizer: PreTrainedTokenizerBase, args: DataArguments
) -> tuple[datasets.Dataset, list[DocumentWindows]]:
    """Every report of a split as windows labelled for ``layers``, and how each report was cut."""
    rows, documents = [], []
    for example in split:
        features, windows = windowed_features(
            example["tokens"],
            [example[f"ner_tags_{layer}"] for layer in layers],
            tokenizer,
            args.max_seq_length,
            args.doc_stride,
        )
        rows += features
        documents.append(windows)
    return datasets.Dataset.from_list(rows), documents


class LayeredCollator:
    """Pads windows and their ``[token, layer]`` labels (with -100) into one batch."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        labels = [feature["labels"] for feature in features]
        inputs = [{k: v for k, v in feature.items() if k != "labels"} for feature in features]
        batch = self.tokenizer.pad(inputs, return_tensors="pt")
        padded = torch.full((len(labels), batch["input_ids"].shape[1], len(labels[0][0])), -100, dtype=torch.long)
        for row, rows in enumerate(labels):
            padded[row, : len(rows)] = torch.tensor(rows, dtype=torch.long)
        batch["labels"] = padded
        return batch


def layered_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """Sum over layers of each layer's mean token cross-entropy. The classifier's outputs are ``[layer, label]``
    blocks; ``labels`` is ``[batch, token, layer]`` (one layer: the stock token-classification loss)."""
    logits = outputs.logits
    layers = labels.shape[-1]
    per_layer = logits.view(*logits.shape[:2], layers, -1)
    return sum(
        F.cross_entropy(per_layer[:, :, k].reshape(-1, per_layer.shape[-1]), labels[:, :, k].reshape(-1))
        for k in range(layers)
    )


# -------------------------------------------------------------------------------------------- models


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
    config = BertConfig(
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
    return BertForTokenClassification(config)


def check_model_reachable(name_or_path: str) -> None:
    """Fail within seconds, with what to do, when a Hub model is neither cached nor reachable."""
    if os.path.isdir(name_or_path):
        return
    if os.sep in name_or_path or name_or_path.startswith("."):
        raise SystemExit(f"--model_name_or_path {name_or_path}: no such folder.")
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name_or_path, "config.json"), str):
        return
    reason = hub_unreachable(timeout=3)
    if reason:
        raise SystemExit(
            f"Cannot download {name_or_path!r}: it is not cached and the Hub cannot be used ({reason}).\n"
            "Point --model_name_or_path at a local folder holding config.json, the tokenizer and the weights "
            "(e.g. one saved with `save_pretrained`), or run the offline default: python train.py --preset tiny."
        )


def base_tokenizer(
    model_args: ModelArguments, dataset: datasets.DatasetDict, max_length: int, training_args: NerTrainingArguments
) -> PreTrainedTokenizerBase:
    """The base model's tokenizer, or (tiny preset) a WordPiece trained on the training texts and kept with the
    checkpoints: a resumed run, and every process of a distributed run, tokenize exactly as the first one did."""
    if model_args.preset != "tiny":
        return AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    saved = Path(training_args.output_dir) / "checkpoints" / "tokenizer"
    with training_args.main_process_first(desc="training the tiny preset's tokenizer"):
        reuse = model_args.resume or training_args.local_process_index != 0
        if reuse and (saved / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(saved)
        tokenizer = train_wordpiece(list(dataset["train"]["text"]), model_max_length=max_length)
        tokenizer.save_pretrained(saved)
        return tokenizer


def base_model(
    model_args: ModelArguments,
    tokenizer: PreTrainedTokenizerBase,
    labels: list[str],
    max_length: int,
    shared_layers: Sequence[int] | None = None,
) -> PreTrainedModel:
    """The model to fine-tune: one layer's classifier, or (``shared_layers``) one head per listed layer."""
    if model_args.preset == "tiny":
        model = build_tiny_model(tokenizer, labels, max_position_embeddings=max_length)
        if shared_layers:
            make_shared_config(model.config, labels, shared_layers)
            model = BertForTokenClassification(model.config)
        return model
    config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    config.num_labels = len(labels)
    config.id2label, config.label2id = dict(enumerate(labels)), {label: i for i, label in enumerate(labels)}
    if shared_layers:
        make_shared_config(config, labels, shared_layers)
    return AutoModelForTokenClassification.from_pretrained(model_args.model_name_or_path, config=config)


# ------------------------------------------------------------------------------------------ training


def word_entities(
    label_ids: Sequence[int], words: Sequence[int], offsets: Sequence[Sequence[int]], labels: Sequence[str]
) -> list[Entity]:
    """Entities of one layer from a label id per located word, decoded exactly as the pipeline decodes them."""
    spans = decode_bio([labels[i] for i in label_ids])
    return [Entity(s.type, ((offsets[words[s.first]][0], offsets[words[s.last]][1]),)) for s in spans]


def entity_metrics(
    split: datasets.Dataset, documents: Sequence[DocumentWindows], layers: Sequence[int], labels: list[str]
) -> Callable[[EvalPrediction], dict[str, float]]:
    """compute_metrics for the Trainer: the task's exact and lenient F1 of what the bundle will predict.

    Window predictions are put back on words as the pipeline does (each word from the window where it is
    farthest from an edge), decoded with the pipeline's decoder, and scored with the official scorer against
    the gold entities encoded in the trained layers. ``exact_f1`` picks the checkpoint kept: the figure the
    bundle is judged by, unlike token-level seqeval. Per-layer figures are ``layer_<k>_exact_f1``.
    """
    types = entity_types(labels)
    gold = {layer: layer_gold(split, layer) for layer in layers}

    def compute(prediction: EvalPrediction) -> dict[str, float]:
        predicted_ids = prediction.predictions  # [window, token, layer], argmax of each layer's logits
        predicted: dict[int, dict[str, list[Entity]]] = {layer: {} for layer in layers}
        first_window = 0
        for row, windows in zip(split, documents):
            words, located = locate_words(windows.word_ids, windows.starts, windows.window, offset=1)
            for index, layer in enumerate(layers):
                ids = [int(predicted_ids[first_window + w, p, index]) for w, p in located]
                predicted[layer][row["id"]] = word_entities(ids, words, row["token_offsets"], labels)
            first_window += len(windows.starts)
        metrics = {}
        for layer in layers:
            report = score(gold[layer], predicted[layer], types).to_dict()
            metrics[f"layer_{layer}_exact_f1"] = report["exact"]["f1"]
        every_layer = {doc: [e for k in layers for e in predicted[k][doc]] for doc in predicted[layers[0]]}
        every_gold = {doc: [e for k in layers for e in gold[k][doc]] for doc in gold[layers[0]]}
        report = score(every_gold, every_layer, types).to_dict()
        metrics.update(exact_f1=report["exact"]["f1"], lenient_f1=report["lenient"]["f1"])
        return metrics

    return compute


def argmax_per_layer(layers: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """preprocess_logits_for_metrics: keep each layer's best label id, not the logits."""

    def reduce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.view(*logits.shape[:2], layers, -1).argmax(-1)

    return reduce


class LayerProgress(ProgressCallback):
    """One progress bar per trained model, its validation figures as the bar's postfix, every log line to the
    log file (``OUT/train.log``) instead of the console."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:  # no bar when the console is not a terminal (a log file, CI)
            self.training_bar = tqdm(total=state.max_steps, desc=self.title, dynamic_ncols=True, disable=None)
        self.current_step = 0

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs) -> None:
        pass  # no second bar for the short validation passes

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        logger.debug("%s step %d: %s", self.title, state.global_step, json.dumps(logs))
        if self.training_bar is not None and "eval_exact_f1" in (logs or {}):
            self.training_bar.set_postfix(val_exact_f1=f"{logs['eval_exact_f1']:.3f}")


@dataclass
class TrainedModel:
    """A fine-tuned model and what its run really did (for the model card)."""

    model: PreTrainedModel
    layers: list[int]
    steps: int = 0
    epochs: float = 0.0
    warmup_steps: int = 0
    best_checkpoint: str | None = None
    best_validation_exact_f1: float | None = None


def train_model(
    layers: list[int],
    dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: NerTrainingArguments,
) -> TrainedModel:
    """Fine-tune (or, with --resume, reload or continue) the classifier of one layer, or the shared model of
    all ``layers`` (``--architecture shared``)."""
    shared = model_args.architecture == "shared"
    name = "shared" if shared else f"layer_{layers[0]}"
    title = f"layers {', '.join(map(str, layers))} (shared encoder)" if shared else f"layer {layers[0]}"
    out = Path(training_args.output_dir)
    final = out / "checkpoints" / name / "final"
    if model_args.resume and (final / "config.json").is_file():
        logger.info("%s: already trained, loading %s", title, final)
        return TrainedModel(AutoModelForTokenClassification.from_pretrained(final), layers, **_run_record(final))
    logger.info("training %s", title)
    labels = label_list(dataset)
    args = copy.copy(training_args)  # a shallow copy keeps the distributed state that was set up once
    args.output_dir = str(final.parent)
    if "validation" not in dataset:
        args.eval_strategy, args.load_best_model_at_end = IntervalStrategy.NO, False
    train_split, _ = windowed_split(dataset["train"], layers, tokenizer, data_args)
    evaluation = None
    if args.eval_strategy != IntervalStrategy.NO:
        eval_split, documents = windowed_split(dataset["validation"], layers, tokenizer, data_args)
        evaluation = (eval_split, entity_metrics(dataset["validation"], documents, layers, labels))
    trainer = Trainer(
        model=base_model(model_args, tokenizer, labels, data_args.max_seq_length, layers if shared else None),
        args=args,
        train_dataset=train_split,
        eval_dataset=evaluation[0] if evaluation else None,
        processing_class=tokenizer,
        data_collator=LayeredCollator(tokenizer),
        compute_loss_func=layered_loss,
        compute_metrics=evaluation[1] if evaluation else None,
        preprocess_logits_for_metrics=argmax_per_layer(len(layers)),
    )
    if not args.disable_tqdm:
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(LayerProgress(title))
    checkpoint = get_last_checkpoint(args.output_dir) if model_args.resume and os.path.isdir(args.output_dir) else None
    trainer.train(resume_from_checkpoint=checkpoint)
    state = trainer.state
    record = {
        "steps": state.global_step,
        "epochs": round(float(state.epoch or 0), 2),
        "warmup_steps": args.get_warmup_steps(state.max_steps),
        "best_checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
        "best_validation_exact_f1": state.best_metric if args.load_best_model_at_end else None,
    }
    if trainer.is_world_process_zero():
        trainer.save_model(str(final))
        (final / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TrainedModel(trainer.model, layers, **record)


def _run_record(final: Path) -> dict[str, Any]:
    path = final / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _entity(entity: dict[str, Any]) -> Entity:
    return Entity(entity["type"], tuple(map(tuple, entity["fragments"])), entity["id"], entity["text"])


def layer_gold(split: datasets.Dataset, layer: int) -> dict[str, list[Entity]]:
    """Per report, the gold entities the dataset encoded in ``layer``."""
    return {row["id"]: [_entity(e) for e in row["entities"] if e["layer"] == layer] for row in split}


# -------------------------------------------------------------------------------------------- evaluation


def gold_entities(split: datasets.Dataset) -> dict[str, list[Entity]]:
    return {row["id"]: [_entity(e) for e in row["entities"]] for row in split}


def oracle_entities(split: datasets.Dataset, layers: int) -> dict[str, list[Entity]]:
    """decode(encode(gold)): the layered tags of the dataset turned back into entities."""
    names = split.features["ner_tags_1"].feature.names
    oracle = {}
    for row in split:
        tags = [[names[i] for i in row[f"ner_tags_{k}"]] for k in range(1, layers + 1)]
        oracle[row["id"]] = spans_to_entities(decode(tags), [tuple(w) for w in row["token_offsets"]])
    return oracle


def per_layer_scores(
    split: datasets.Dataset, outputs: Sequence[list[dict]], layers: Sequence[int], types: list[str]
) -> dict[str, Any]:
    """Each layer's predictions scored against the gold entities the dataset encoded in that layer."""
    figures = {}
    for layer in layers:
        gold = layer_gold(split, layer)
        predicted = {
            row["id"]: [Entity.from_prediction(e) for e in entities if e["layer"] == layer]
            for row, entities in zip(split, outputs)
        }
        report = score(gold, predicted, types).to_dict()
        figures[str(layer)] = {key: report[key] for key in ("exact", "lenient", "gold", "predicted")}
    return figures


def evaluate_bundle(bundle: Path, dataset: datasets.DatasetDict, out: Path, batch_size: int) -> dict[str, Any]:
    """Predict every split with the pipeline, write brat predictions, and score them with the task's scorer."""
    recognizer = load_pipeline(bundle, device=-1 if not torch.cuda.is_available() else 0)
    layers = tag_layers(dataset)
    results = {}
    for name, split in dataset.items():
        folder = out / "predictions" / name
        predicted = {}
        outputs = recognizer(list(split["text"]), batch_size=batch_size)
        for row, entities in zip(split, outputs):
            predicted[row["id"]] = [Entity.from_prediction(e) for e in entities]
            path = folder / f"{row['id']}.ann"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_ann(path, row["text"], predicted[row["id"]])
        gold = gold_entities(split)
        types = entity_types(split.features["ner_tags_1"].feature.names)
        result = score(gold, predicted, types).to_dict()
        result["oracle"] = oracle_f1(gold, oracle_entities(split, layers), types)
        result["per_layer"] = per_layer_scores(split, outputs, recognizer.layer_numbers, types)
        results[name] = result
        logger.info("%s: exact F1 %.4f, lenient F1 %.4f", name, result["exact"]["f1"], result["lenient"]["f1"])
    return results


def configure_logging(out: Path, is_main: bool) -> None:
    """Console: one line per step of the run (our logger at INFO); ``OUT/train.log``: everything, Trainer logs
    included. ``--log_level debug`` (a TrainingArguments option) also shows the Trainer's lines on the console."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if not is_main:
        return
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logging.getLogger().handlers[0].setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    data_args, model_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    configure_logging(Path(training_args.output_dir), training_args.process_index == 0)
    if training_args.get_process_log_level() <= logging.DEBUG:
        logging.getLogger().handlers[0].setLevel(logging.DEBUG)
    else:  # no "Writing model shards" / "Loading weights" / "Generating split" bar for every checkpoint and layer
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()
    if model_args.preset is None:
        check_model_reachable(model_args.model_name_or_path)
    dataset = load_data(data_args)
    tokenizer = base_tokenizer(model_args, dataset, data_args.max_seq_length, training_args)
    layer_count = tag_layers(dataset)
    if max(model_args.layers) > layer_count:
        raise SystemExit(f"--layers {model_args.layers}: the dataset has only {layer_count} tag layers.")
    logger.info(
        "Validation figures during training are the task's exact F1 of the layers being trained (the checkpoint "
        "kept is the best); the final table scores the whole bundle, all layers together, on every split."
    )
    groups = [model_args.layers] if model_args.architecture == "shared" else [[k] for k in model_args.layers]
    trained = [train_model(group, dataset, tokenizer, data_args, model_args, training_args) for group in groups]
    results = (
        release(trained, tokenizer, dataset, data_args, model_args, training_args) if training_args.should_save else {}
    )
    if torch.distributed.is_initialized():  # the other processes wait for the evaluation, then all leave together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def release(
    trained: list[TrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.DatasetDict,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: NerTrainingArguments,
) -> dict[str, Any]:
    """Save the bundle, evaluate it on every split, write eval_results.json and the model card."""
    out = Path(training_args.output_dir)
    models = [t.model for t in trained]
    bundle = save_bundle(models, tokenizer, out / "model", layers=model_args.layers, window=data_args.max_seq_length)
    results = evaluate_bundle(bundle, dataset, out, training_args.per_device_eval_batch_size)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_model_card(
        bundle,
        labels=label_list(dataset),
        base_model=None if model_args.preset == "tiny" else model_args.model_name_or_path,
        dataset=data_args.dataset or (plain_name(data_args.brat_dir) if data_args.brat_dir else None),
        training=training_summary(trained, data_args, model_args, training_args),
        results=results,
        license=model_args.license or dataset_license(data_args),
        architecture=model_args.architecture,
    )
    print(results_table(results))
    return results


def results_table(results: dict[str, Any]) -> str:
    """The final figures, one row per split: the bundle's exact / lenient F1, each layer's, and the oracle."""
    layers = sorted({layer for r in results.values() for layer in r.get("per_layer", {})}, key=int)
    header = ["split", "exact F1", "lenient F1", *(f"layer {k} exact / lenient" for k in layers), "oracle exact F1"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for split, r in results.items():
        per_layer = [
            f"{r['per_layer'][k]['exact']['f1']:.4f} / {r['per_layer'][k]['lenient']['f1']:.4f}" for k in layers
        ]
        cells = [split, f"{r['exact']['f1']:.4f}", f"{r['lenient']['f1']:.4f}", *per_layer]
        lines.append("| " + " | ".join(cells + [f"{r['oracle']['exact_f1']:.4f}"]) + " |")
    return "\n".join(lines)


def training_summary(
    trained: list[TrainedModel],
    data_args: DataArguments,
    model_args: ModelArguments,
    args: NerTrainingArguments,
) -> dict[str, Any]:
    """The settings that really ran, for the model card: steps and epochs done, the effective warm-up, the
    window, the architecture and how the checkpoint was chosen."""
    runs = {"+".join(map(str, t.layers)): t for t in trained}

    def each(value: Callable[[TrainedModel], Any]) -> str:
        return ", ".join(f"layer {layers}: {value(t)}" for layers, t in runs.items())

    return {
        "architecture": model_args.architecture,
        "base model": plain_name(model_args.model_name_or_path) if model_args.preset is None else "tiny preset",
        "layers": model_args.layers,
        "window (max_seq_length, tokens)": data_args.max_seq_length,
        "window overlap (doc_stride, tokens)": data_args.doc_stride,
        "learning_rate": args.learning_rate,
        "lr_scheduler_type": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "optimizer steps done": each(lambda t: t.steps),
        "epochs done": each(lambda t: t.epochs),
        "warm-up steps (effective)": each(lambda t: t.warmup_steps),
        "checkpoint kept": each(
            lambda t: (
                f"{t.best_checkpoint} (best validation exact F1 {t.best_validation_exact_f1:.4f})"
                if t.best_validation_exact_f1 is not None
                else "the last"
            )
        ),
    }


if __name__ == "__main__":
    main()
