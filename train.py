"""Fine-tune one token classifier per layer, save the bundle, evaluate it with the task's scorer.

    python train.py --preset tiny --output_dir runs/tiny                      # offline, a few minutes on CPU
    python train.py --dataset DIR_OR_HUB_ID --output_dir runs/mbert          # bert-base-multilingual-cased
    python train.py --brat_dir CORPUS --types auto --output_dir runs/x       # build the dataset on the fly
    python train.py args.json                                                # every argument from one JSON file
    torchrun --nproc_per_node 4 train.py --dataset DIR --output_dir runs/ddp   # data parallel on 4 GPUs

Writes ``OUT/model/`` (the bundle and its card), ``OUT/eval_results.json``, ``OUT/predictions/<split>/*.ann``
and per-layer checkpoints under ``OUT/checkpoints/layer_<k>/``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from seqeval.metrics import f1_score, precision_score, recall_score
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertConfig,
    BertForTokenClassification,
    BertTokenizerFast,
    DataCollatorForTokenClassification,
    HfArgumentParser,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

import hf_dataset
from hf_dataset.brat import Entity, write_ann
from hf_dataset.builder import oracle_f1
from hf_dataset.layers import decode, spans_to_entities
from hf_pipeline import load_pipeline, save_bundle
from hf_pipeline.hub import hub_unreachable
from hf_pipeline.model_card import entity_types, write_model_card
from hf_pipeline.radiology_ner import window_starts
from hf_pipeline.scoring import score

logger = logging.getLogger("train")
DEFAULT_MODEL = "bert-base-multilingual-cased"
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# The embedded default: trains from scratch, offline, in a few minutes on two CPU cores.
TINY_PRESET: dict[str, Any] = {
    "max_seq_length": 128,
    "doc_stride": 32,
    "num_train_epochs": 150,
    "learning_rate": 2e-3,
    "warmup_ratio": 0.05,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 16,
    "weight_decay": 0.0,
    "logging_steps": 50,
    # Eight validation reports are too few to pick a checkpoint by: keep the last one (it fits train best).
    "load_best_model_at_end": False,
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
    max_seq_length: int = field(
        default=512, metadata={"help": "Window length in subword tokens, special tokens included."}
    )
    doc_stride: int = field(
        default=128, metadata={"help": "Tokens shared by consecutive windows of a long report (no truncation)."}
    )

    def __post_init__(self) -> None:
        if self.dataset and self.brat_dir:
            raise ValueError("Give --dataset or --brat_dir, not both.")
        if not 0 <= self.doc_stride < self.max_seq_length - 2:
            raise ValueError(f"--doc_stride must be between 0 and max_seq_length - 3 ({self.max_seq_length - 3}).")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=DEFAULT_MODEL,
        metadata={"help": "Base model: a Hub id or a local folder with config, tokenizer, weights."},
    )
    layers: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Layers to train; 1 is required."})
    preset: str | None = field(
        default=None, metadata={"help": "'tiny': a small BERT and WordPiece tokenizer trained from scratch, offline."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Resume each layer from its last checkpoint; skip done layers."}
    )

    def __post_init__(self) -> None:
        if self.preset not in (None, "tiny"):
            raise ValueError(f"--preset must be 'tiny', got {self.preset!r}.")
        if 1 not in self.layers or len(set(self.layers)) != len(self.layers) or min(self.layers) < 1:
            raise ValueError(f"--layers must be distinct positive numbers including 1; got {self.layers}.")
        self.layers = sorted(self.layers)


@dataclass
class NerTrainingArguments(TrainingArguments):
    """TrainingArguments with defaults suited to mBERT on a few hundred reports."""

    output_dir: str = field(default="runs/radiology-ner", metadata={"help": "Where the run writes everything."})
    learning_rate: float = 5e-5
    num_train_epochs: float = 10
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eval_strategy: str = "epoch"
    save_strategy: str = "epoch"
    save_total_limit: int | None = 1
    load_best_model_at_end: bool = True
    metric_for_best_model: str = "f1"
    logging_steps: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            self.use_cpu = True  # torchrun on CPUs: data parallel over gloo, not one confused process per rank
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
    dataset, _ = hf_dataset.build(args.brat_dir, args.types)
    return dataset


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


def windowed_features(
    words: list[str], word_labels: list[int], tokenizer: PreTrainedTokenizerBase, max_length: int, stride: int
) -> list[dict[str, list[int]]]:
    """One report as overlapping windows of at most ``max_length`` tokens; nothing is truncated."""
    encoding = tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
    ids, labels = encoding["input_ids"], align_labels(encoding.word_ids(), word_labels)
    window = max_length - 2
    features = []
    for start in window_starts(len(ids), window, overlap=stride):
        input_ids = [tokenizer.cls_token_id, *ids[start : start + window], tokenizer.sep_token_id]
        features.append(
            {
                "input_ids": input_ids,
                "attention_mask": [1] * len(input_ids),
                "labels": [-100, *labels[start : start + window], -100],
            }
        )
    return features


def layer_dataset(
    split: datasets.Dataset, layer: int, tokenizer: PreTrainedTokenizerBase, args: DataArguments
) -> datasets.Dataset:
    rows = [
        feature
        for example in split
        for feature in windowed_features(
            example["tokens"], example[f"ner_tags_{layer}"], tokenizer, args.max_seq_length, args.doc_stride
        )
    ]
    return datasets.Dataset.from_list(rows)


# -------------------------------------------------------------------------------------------- models


def train_wordpiece(texts: list[str], vocab_size: int = 4000, model_max_length: int = 128) -> BertTokenizerFast:
    """A cased, accent-keeping WordPiece tokenizer trained on ``texts`` (the tiny preset's tokenizer)."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(
        texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    )
    tokenizer.post_processor = processors.BertProcessing(
        ("[SEP]", tokenizer.token_to_id("[SEP]")), ("[CLS]", tokenizer.token_to_id("[CLS]"))
    )
    return BertTokenizerFast(
        tokenizer_object=tokenizer, do_lower_case=False, strip_accents=False, model_max_length=model_max_length
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
    model_args: ModelArguments, tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int
) -> PreTrainedModel:
    if model_args.preset == "tiny":
        return build_tiny_model(tokenizer, labels, max_position_embeddings=max_length)
    return AutoModelForTokenClassification.from_pretrained(
        model_args.model_name_or_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: index for index, label in enumerate(labels)},
    )


