"""Fine-tune the layered token classifiers, save the bundle, evaluate it with the task's scorer.

Two architectures: ``per_layer`` (default, the paper's method: one encoder fine-tuned per layer) and ``shared``
(one encoder fine-tuned once, one classifier head per layer, the layers' token losses summed); two decoders:
``softmax`` (a label per word) and ``crf`` (a linear-chain CRF per layer, Viterbi decoding). Any encoder that
``AutoModelForTokenClassification`` knows is a base: BERT, RoBERTa, XLM-R, DeBERTa-v2/v3, DistilBERT, ELECTRA,
ModernBERT.

    python train.py --preset tiny --output_dir runs/tiny                      # offline, a few minutes on CPU
    python train.py --dataset DIR_OR_HUB_ID --output_dir runs/mbert          # bert-base-multilingual-cased
    python train.py --brat_dir CORPUS --types auto --output_dir runs/x       # build the dataset on the fly
    python train.py args.json                                                # every argument from one JSON file
    torchrun --nproc_per_node 4 train.py --dataset DIR --output_dir runs/ddp   # data parallel on 4 GPUs
    python train.py --help                                                   # the options (--help_all: every one)

Writes ``OUT/model/`` (the bundle and its card), ``OUT/eval_results.json``, ``OUT/predictions/<split>/*.ann``
``OUT/train.log`` (every Trainer log line) and checkpoints under ``OUT/checkpoints/layer_<k>/`` (``shared``:
``OUT/checkpoints/shared/``); the checkpoint kept is the one with the best validation exact F1. Each step lives in
its own module of ``hf_pipeline.training``: arguments, data (windows, batches, loss), base_models, crf, metrics,
trainer, evaluation.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from transformers import PreTrainedTokenizerBase

from hf_dataset import SAMPLE_CORPUS
from hf_pipeline import save_bundle
from hf_pipeline.bundle import add_int8
from hf_pipeline.model_card import plain_name, write_model_card
from hf_pipeline.training.arguments import DataArguments, ModelArguments, NerTrainingArguments, parse_arguments
from hf_pipeline.training.base_models import base_tokenizer, check_model_reachable
from hf_pipeline.training.data import dataset_license, label_list, load_data, tag_layers
from hf_pipeline.training.evaluation import evaluate_bundle, results_table
from hf_pipeline.training.schemes import DepthEncoding, Encoding, make_encoding
from hf_pipeline.training.trainer import TrainedModel, train_model

logger = logging.getLogger("train")


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
        "Validation figures during training are the task's exact F1, decoded as the bundle predicts (a per_layer "
        "model: against its layer's gold); the checkpoint kept is the best. The final table scores the whole "
        "bundle on every split."
    )
    encodings = scheme_encodings(dataset, data_args, model_args)
    trained = [
        train_model(encoding, dataset, tokenizer, data_args, model_args, training_args) for encoding in encodings
    ]
    results = (
        release(trained, encodings, tokenizer, dataset, data_args, model_args, training_args)
        if training_args.should_save
        else {}
    )
    if torch.distributed.is_initialized():  # the other processes wait for the evaluation, then all leave together
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return results


def scheme_encodings(
    dataset: datasets.DatasetDict, data_args: DataArguments, model_args: ModelArguments
) -> list[Encoding]:
    """What each model learns: the shared model every sequence of the scheme, a per_layer model its layer."""
    if model_args.architecture != "shared":
        return [DepthEncoding(dataset, [layer]) for layer in model_args.layers]
    encoding = make_encoding(
        model_args.scheme,
        dataset,
        model_args.layers,
        max_sublayers=model_args.max_sublayers,
        discontinuous=data_args.discontinuous,
        max_span_words=model_args.max_span_words,
        span_dims=model_args.span_dims,
        span_scorer=model_args.span_scorer,
        span_positive_weight=model_args.span_positive_weight,
    )
    if model_args.scheme == "type":
        logger.info(
            "type scheme: %d tag sequences (%s); training split: %s",
            len(encoding.sequences),
            ", ".join(f"{kind} x{sub}" for kind, sub in encoding.sequences if sub > 1) or "no type needs a sub-layer",
            encoding.statistics(dataset["train"]),
        )
    if model_args.scheme == "span":
        logger.info(
            "span head: %s scorer, K = %d words, %d types, same-type overlaps %s; training split: %s",
            encoding.scorer,
            encoding.max_words,
            len(encoding.types),
            "kept" if encoding.same_type_overlaps else "resolved (higher score wins)",
            encoding.statistics(dataset["train"]),
        )
    return [encoding]


def release(
    trained: list[TrainedModel],
    encodings: list[Encoding],
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
    if model_args.int8:
        add_int8(bundle)
    whole = encodings[0] if model_args.architecture == "shared" else DepthEncoding(dataset, model_args.layers)
    results = evaluate_bundle(bundle, dataset, out, training_args.per_device_eval_batch_size, whole)
    (out / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    write_model_card(
        bundle,
        labels=label_list(dataset),
        base_model=None if model_args.preset == "tiny" else model_args.model_name_or_path,
        dataset=data_args.dataset or data_args.brat_dir or str(SAMPLE_CORPUS),
        training=training_summary(trained, data_args, model_args, training_args),
        results=results,
        license=model_args.license or dataset_license(data_args),
        architecture=model_args.architecture,
        decoder=model_args.decoder,
        scheme=model_args.scheme if model_args.architecture == "shared" else "depth",
    )
    print(results_table(results))
    return results


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
        "decoder": model_args.decoder,
        "scheme": model_args.scheme,
        "base model": plain_name(model_args.model_name_or_path) if model_args.preset is None else "tiny preset",
        "layers": model_args.layers,
        "window (max_seq_length, tokens)": data_args.max_seq_length,
        "window overlap (doc_stride, tokens)": data_args.doc_stride,
        "learning_rate": args.learning_rate,
        "head_learning_rate": model_args.head_learning_rate or args.learning_rate,
        **({"span_positive_weight": model_args.span_positive_weight} if model_args.decoder == "span" else {}),
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
