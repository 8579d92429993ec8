"""A bundle trained with the type scheme (a tag sequence per entity type) and a CRF head, end to end: training,
validation as the bundle predicts, the pipeline in a fresh process, int8, split_shared, predict and the Space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

import hf_pipeline
import train
from hf_pipeline.bundle import split_shared

from .helpers import (
    REPORT,
    assert_int8_close_and_batch_independent,
    assert_output_contract,
    assert_predict_cli_writes_what_the_pipeline_returns,
    assert_same_entities,
    predict_in_fresh_process,
    sample_texts,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def type_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("type-crf")
    train.main(
        [
            "--preset", "tiny", "--architecture", "shared", "--scheme", "type", "--decoder", "crf",
            "--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    # The preset's 150 epochs, not fewer: the tiny tokenizer's vocabulary changes from run to run (the tokenizers
    # library's WordPiece trainer is not deterministic), and with one of them 60 epochs reached 0.07 validation exact
    # F1 where 150 reach 0.71.
    return out


def test_the_bundle_records_its_scheme_and_validation_is_what_the_bundle_scores(type_run):
    config = json.loads((type_run / "model" / "config.json").read_text())
    assert (config["ner_scheme"], config["ner_decoder"], config["ner_architecture"]) == ("type", "crf", "shared")
    sequences = config["ner_sequences"]
    assert len(config["id2label"]) == 3 * len(sequences) and len(config["ner_crf_transitions"]) == len(sequences)
    assert any(sub == 2 for _, sub in sequences), "the sample nests entities of one type: a second sequence"
    record = json.loads((type_run / "checkpoints" / "shared" / "final" / "run.json").read_text())
    results = json.loads((type_run / "eval_results.json").read_text())
    assert record["best_validation_exact_f1"] > 0.2
    assert results["validation"]["exact"]["f1"] == pytest.approx(record["best_validation_exact_f1"], abs=1e-9)
    assert results["test"]["oracle"]["exact_f1"] > 0.97
    assert {"nested", "flat", "merged_duplicates"} <= set(results["test"])


def test_pipeline_output_contract_in_a_fresh_process(type_run, tmp_path):
    bundle = type_run / "model"
    ner = hf_pipeline.load_pipeline(bundle)
    local = ner(REPORT)
    assert_same_entities([predict_in_fresh_process(bundle, tmp_path)], [local])
    assert_output_contract(sample_texts()[:4], ner(sample_texts()[:4]))
    deep = [e for text in sample_texts() for e in ner(text) if e["layer"] > 1]
    assert deep, "the trained type bundle predicts nested entities"


def test_int8_is_close_to_fp32_and_independent_of_the_batch(type_run):
    assert_int8_close_and_batch_independent(type_run / "model")


def test_split_shared_copies_run_in_the_stock_pipeline(type_run):
    model = hf_pipeline.load_pipeline(type_run / "model").model
    copies = split_shared(model)
    sequences = model.config.ner_sequences
    assert len(copies) == len(sequences)
    kind = sequences[0][0]
    assert copies[0].config.id2label == {0: "O", 1: f"B-{kind}", 2: f"I-{kind}"}
    tokenizer = hf_pipeline.load_pipeline(type_run / "model").tokenizer
    tokens = pipeline("token-classification", model=copies[0], tokenizer=tokenizer)(REPORT)
    assert all(token["entity"] in (f"B-{kind}", f"I-{kind}") for token in tokens)


def test_predict_cli_writes_what_the_pipeline_returns(type_run, tmp_path):
    assert_predict_cli_writes_what_the_pipeline_returns(type_run / "model", tmp_path / "preds")