# ------------------------------------------------------------------------------------------ training


def seqeval_metrics(labels: list[str]):
    """compute_metrics for the Trainer: entity-level seqeval P/R/F1 over first subwords."""

    def compute(prediction) -> dict[str, float]:
        predicted = np.argmax(prediction.predictions, axis=-1)
        gold_rows, predicted_rows = [], []
        for gold_ids, predicted_ids in zip(prediction.label_ids, predicted):
            keep = gold_ids != -100
            gold_rows.append([labels[i] for i in gold_ids[keep]])
            predicted_rows.append([labels[i] for i in predicted_ids[keep]])
        return {
            "precision": precision_score(gold_rows, predicted_rows, zero_division=0),
            "recall": recall_score(gold_rows, predicted_rows, zero_division=0),
            "f1": f1_score(gold_rows, predicted_rows, zero_division=0),
        }

    return compute


def train_layer(
    layer: int,
    dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: NerTrainingArguments,
) -> PreTrainedModel:
    """Fine-tune (or, with --resume, reload or continue) the token classifier of one layer."""
    out = Path(training_args.output_dir)
    final = out / "checkpoints" / f"layer_{layer}" / "final"
    if model_args.resume and (final / "config.json").is_file():
        logger.info("layer %d: already trained, loading %s", layer, final)
        return AutoModelForTokenClassification.from_pretrained(final)
    labels = label_list(dataset)
    has_validation = "validation" in dataset
    args = copy.copy(training_args)  # a shallow copy keeps the distributed state that was set up once
    args.output_dir = str(final.parent)
    if not has_validation:
        args.eval_strategy, args.load_best_model_at_end = IntervalStrategy.NO, False
    trainer = Trainer(
        model=base_model(model_args, tokenizer, labels, data_args.max_seq_length),
        args=args,
        train_dataset=layer_dataset(dataset["train"], layer, tokenizer, data_args),
        eval_dataset=layer_dataset(dataset["validation"], layer, tokenizer, data_args) if has_validation else None,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer),
        compute_metrics=seqeval_metrics(labels),
    )
    checkpoint = get_last_checkpoint(args.output_dir) if model_args.resume and os.path.isdir(args.output_dir) else None
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.is_world_process_zero():
        trainer.save_model(str(final))
    return trainer.model


