"""A bundle trained with the type scheme (a tag sequence per entity type) and a CRF head, end to end: training,
validation as the bundle predicts, the pipeline in a fresh process, int8, split_shared, predict and the Space."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import pipeline

import hf_pipeline
import train
from hf_dataset import SAMPLE_CORPUS, read_corpus
from hf_pipeline.bundle import split_shared

from .helpers import REPORT, assert_same_entities, cli, predict_in_fresh_process, sample_texts, without_score

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def type_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("type-crf")
    train.main(
        [
            "--preset", "tiny", "--architecture", "shared", "--scheme", "type", "--decoder", "crf",
            "--num_train_epochs", "60", "--eval_strategy", "epoch", "--save_strategy", "epoch",
            "--load_best_model_at_end", "true", "--output_dir", str(out),
        ]
    )  # fmt: skip
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
    for text, entities in zip(sample_texts()[:4], ner(sample_texts()[:4])):
        assert entities == sorted(entities, key=lambda e: (e["start"], -e["end"], e["layer"]))
        assert all(text[e["start"] : e["end"]] == e["word"] for e in entities)
        assert len({(e["entity_group"], e["start"], e["end"]) for e in entities}) == len(entities)
    deep = [e for text in sample_texts() for e in ner(text) if e["layer"] > 1]
    assert deep, "the trained type bundle predicts nested entities"


def test_int8_is_close_to_fp32_and_independent_of_the_batch(type_run):
    texts = sample_texts()[:6]
    fp32 = hf_pipeline.load_pipeline(type_run / "model")(texts)
    int8 = hf_pipeline.load_pipeline(type_run / "model", quantize="int8")
    together = int8(texts, batch_size=8)
    alone = [int8(text, batch_size=1) for text in texts]
    assert [[without_score(e) for e in doc] for doc in together] == [[without_score(e) for e in doc] for doc in alone]
    same = sum(without_score(e) in [without_score(f) for f in b] for a, b in zip(together, fp32) for e in a)
    assert same >= 0.8 * sum(map(len, fp32))


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
    source = SAMPLE_CORPUS / "test"
    output = tmp_path / "preds"
    assert cli("--model", type_run / "model", "--input", source, "--output", output, "--format", "brat") == 0
    ner = hf_pipeline.load_pipeline(type_run / "model")
    for document in read_corpus(source).documents[:3]:
        written = (output / f"{document.id}.ann").read_text(encoding="utf-8").splitlines()
        assert len(written) == len(ner(document.text))
