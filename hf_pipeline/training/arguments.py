"""train.py's options: the data, the model, and TrainingArguments with this project's defaults; the tiny preset;
a one-screen ``--help`` of the project's own options (``--help_all`` lists every TrainingArguments option too)."""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy

from hf_pipeline.radiology_ner import ARCHITECTURES, DECODERS, SCHEMES
from hf_pipeline.spans import SCORER_WEIGHTS
from hf_pipeline.training.schemes import SPAN_POSITIVE_WEIGHT, SPAN_SCORER

DEFAULT_MODEL = "bert-base-multilingual-cased"

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
# The TrainingArguments options that ``--help`` shows next to the project's own (every other one still works).
HELP_WIDTH = 100
COMMON_TRAINING_OPTIONS = (
    "output_dir",
    "num_train_epochs",
    "learning_rate",
    "per_device_train_batch_size",
    "warmup_steps",
    "weight_decay",
    "eval_strategy",
    "seed",
)


@dataclass
class DataArguments:
    dataset: str | None = field(
        default=None,
        metadata={"help": "Folder written by `python -m hf_dataset build`, or a Hub dataset id."},
    )
    brat_dir: str | None = field(
        default=None, metadata={"help": "Build the dataset from this brat folder instead of --dataset."}
    )
    types: str | None = field(
        default=None, metadata={"help": "With --brat_dir: comma-separated types or 'auto' (default: SpRadIE)."}
    )
    max_layers: int = field(default=3, metadata={"help": "With --brat_dir: number of tag layers."})
    discontinuous: str = field(
        default="hull", metadata={"help": "With --brat_dir: 'hull' or 'split' for discontinuous entities."}
    )
    skip_invalid: bool = field(
        default=False, metadata={"help": "With --brat_dir: skip (and list) invalid annotations."}
    )
    max_seq_length: int = field(
        default=512,
        metadata={"help": "Window length in subword tokens, special tokens included; the bundle predicts with it."},
    )
    doc_stride: int = field(default=128, metadata={"help": "Tokens shared by consecutive training windows."})

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
        metadata={"help": "Base model: a Hub id or a local folder with config, tokenizer, weights (any encoder)."},
    )
    architecture: str = field(
        default="per_layer",
        metadata={"help": "'per_layer' (an encoder per layer, the paper) or 'shared' (one encoder, a head per layer)."},
    )
    decoder: str = field(
        default="softmax",
        metadata={"help": "Head: 'softmax', 'crf' or 'span' (needs shared)."},
    )
    scheme: str | None = field(
        default=None,
        metadata={"help": "'depth' (per nesting layer) or 'type' (per type; needs shared)."},
    )
    max_sublayers: int = field(
        default=3,
        metadata={"help": "--scheme type: the most sequences per type."},
    )
    max_span_words: int | None = field(
        default=None,
        metadata={"help": "--decoder span: the longest span in words (default: from the data)."},
    )
    span_dims: int = field(
        default=128,
        metadata={"help": "--decoder span: start and end vector size."},
    )
    span_scorer: str = field(
        default=SPAN_SCORER,
        metadata={"help": "--decoder span: 'biaffine', 'mlp' or 'mlp_mean'"},
    )
    span_positive_weight: float = field(
        default=SPAN_POSITIVE_WEIGHT,
        metadata={"help": "--decoder span: loss weight of a gold span."},
    )
    head_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the classifier and head (default: --learning_rate)."},
    )
    layers: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "Layers to train; 1 is required."})
    preset: str | None = field(
        default=None, metadata={"help": "'tiny': a small BERT and tokenizer trained from scratch, offline."}
    )
    resume: bool = field(
        default=False, metadata={"help": "Resume each layer from its last checkpoint; skip done layers."}
    )
    license: str | None = field(
        default=None,
        metadata={"help": "License of the weights for the model card (default: the dataset card's license)."},
    )
    int8: bool = field(
        default=False,
        metadata={"help": "Also save int8 ONNX graphs in the bundle, for quantize='int8' (pip install '.[int8]')."},
    )

    def __post_init__(self) -> None:
        if self.preset not in (None, "tiny"):
            raise ValueError(f"--preset must be 'tiny', got {self.preset!r}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"--architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if self.decoder not in DECODERS:
            raise ValueError(f"--decoder must be one of {DECODERS}, got {self.decoder!r}.")
        self.scheme = self.scheme or ("span" if self.decoder == "span" else "depth")
        if self.scheme not in SCHEMES:
            raise ValueError(f"--scheme must be one of {SCHEMES}, got {self.scheme!r}.")
        if (self.scheme == "span") != (self.decoder == "span"):
            raise ValueError(
                f"--scheme {self.scheme} with --decoder {self.decoder}: the span head scores spans, not tag sequences; "
                "it is the span scheme's only head. Use --decoder span alone, or a tag scheme with softmax or crf."
            )
        if self.head_learning_rate is not None and not self.head_learning_rate > 0:
            raise ValueError(f"--head_learning_rate must be above 0, got {self.head_learning_rate}.")
        if self.span_scorer not in SCORER_WEIGHTS:
            raise ValueError(f"--span_scorer must be one of {tuple(SCORER_WEIGHTS)}, got {self.span_scorer!r}.")
        if not self.span_positive_weight > 0:
            raise ValueError(f"--span_positive_weight must be above 0, got {self.span_positive_weight}.")
        if (self.max_span_words is not None and self.max_span_words < 1) or self.span_dims < 1:
            raise ValueError("--max_span_words and --span_dims must be at least 1.")
        if self.scheme != "depth" and self.architecture != "shared":
            raise ValueError(
                f"--scheme {self.scheme} needs --architecture shared: per_layer would fine-tune one encoder per tag "
                "sequence (one per entity type and sub-layer, dozens of encoders on a real corpus)."
            )
        if self.max_sublayers < 1:
            raise ValueError(f"--max_sublayers must be at least 1, got {self.max_sublayers}.")
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


ARGUMENT_CLASSES = (DataArguments, ModelArguments, NerTrainingArguments)


def parse_arguments(argv: list[str]) -> tuple[DataArguments, ModelArguments, NerTrainingArguments]:
    """Command line or one JSON file; a preset fills in defaults that explicit arguments override."""
    if "--help_all" in argv:
        argv = ["--help"]  # HfArgumentParser's full list
    elif "-h" in argv or "--help" in argv:
        print(short_help())
        raise SystemExit(0)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    if len(argv) == 1 and argv[0].endswith(".json"):
        values = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
        preset = TINY_PRESET if values.get("preset") == "tiny" else {}
        return parser.parse_dict({**preset, **values})
    preset = TINY_PRESET if _preset_of(argv) == "tiny" else {}
    defaults = [token for key, value in preset.items() for token in (f"--{key}", str(value))]
    return parser.parse_args_into_dataclasses(defaults + argv)


def short_help() -> str:
    """The project's options and the most used TrainingArguments ones, one line each."""
    lines = [
        "usage: python train.py [OPTIONS] | python train.py args.json",
        "",
        "Fine-tune the layered token classifiers, save the bundle, evaluate it with the task's scorer.",
    ]
    training = {f.name: f for f in fields(NerTrainingArguments)}
    groups = [
        ("data", fields(DataArguments)),
        ("model", fields(ModelArguments)),
        ("training (most used)", [training[name] for name in COMMON_TRAINING_OPTIONS]),
    ]
    for title, group in groups:
        lines += ["", f"{title}:"]
        for option in group:
            text = option.metadata.get("help") or TrainingArguments.__dataclass_fields__[option.name].metadata["help"]
            default = option.default if option.default_factory is MISSING else option.default_factory()
            text = _first_sentence(text) + (f" [default: {default}]" if default not in (None, False) else "")
            lines.append(
                textwrap.fill(text, HELP_WIDTH, initial_indent=f"  --{option.name:<28}", subsequent_indent=" " * 32)
            )
    lines += ["", "Every TrainingArguments option is accepted too: python train.py --help_all lists them."]
    return "\n".join(lines)


def _first_sentence(text: str) -> str:
    return " ".join(text.split()).split(". ")[0].rstrip(".")


def _preset_of(argv: list[str]) -> str | None:
    for index, token in enumerate(argv):
        if token == "--preset" and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith("--preset="):
            return token.split("=", 1)[1]
    return None