# -------------------------------------------------------------------------------------------- evaluation


def gold_entities(split: datasets.Dataset) -> dict[str, list[Entity]]:
    return {
        row["id"]: [Entity(e["type"], tuple(map(tuple, e["fragments"])), e["id"], e["text"]) for e in row["entities"]]
        for row in split
    }


def oracle_entities(split: datasets.Dataset, layers: int) -> dict[str, list[Entity]]:
    """decode(encode(gold)): the layered tags of the dataset turned back into entities."""
    names = split.features["ner_tags_1"].feature.names
    oracle = {}
    for row in split:
        tags = [[names[i] for i in row[f"ner_tags_{k}"]] for k in range(1, layers + 1)]
        oracle[row["id"]] = spans_to_entities(decode(tags), [tuple(w) for w in row["token_offsets"]])
    return oracle


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
            predicted[row["id"]] = [Entity(e["entity_group"], ((e["start"], e["end"]),)) for e in entities]
            path = folder / f"{row['id']}.ann"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_ann(path, row["text"], predicted[row["id"]])
        gold = gold_entities(split)
        types = entity_types(split.features["ner_tags_1"].feature.names)
        result = score(gold, predicted, types).to_dict()
        result["oracle"] = oracle_f1(gold, oracle_entities(split, layers), types)
        results[name] = result
        logger.info("%s: exact F1 %.4f, lenient F1 %.4f", name, result["exact"]["f1"], result["lenient"]["f1"])
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    data_args, model_args, training_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if model_args.preset is None:
        check_model_reachable(model_args.model_name_or_path)
    dataset = load_data(data_args)
    tokenizer = base_tokenizer(model_args, dataset, data_args.max_seq_length, training_args)
    layer_count = tag_layers(dataset)
    if max(model_args.layers) > layer_count:
        raise SystemExit(f"--layers {model_args.layers}: the dataset has only {layer_count} tag layers.")
    models = [train_layer(k, dataset, tokenizer, data_args, model_args, training_args) for k in model_args.layers]
    results = (
        release(models, tokenizer, dataset, data_args, model_args, training_args) if training_args.should_save else {}
    )
    if torch.distributed.is_initialized():  # the other processes wait for the evaluation, then all leave together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def release(
    models: list[PreTrainedModel],
    tokenizer: PreTrainedTokenizerBase,
    dataset: datasets.DatasetDict,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: NerTrainingArguments,
) -> dict[str, Any]:
    """Save the bundle, evaluate it on every split, write eval_results.json and the model card."""
    out = Path(training_args.output_dir)
    bundle = save_bundle(models, tokenizer, out / "model", layers=model_args.layers)
    results = evaluate_bundle(bundle, dataset, out, training_args.per_device_eval_batch_size)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_model_card(
        bundle,
        labels=label_list(dataset),
        base_model=None if model_args.preset == "tiny" else model_args.model_name_or_path,
        dataset=data_args.dataset,
        training=training_summary(data_args, model_args, training_args),
        results=results,
    )
    summary = {name: {"exact_f1": r["exact"]["f1"], "lenient_f1": r["lenient"]["f1"]} for name, r in results.items()}
    print(json.dumps(summary))
    return results


def training_summary(
    data_args: DataArguments, model_args: ModelArguments, args: NerTrainingArguments
) -> dict[str, Any]:
    return {
        "preset": model_args.preset,
        "layers": model_args.layers,
        "max_seq_length": data_args.max_seq_length,
        "doc_stride": data_args.doc_stride,
        "learning_rate": args.learning_rate,
        "num_train_epochs": args.num_train_epochs,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "weight_decay": args.weight_decay,
        "warmup_ratio": args.warmup_ratio,
        "seed": args.seed,
    }


if __name__ == "__main__":
    main()
