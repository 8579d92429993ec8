"""One training run: the Trainer set up for a layer's model (or the shared model of every layer), with the loss
and validation figures of its head (softmax or CRF), a progress bar per model, and a record of what really ran."""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from tqdm.auto import tqdm
from transformers import AutoModelForTokenClassification, PreTrainedModel, PreTrainedTokenizerBase, Trainer, set_seed
from transformers.trainer_callback import ProgressCallback
from transformers.trainer_utils import IntervalStrategy, get_last_checkpoint

from hf_pipeline.spans import load_weights, save_weights
from hf_pipeline.training.arguments import DataArguments, ModelArguments, NerTrainingArguments
from hf_pipeline.training.base_models import base_model
from hf_pipeline.training.data import LayeredCollator, windowed_split
from hf_pipeline.training.heads import TRAINING_HEADS
from hf_pipeline.training.metrics import entity_metrics, window_outputs
from hf_pipeline.training.schemes import Encoding

logger = logging.getLogger("train")
CONSOLE_REPORTS = 10  # progress lines per model when the console is not a terminal (a log file, CI)


class LayerProgress(ProgressCallback):
    """One progress bar per trained model on a terminal, its validation figures as the bar's postfix; elsewhere (a
    log file, CI) a console line every tenth of the steps; every Trainer log line goes to ``OUT/train.log``."""

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title = title

    def on_train_begin(self, args, state, control, **kwargs) -> None:
        if state.is_world_process_zero:  # a bar on a terminal; elsewhere (a log file, CI) a line every 10%
            self.training_bar = tqdm(total=state.max_steps, desc=self.title, dynamic_ncols=True, disable=None)
        self.current_step = 0
        self.validation_f1: float | None = None
        self.next_line = 0

    def on_step_end(self, args, state, control, **kwargs) -> None:
        super().on_step_end(args, state, control, **kwargs)
        if self.training_bar is None or not self.training_bar.disable or state.global_step < self.next_line:
            return
        self.next_line = state.global_step + max(1, state.max_steps // CONSOLE_REPORTS)
        figures = f", validation exact F1 {self.validation_f1:.3f}" if self.validation_f1 is not None else ""
        logger.info(
            "%s: step %d/%d, epoch %.1f%s", self.title, state.global_step, state.max_steps, state.epoch, figures
        )

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs) -> None:
        pass  # no second bar for the short validation passes

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        if not state.is_world_process_zero:
            return
        logger.debug("%s step %d: %s", self.title, state.global_step, json.dumps(logs))
        if self.training_bar is not None and "eval_exact_f1" in (logs or {}):
            self.validation_f1 = logs["eval_exact_f1"]
            self.training_bar.set_postfix(val_exact_f1=f"{logs['eval_exact_f1']:.3f}")


class NerTrainer(Trainer):
    """The Trainer, with one more option: what starts from scratch (every parameter outside the pretrained encoder,
    ``model.base_model``: the classifier, the CRF transitions, the span head) may learn at its own rate."""

    def __init__(self, *args: Any, head_learning_rate: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_learning_rate = head_learning_rate

    def create_optimizer(self, model: Any = None) -> Any:
        made = self.optimizer is not None
        optimizer = super().create_optimizer(model)
        if made or self.head_learning_rate is None:
            return optimizer
        encoder = {id(parameter) for parameter in self.model.base_model.parameters()}
        groups = []
        for group in optimizer.param_groups:  # Trainer's groups (with and without weight decay), each split in two
            for new in (False, True):
                parameters = [p for p in group["params"] if (id(p) not in encoder) == new]
                if parameters:
                    groups.append({**group, "params": parameters, **({"lr": self.head_learning_rate} if new else {})})
        optimizer.param_groups = groups
        return optimizer


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
    encoding: Encoding,
    dataset: datasets.DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    data_args: DataArguments,
    model_args: ModelArguments,
    training_args: NerTrainingArguments,
) -> TrainedModel:
    """Fine-tune (or, with --resume, reload or continue) the classifier of one layer, or the shared model of
    every tag sequence of ``encoding`` (``--architecture shared``)."""
    shared = model_args.architecture == "shared"
    layers = encoding.layers
    name = "shared" if shared else f"layer_{layers[0]}"
    title = f"{encoding.title} (shared encoder)" if shared else f"layer {layers[0]}"
    out = Path(training_args.output_dir)
    final = out / "checkpoints" / name / "final"
    if model_args.resume and (final / "config.json").is_file():
        logger.info("%s: already trained, loading %s", title, final)
        model = AutoModelForTokenClassification.from_pretrained(final)
        load_weights(model, final)
        return TrainedModel(model, layers, **_run_record(final))
    logger.info("training %s", title)
    args = copy.copy(training_args)  # a shallow copy keeps the distributed state that was set up once
    args.output_dir = str(final.parent)
    if "validation" not in dataset:
        args.eval_strategy, args.load_best_model_at_end = IntervalStrategy.NO, False
    window = data_args.max_seq_length
    train_split, _ = windowed_split(dataset["train"], encoding.word_labels, tokenizer, window, data_args.doc_stride)
    evaluated = args.eval_strategy != IntervalStrategy.NO
    eval_split, documents = (
        windowed_split(dataset["validation"], encoding.word_labels, tokenizer, window, None)
        if evaluated
        else (None, [])
    )
    set_seed(args.seed)  # the new head's initial weights: the same run gives the same model
    model = base_model(model_args, tokenizer, encoding, window, shared)
    head = TRAINING_HEADS[model_args.decoder]
    sequences = len(encoding.sequence_labels)
    trainer = NerTrainer(
        model=model,
        head_learning_rate=model_args.head_learning_rate,
        args=args,
        train_dataset=train_split,
        eval_dataset=eval_split,
        processing_class=tokenizer,
        data_collator=LayeredCollator(tokenizer),
        compute_loss_func=head.attach(model, encoding),
        compute_metrics=(
            entity_metrics(
                dataset["validation"],
                documents,
                encoding,
                model_args.decoder,
                lambda: head.parameters(model, sequences),
                head.thresholds,
            )
            if evaluated
            else None
        ),
        preprocess_logits_for_metrics=window_outputs(model_args.decoder, sequences),
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
    head.finish(trainer.model, lambda: trainer.evaluate() if evaluated else {})
    if trainer.is_world_process_zero():
        trainer.save_model(str(final))
        save_weights(trainer.model, final)
        (final / "run.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return TrainedModel(trainer.model, layers, **record)


def _run_record(final: Path) -> dict[str, Any]:
    path = final / "run.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
