"""The span head: its scores against the formula, decoding in blocks, its training targets and oracle, its loss
learning gold spans; and a tiny span bundle end to end (validation as the bundle predicts, the pipeline in a fresh
process, int8, predict, a Hub id, resume, tampered files)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_dataset
import hf_pipeline
import train
from hf_dataset import SAMPLE_CORPUS
from hf_pipeline import spans
from hf_pipeline.bundle import split_shared
from hf_pipeline.schemes import nesting_layers
from hf_pipeline.training.arguments import ModelArguments
from hf_pipeline.training.heads import SpanScorer
from hf_pipeline.training.schemes import SpanEncoding

from .helpers import (
    REPORT,
    assert_int8_close_and_batch_independent,
    assert_output_contract,
    assert_predict_cli_writes_what_the_pipeline_returns,
    assert_same_entities,
    fill_hub_cache,
    predict_in_fresh_process,
    repo_files,
    sample_texts,
)

SCORERS = tuple(spans.SCORER_WEIGHTS)


def _weights(
    types: int = 3, dims: int = 4, max_words: int = 3, seed: int = 0, scorer: str = "biaffine"
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shapes = spans.weight_shapes(scorer, types, dims, max_words)
    return {name: torch.randn(*shape, generator=generator) for name, shape in shapes.items()}


def test_span_logits_are_the_biaffine_formula_for_every_span():
    weights = _weights()
    features = torch.randn(2, 6, 8)
    scores = spans.span_logits(features, weights)
    hidden = torch.nn.functional.gelu(features)
    start, end = hidden[..., :4], hidden[..., 4:]
    for batch, first, width, kind in [(0, 0, 0, 0), (1, 2, 2, 1), (0, 5, 0, 2), (1, 3, 1, 2)]:
        s, e = start[batch, first], end[batch, first + width]
        expected = s @ weights["bilinear"][kind] @ e + weights["start"][kind] @ s + weights["end"][kind] @ e
        expected += weights["width"][width, kind] + weights["bias"][kind]
        assert scores[batch, first, width, kind] == pytest.approx(float(expected), abs=1e-4)
    assert spans.valid_spans(6, 3)[4].tolist() == [True, True, False]


@pytest.mark.parametrize("scorer", ["mlp", "mlp_mean"])
def test_span_logits_are_the_mlp_formula_for_every_span(scorer):
    weights = _weights(scorer=scorer)
    features = torch.randn(2, 6, 8)
    scores = spans.span_logits(features, weights)
    hidden = torch.nn.functional.gelu(features)
    for batch, first, width, kind in [(0, 0, 0, 0), (1, 2, 2, 1), (0, 5, 0, 2), (1, 3, 2, 2)]:
        last = first + width
        inner = weights["start_in"] @ hidden[batch, first, :4] + weights["end_in"] @ hidden[batch, last, 4:]
        inner += weights["width_in"][width] + weights["hidden_bias"]
        if scorer == "mlp_mean":
            inner += weights["inside_in"] @ hidden[batch, first : last + 1].mean(0)
        expected = weights["output"][kind] @ torch.nn.functional.gelu(inner) + weights["bias"][kind]
        assert scores[batch, first, width, kind] == pytest.approx(float(expected), abs=1e-4)


@pytest.mark.parametrize("scorer", SCORERS)
def test_decoding_in_blocks_finds_exactly_what_one_block_finds(monkeypatch, scorer):
    weights = _weights(max_words=4, seed=1, scorer=scorer)
    weights["bias"] -= 2.0
    outputs = np.random.default_rng(0).normal(size=(41, 8)).astype(np.float32)
    parameters = spans.SpanParameters(weights, 0.6, same_type_overlaps=True)
    whole = spans.decode_spans(outputs, ["A", "B", "C"], parameters)
    monkeypatch.setattr(spans, "BLOCK_WORDS", 5)
    blocks = sorted(spans.decode_spans(outputs, ["A", "B", "C"], parameters))
    assert [s[:3] for s in blocks] == [s[:3] for s in sorted(whole)]
    assert [s[3] for s in blocks] == pytest.approx([s[3] for s in sorted(whole)], abs=1e-5)
    assert whole and all(last - first < 4 and last < 41 and score >= 0.6 for _, first, last, score in whole)
    resolved = spans.decode_spans(outputs, ["A", "B", "C"], spans.SpanParameters(weights, 0.6, False))
    by_type = [[s for s in resolved if s[0] == kind] for kind in "ABC"]
    assert all(a[2] < b[1] or b[2] < a[1] for same in by_type for a in same for b in same if a != b)


@pytest.fixture(scope="module")
def sample():
    dataset, _ = hf_dataset.build(SAMPLE_CORPUS)
    return dataset


def test_targets_mark_each_gold_span_once_by_width_and_type(sample):
    encoding = SpanEncoding(sample, [1, 2, 3], max_span_words=4)
    row = sample["train"][0]
    labels = encoding.word_labels(row)
    assert len(labels) == 4 and all(len(per_width) == len(row["tokens"]) for per_width in labels)
    marked = {
        (encoding.types[kind], first, first + width)
        for width, per_word in enumerate(labels)
        for first, mask in enumerate(per_word)
        for kind in range(len(encoding.types))
        if mask >> kind & 1
    }
    found = {(encoding.types[kind], first, last) for kind, first, last in encoding.word_spans(row)}
    assert marked == {span for span in found if span[2] - span[1] < 4}
    counts = encoding.statistics(sample["train"])
    assert counts["longer_than_k"] > 0 and counts["within_k"] + counts["longer_than_k"] == sum(
        len(encoding.word_spans(r)) for r in sample["train"]
    )
    assert len(encoding.oracle(row)) == len({s for s in found if s[2] - s[1] < 4})


def test_k_covers_the_training_entities_and_same_type_overlaps_follow_the_data(sample):
    encoding = SpanEncoding(sample, [1, 2, 3])
    lengths = [last - first + 1 for row in sample["train"] for _, first, last in encoding.word_spans(row)]
    assert np.mean(np.array(lengths) <= encoding.max_words) >= 0.999
    assert np.mean(np.array(lengths) <= encoding.max_words - 1) < 0.999
    assert encoding.same_type_overlaps, "the sample nests entities of one type (200 of 1,130)"


@pytest.mark.parametrize("scorer", SCORERS)
def test_the_loss_teaches_the_scorer_the_gold_spans(scorer):
    torch.manual_seed(0)
    features = torch.randn(2, 12, 16)  # two windows of 12 tokens; every other token starts a word
    labels = torch.full((2, 12, 3), -100)
    labels[:, ::2] = 0
    labels[0, 2, 1] = 0b01  # words 1..2 of window 0: type 0
    labels[1, 4, 0] = 0b11  # word 2 of window 1: types 0 and 1
    head = SpanScorer(types=2, dims=8, max_words=3, scorer=scorer)
    assert tuple(head.weights()) == spans.SCORER_WEIGHTS[scorer]
    optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
    first = float(head.loss(features, labels).detach())
    for _ in range(150):
        optimizer.zero_grad()
        head.loss(features, labels).backward()
        optimizer.step()
    assert float(head.loss(features, labels).detach()) < 0.05 * first
    parameters = spans.SpanParameters(head.trained_weights(), 0.5, True)
    found = [spans.decode_spans(features[b, ::2].numpy(), ["X", "Y"], parameters) for b in range(2)]
    assert [[s[:3] for s in window] for window in found] == [[("X", 1, 2)], [("X", 2, 2), ("Y", 2, 2)]]


def test_the_positive_weight_scales_the_gold_spans_loss_only():
    torch.manual_seed(0)
    features = torch.randn(1, 8, 16)
    labels = torch.full((1, 8, 2), -100)
    labels[:, ::2] = 0
    heads = [SpanScorer(types=2, dims=8, max_words=2, positive_weight=w) for w in (1.0, 3.0, 5.0)]
    for head in heads[1:]:
        head.load_state_dict(heads[0].state_dict())
    plain, three, five = (float(head.loss(features, labels).detach()) for head in heads)
    assert plain == pytest.approx(three) == pytest.approx(five), "no gold span: the weight changes nothing"
    labels[0, 2, 1] = 0b10  # words 1..2: type 1
    plain, three, five = (float(head.loss(features, labels).detach()) for head in heads)
    assert five > three > plain and five - plain == pytest.approx(2 * (three - plain))
    with pytest.raises(ValueError, match="--span_positive_weight must be above 0"):
        ModelArguments(decoder="span", architecture="shared", span_positive_weight=0)


@pytest.mark.parametrize(
    "options",
    [{"scheme": "type", "decoder": "span"}, {"scheme": "span", "decoder": "crf"}, {"decoder": "span"}],
)
def test_the_span_head_is_the_span_scheme_on_a_shared_encoder(options):
    with pytest.raises(ValueError, match="span|shared"):
        ModelArguments(**options)
    assert ModelArguments(decoder="span", architecture="shared").scheme == "span"
    with pytest.raises(ValueError, match="--span_scorer must be one of"):
        ModelArguments(decoder="span", architecture="shared", span_scorer="cnn")


# --- a tiny span bundle, end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def span_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("span")
    train.main(
        [
            "--preset", "tiny", "--architecture", "shared", "--decoder", "span", "--num_train_epochs", "40",
            "--eval_strategy", "epoch", "--save_strategy", "epoch", "--load_best_model_at_end", "true",
            "--output_dir", str(out),
        ]
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_the_bundle_records_the_head_and_validation_is_what_the_bundle_scores(span_run):
    bundle = span_run / "model"
    config = json.loads((bundle / "config.json").read_text())
    assert (config["ner_scheme"], config["ner_decoder"]) == ("span", "span")
    assert 0 < config["ner_span_threshold"] < 1 and config["ner_span_threshold"] in [
        round(0.05 * i, 2) for i in range(20)
    ]
    weights = load_file(bundle / spans.WEIGHTS_FILE)
    assert config["ner_span_scorer"] == ModelArguments.span_scorer == "mlp_mean", "the default scorer"
    assert weights["output"].shape == (len(config["ner_span_types"]), 128) and len(config["id2label"]) == 256
    assert "span_head.bias" not in load_file(bundle / "model.safetensors"), "the encoder is a stock checkpoint"
    record = json.loads((span_run / "checkpoints" / "shared" / "final" / "run.json").read_text())
    results = json.loads((span_run / "eval_results.json").read_text())
    assert record["best_validation_exact_f1"] > 0.2
    assert results["validation"]["exact"]["f1"] == pytest.approx(record["best_validation_exact_f1"], abs=1e-9)
    assert results["test"]["oracle"]["exact_f1"] > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("scorer", [s for s in SCORERS if s != ModelArguments.span_scorer])
def test_every_scorer_trains_saves_and_serves_what_validation_scored(tmp_path, scorer):
    out = tmp_path / scorer
    train.main(
        [
            "--preset", "tiny", "--architecture", "shared", "--decoder", "span", "--span_scorer", scorer,
            "--num_train_epochs", "6", "--eval_strategy", "epoch", "--save_strategy", "epoch",
            "--load_best_model_at_end", "true", "--output_dir", str(out),
        ]
    )  # fmt: skip
    bundle = out / "model"
    assert json.loads((bundle / "config.json").read_text())["ner_span_scorer"] == scorer
    assert tuple(load_file(bundle / spans.WEIGHTS_FILE)) == tuple(sorted(spans.SCORER_WEIGHTS[scorer]))
    record = json.loads((out / "checkpoints" / "shared" / "final" / "run.json").read_text())
    results = json.loads((out / "eval_results.json").read_text())
    assert results["validation"]["exact"]["f1"] == pytest.approx(record["best_validation_exact_f1"], abs=1e-9)
    assert_same_entities([predict_in_fresh_process(bundle, tmp_path)], [hf_pipeline.load_pipeline(bundle)(REPORT)])


@pytest.mark.slow
def test_pipeline_output_contract_in_a_fresh_process(span_run, tmp_path):
    bundle = span_run / "model"
    ner = hf_pipeline.load_pipeline(bundle)
    assert_same_entities([predict_in_fresh_process(bundle, tmp_path)], [ner(REPORT)])
    outputs = ner(sample_texts()[:4])
    assert_output_contract(sample_texts()[:4], outputs)
    for entities in outputs:
        found = [hf_pipeline.schemes.Predicted(e["entity_group"], e["start"], e["end"], 1) for e in entities]
        types = ner.model.config.ner_span_types
        assert [e["layer"] for e in entities] == nesting_layers(found, types)
    assert any(e["layer"] > 1 for text in sample_texts() for e in ner(text)), "the span bundle finds nested entities"


@pytest.mark.slow
def test_int8_is_close_to_fp32_and_independent_of_the_batch(span_run):
    assert_int8_close_and_batch_independent(span_run / "model")


@pytest.mark.slow
def test_predict_cli_and_a_hub_id_serve_the_span_head(span_run, tmp_path, monkeypatch):
    assert_predict_cli_writes_what_the_pipeline_returns(span_run / "model", tmp_path / "preds")
    ner = hf_pipeline.load_pipeline(span_run / "model")
    fill_hub_cache({("model", "org/tiny-span"): repo_files(span_run / "model")}, tmp_path / "cache", monkeypatch)
    from_hub = hf_pipeline.load_pipeline("org/tiny-span")
    assert_same_entities([from_hub(REPORT)], [ner(REPORT)])
    with pytest.raises(ValueError, match="no tag sequences to split"):
        split_shared(ner.model)


@pytest.mark.slow
def test_resume_reloads_the_trained_head(span_run, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(span_run / "checkpoints", out / "checkpoints")
    train.main(["--preset", "tiny", "--architecture", "shared", "--decoder", "span", "--resume", "true",
                "--output_dir", str(out)])  # fmt: skip
    before = hf_pipeline.load_pipeline(span_run / "model")(REPORT)
    assert_same_entities([hf_pipeline.load_pipeline(out / "model")(REPORT)], [before])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: (b / spans.WEIGHTS_FILE).unlink(), spans.WEIGHTS_FILE),
        (lambda b: (b / spans.WEIGHTS_FILE).write_bytes(b"not safetensors"), "cannot be read"),
        (lambda b: _edit_weights(b, "bias", lambda t: t * float("nan")), "not finite"),
        (lambda b: _edit_weights(b, "width_in", lambda t: t[:-1]), "'width_in' is of shape"),
        (lambda b: _edit_config(b, "ner_span_threshold", 1.5), "ner_span_threshold"),
        (lambda b: _edit_config(b, "ner_span_types", ["A"]), "needs"),
        (lambda b: _edit_config(b, "ner_decoder", "crf"), "go together"),
        (lambda b: _edit_config(b, "ner_span_same_type_overlaps", "yes"), "ner_span_same_type_overlaps"),
        (lambda b: _edit_config(b, "ner_span_max_words", 0), "ner_span_max_words"),
        (lambda b: _edit_config(b, "ner_span_scorer", "cnn"), "expected one of"),
        (lambda b: _edit_config(b, "ner_span_scorer", "biaffine"), "'bilinear' is missing.*biaffine scorer"),
        (lambda b: _edit_config(b, "ner_span_scorer", "mlp"), "holds 'inside_in', which .*mlp scorer"),
    ],
)
def test_a_tampered_span_bundle_is_refused_with_one_line(span_run, tmp_path, damage, message):
    bundle = tmp_path / "bundle"
    shutil.copytree(span_run / "model", bundle)
    damage(bundle)
    with pytest.raises((ValueError, OSError), match=message) as error:
        hf_pipeline.load_pipeline(bundle)
    assert "\n" not in str(error.value)


def _edit_weights(bundle: Path, name: str, change) -> None:
    weights = load_file(bundle / spans.WEIGHTS_FILE)
    weights[name] = change(weights[name]).contiguous()
    save_file(weights, bundle / spans.WEIGHTS_FILE)


def _edit_config(bundle: Path, key: str, value) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config[key] = value
    (bundle / "config.json").write_text(json.dumps(config))
