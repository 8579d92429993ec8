"""The radiology-ner pipeline and its bundle: loading paths, windows, offsets, errors, the predict CLI."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import datasets
import numpy as np
import onnx
import pytest
import torch
from transformers import (
    AutoModelForTokenClassification,
    AutoTokenizer,
    pipeline,
)
from transformers.pipelines.pt_utils import KeyDataset

import hf_pipeline
from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus
from hf_pipeline import int8
from hf_pipeline.bundle import add_int8
from hf_pipeline.predict import main as predict_main
from hf_pipeline.training.base_models import build_tiny_model, train_wordpiece
from hf_pipeline.words import decode_bio, window_starts, word_spans

from .helpers import (
    REPORT,
    assert_pipeline_returns_merged_and_nested,
    assert_same_entities,
    assert_stock_tokens,
    make_bundle,
    predict_in_fresh_process,
    run_fresh,
    sample_texts,
    without_score,
)


def assert_well_formed(text: str, entities: list[dict]) -> None:
    boundaries = {offset for span in word_spans(text) for offset in span}
    for entity in entities:
        assert set(entity) == {"entity_group", "score", "word", "start", "end", "layer"}
        assert text[entity["start"] : entity["end"]] == entity["word"]
        assert entity["start"] in boundaries and entity["end"] in boundaries
        assert 0.0 <= entity["score"] <= 1.0 and entity["layer"] in (1, 2, 3)
    keys = [(e["start"], -e["end"], e["layer"]) for e in entities]
    assert keys == sorted(keys)


def test_fresh_process_loads_folder_with_trust_remote_code(tiny_bundle, tmp_path):
    remote = predict_in_fresh_process(tiny_bundle, tmp_path)
    local = hf_pipeline.load_pipeline(tiny_bundle)(REPORT)
    assert [(e["entity_group"], e["start"], e["end"], e["layer"]) for e in remote] == [
        (e["entity_group"], e["start"], e["end"], e["layer"]) for e in local
    ]
    assert_well_formed(REPORT, remote)


def hub_cache_with_two_revisions(tiny_bundle: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """A Hub cache for org/tiny-ner: main and tag v1, whose layer_2 weights differ."""
    repo = tmp_path / "cache" / "models--org--tiny-ner"
    main_commit, v1_commit = "a" * 40, "b" * 40
    shutil.copytree(tiny_bundle, repo / "snapshots" / main_commit)
    make_bundle(repo / "snapshots" / v1_commit, seed=1)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(main_commit)
    (repo / "refs" / "v1").write_text(v1_commit)
    return tmp_path / "cache", main_commit, v1_commit


REMOTE = (
    "from transformers import pipeline\n"
    "ner = pipeline('radiology-ner', model='org/tiny-ner', revision={!r}, trust_remote_code=True)"
)
LOCAL = "import hf_pipeline\nner = hf_pipeline.load_pipeline('org/tiny-ner', revision={!r})"


@pytest.mark.parametrize("revision", [None, "v1"])
@pytest.mark.parametrize("loader", ["remote code", "installed code"])
def test_hub_repo_id_from_cache_loads_every_layer_at_the_given_revision(tiny_bundle, tmp_path, revision, loader):
    cache, main_commit, v1_commit = hub_cache_with_two_revisions(tiny_bundle, tmp_path)
    code = (REMOTE if loader == "remote code" else LOCAL).format(revision)
    code += "\nprint([float(m.classifier.weight.sum()) for m in ner.layer_models])"
    output = run_fresh(code, tmp_path, project=loader == "installed code", HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    sums = eval(output.strip().splitlines()[-1])
    snapshot = cache / "models--org--tiny-ner" / "snapshots" / (v1_commit if revision else main_commit)
    expected = [
        float(AutoModelForTokenClassification.from_pretrained(snapshot / sub).classifier.weight.detach().sum())
        for sub in ("", "layer_2", "layer_3")
    ]
    assert sums == pytest.approx(expected)


@pytest.mark.parametrize("layer", ["", "layer_2", "layer_3"])
def test_each_layer_works_alone_in_the_stock_pipeline(tiny_bundle, layer):
    stock = pipeline("token-classification", model=str(tiny_bundle / layer))
    assert_stock_tokens(REPORT, stock(REPORT), label_names(SPRADIE_TYPES))  # the labels make_bundle gives
    assert len(stock.tokenizer) == len(AutoTokenizer.from_pretrained(tiny_bundle))


HARD_TEXTS = {
    "crlf": "Riñón derecho:\r\nquiste simple\r\n\r\nsin dilatación.\r\n",
    "tabs": "DAP\t4 mm\t\tRD\tleve",
    "emoji": "Quiste 👍🏽 en RD 🩻 leve ectasia",
    "combining": "Ecografi\u0301a: pequen\u0303o quiste en rin\u0303o\u0301n",
    "control": "Quiste\x00 simple\x07 en\x1b RD\u200b leve\ufeff.",
    "one_word": "a" * 5000,
    "empty": "",
    "spaces": " \n\t\r\n ",
}


@pytest.mark.parametrize("name", HARD_TEXTS)
def test_offsets_on_hard_inputs(tiny_bundle, name):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    text = HARD_TEXTS[name]
    entities = ner(text)
    assert_well_formed(text, entities)
    if not text.strip():
        assert entities == []


def test_an_uncased_tokenizer_keeps_exact_offsets(tmp_path):
    """Lowercasing and accent stripping (all-MiniLM-L6-v2, bert-base-uncased) change the tokens, never the offsets:
    words come from the original text and the tokenizer only maps each word to ids."""
    tokenizer = train_wordpiece(sample_texts(), vocab_size=300, model_max_length=64, uncased=True)
    assert tokenizer.tokenize("ÉCOGRAFÍA Riñón") == tokenizer.tokenize("ecografia rinon")
    labels = label_names(SPRADIE_TYPES)
    torch.manual_seed(0)
    models = [build_tiny_model(tokenizer, labels, 64, hidden_size=32) for _ in range(3)]
    ner = hf_pipeline.load_pipeline(hf_pipeline.save_bundle(models, tokenizer, tmp_path / "uncased"))
    text = "ÉCOGRAFÍA RENAL: Riñón derecho de 10,5 cm, sin dilatación. " * 12 + HARD_TEXTS["combining"]
    entities = ner(text)
    assert len(entities) > 20 and max(e["end"] for e in entities) > len(text) - 60
    assert_well_formed(text, entities)


@pytest.mark.slow
def test_two_hundred_thousand_characters_nothing_truncated(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "train").documents]
    text = "\n".join(texts * (200_000 // sum(map(len, texts)) + 1))[:200_000]
    entities = ner(text, batch_size=32)
    assert_well_formed(text, entities)
    assert max(e["end"] for e in entities) > 190_000  # predictions reach the end of the text


@pytest.fixture(scope="module")
def quiste_bundle(tmp_path_factory) -> Path:
    """Layer models trained for a few seconds: 'quiste' is a Finding, 'RD' an Abbreviation (layer 2)."""
    torch.manual_seed(0)
    rng = random.Random(0)
    filler = "el de la en con sin riñón hígado bazo vejiga imagen leve normal tamaño eco".split()
    tokenizer = train_wordpiece([" ".join(filler + ["quiste", "RD"])] * 3, vocab_size=120, model_max_length=32)
    labels = label_names(SPRADIE_TYPES)
    sentences = [[rng.choice(filler + ["quiste", "RD"]) for _ in range(20)] for _ in range(64)]
    targets = {1: {"quiste": "Finding"}, 2: {"RD": "Abbreviation"}, 3: {}}
    models = []
    for layer in (1, 2, 3):
        model = build_tiny_model(tokenizer, labels, max_position_embeddings=32, hidden_size=32)
        tags = [[labels.index(f"B-{targets[layer][w]}") if w in targets[layer] else 0 for w in s] for s in sentences]
        optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
        encoded = tokenizer(sentences, is_split_into_words=True, return_tensors="pt", padding=True)
        label_tensor = torch.full(encoded["input_ids"].shape, -100)
        for row, words in enumerate(tags):
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None:
                    label_tensor[row, position] = words[word]
        model.train()
        for _ in range(60):
            optimizer.zero_grad()
            model(**encoded, labels=label_tensor).loss.backward()
            optimizer.step()
        models.append(model.eval())
    return hf_pipeline.save_bundle(models, tokenizer, tmp_path_factory.mktemp("quiste") / "bundle")


def test_entity_beyond_the_first_window_is_found(quiste_bundle):
    ner = hf_pipeline.load_pipeline(quiste_bundle)
    text = "el riñón normal " * 100 + "con quiste en RD " + "la vejiga normal " * 20
    entities = ner(text)
    assert ner.max_window == 32 and len(word_spans(text)) > 10 * 32
    start = text.index("quiste")
    assert {"entity_group": "Finding", "start": start, "end": start + 6, "layer": 1}.items() <= next(
        e for e in entities if e["start"] == start
    ).items()
    rd = text.index("RD")  # layer 2's model finds it, and no entity holds it: its nesting layer is 1
    assert any(e["start"] == rd and e["entity_group"] == "Abbreviation" and e["layer"] == 1 for e in entities)
    assert {e["layer"] for e in entities} == {1}
    assert ner(text, layers=[1]) == entities and ner(text, layers=[2]) == []


def test_output_equals_decoding_each_layers_argmax_by_hand_then_merging_and_nesting(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    text = "Quiste de 3,5 mm en RD."
    spans = word_spans(text)
    encoded = ner.tokenizer([text[s:e] for s, e in spans], is_split_into_words=True, return_tensors="pt")
    word_ids = encoded.word_ids()
    first = [word_ids.index(w) for w in range(len(spans))]
    expected = []
    with torch.no_grad():
        for model in ner.layer_models:
            probs = model(**encoded).logits[0].softmax(-1)
            ids = [int(probs[p].argmax()) for p in first]
            for span in decode_bio([model.config.id2label[i] for i in ids]):
                score = sum(float(probs[first[w], ids[w]]) for w in range(span.first, span.last + 1))
                score /= span.last - span.first + 1
                expected.append((span.type, spans[span.first][0], spans[span.last][1], score))
    assert_pipeline_returns_merged_and_nested(ner, text, expected, SPRADIE_TYPES)


def test_batch_list_generator_and_single_calls_agree(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    texts = [REPORT, "", "RD leve.", HARD_TEXTS["crlf"] * 30]
    single = [ner(text) for text in texts]
    key_dataset = KeyDataset(datasets.Dataset.from_dict({"text": texts}), "text")
    for batched in (ner(texts, batch_size=4), list(ner((t for t in texts), batch_size=3)), list(ner(key_dataset))):
        assert_same_entities(batched, single)


def test_non_string_inputs_raise_type_error(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    with pytest.raises(TypeError, match="got int"):
        ner(42)
    with pytest.raises(TypeError, match="got bytes"):
        ner(["ok", b"bytes"])


def test_layers_option_is_validated(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    everything = ner(REPORT)
    assert ner(REPORT, layers=[1, 3]) == [e for e in everything if e["layer"] in (1, 3)]
    assert ner(REPORT, layers=[9]) == [e for e in everything if e["layer"] == 9]
    for wrong in ([0], [1.5], ["1"]):
        with pytest.raises(ValueError, match="whole numbers from 1"):
            ner(REPORT, layers=wrong)


def test_predict_cli_brat_jsonl_and_rerun(tiny_bundle, tmp_path, capsys):
    gold = SAMPLE_CORPUS / "test"
    args = ["--model", str(tiny_bundle), "--input", str(gold), "--output", str(tmp_path / "brat")]
    assert predict_main(args) == 0
    count = len(list(gold.rglob("*.txt")))
    assert f"predicted {count} report(s)" in capsys.readouterr().out
    assert predict_main(args) == 0 and "predicted 0 report(s)" in capsys.readouterr().out
    assert predict_main(args + ["--overwrite"]) == 0 and f"predicted {count}" in capsys.readouterr().out
    from hf_pipeline.score import score_folders

    assert score_folders(gold, tmp_path / "brat").missing_predictions == 0
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "a", "text": REPORT}) + "\n" + json.dumps({"text": "RD"}) + "\n")
    out = tmp_path / "jsonl"
    assert (
        predict_main(["--model", str(tiny_bundle), "--input", str(source), "--output", str(out), "--format", "jsonl"])
        == 0
    )
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["a", "2"]
    assert records[0]["entities"] == json.loads(json.dumps(hf_pipeline.load_pipeline(tiny_bundle)(REPORT)))
    source.write_text("{not json}\n")
    assert (
        predict_main(["--model", str(tiny_bundle), "--input", str(source), "--output", str(out), "--format", "jsonl"])
        == 2
    )
    assert "in.jsonl:1: expected a JSON object" in capsys.readouterr().err


def test_inputs_of_every_shape_and_clear_errors(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    assert ner._batch_size == 32  # windows are batched without tuning
    texts = ["RD leve.", REPORT * 20, "", REPORT]
    expected = [ner(text) for text in texts]
    assert ner([]) == [] and ner(()) == []
    for results in (ner(tuple(texts)), ner(texts), list(ner(iter(texts))), list(ner(map(str, texts)))):
        assert_same_entities(results, expected)  # lists run shortest first and come back in input order
    with pytest.raises(TypeError, match="unexpected arguments: aggregation_strategy"):
        ner(REPORT, aggregation_strategy="simple")
    with pytest.raises(ValueError, match=r"lone surrogate \(U\+D800\) at character 4"):
        ner("Leve\ud800 quiste")
    with pytest.raises(ValueError, match="stride=500 must be smaller than the window"):
        ner(REPORT * 40, stride=500)


def test_default_stride_costs_at_most_a_quarter_more_and_reads_every_word(tiny_bundle):
    from hf_pipeline.words import default_stride, window_starts

    for window in (30, 126, 254, 510):
        starts = window_starts(100_000, window)
        assert len(starts) * window <= 1.25 * 100_000 + window  # the encoder reads each token at most 1.25 times
        assert all(b - a == window - default_stride(window) for a, b in zip(starts, starts[1:-1]))
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    text = REPORT * 60
    half, default = ner(text, stride=(ner.default_window - 2) // 2), ner(text)
    assert_well_formed(text, default)
    assert len(default) > 100 and len(half) > 100  # the overlap's effect is measured by benchmarks/agreement.py


def test_the_stride_changes_nothing_on_a_text_of_one_window_and_the_windows_of_a_long_one(tiny_bundle):
    ner = hf_pipeline.load_pipeline(tiny_bundle)
    assert len(ner.tokenizer(REPORT)["input_ids"]) < ner.default_window
    one_window = [ner(REPORT, stride=stride) for stride in (0, 5, 20)]
    assert one_window[0] and all(result == one_window[0] for result in one_window)
    calls = []
    original = ner._forward
    ner._forward = lambda inputs: calls.append(inputs["input_ids"].shape[1]) or original(inputs)
    text = REPORT * 30
    for stride in (0, 20):
        calls.clear()
        assert_well_formed(text, ner(text, stride=stride, batch_size=1))
        tokens = len(ner.tokenizer(text, add_special_tokens=False)["input_ids"])
        window = ner.default_window - 2
        assert len(calls) == len(window_starts(tokens, window, stride))  # the windows the stride asks for


def same_entities(ours: list[list[dict]], theirs: list[list[dict]]) -> int:
    return sum(
        len({json.dumps(without_score(e)) for e in a} & {json.dumps(without_score(e)) for e in b})
        for a, b in zip(ours, theirs)
    )


def test_int8_runs_onnx_runtime_graphs_close_to_full_precision(tiny_bundle, tmp_path, caplog):
    """Without graphs in the bundle the pipeline exports them (and says so); add_int8 makes the bundle carry them,
    and a fresh process loads them through remote code with no export step."""
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "test").documents]
    theirs = hf_pipeline.load_pipeline(tiny_bundle)(texts)
    with caplog.at_level("WARNING"):
        exported = hf_pipeline.load_pipeline(tiny_bundle, quantize="int8")
    assert "carries no int8 graph" in caplog.text and len(exported.int8_models) == 3
    assert type(exported.int8_models[0]).__name__ == "Int8Model"
    assert same_entities(exported(texts), theirs) >= 0.95 * sum(map(len, theirs)) > 0  # a trained bundle: agreement.py
    carrying = shutil.copytree(tiny_bundle, tmp_path / "carrying")
    graphs = add_int8(carrying)
    assert [g.relative_to(carrying).as_posix() for g in graphs] == [
        "onnx/model.int8.onnx", "onnx/layer_2.int8.onnx", "onnx/layer_3.int8.onnx"]  # fmt: skip
    weighted = {node.op_type for node in onnx.load(str(graphs[0])).graph.node if "MatMul" in node.op_type}
    assert weighted == {"MatMulIntegerToFloat", "MatMul"}  # int8 by int8, and the attention's fp32 products
    caplog.clear()
    with caplog.at_level("WARNING"):
        carried = hf_pipeline.load_pipeline(carrying, quantize="int8")
    assert "carries no int8 graph" not in caplog.text
    assert carried(texts) == exported(texts)  # the same graphs, exported once and carried
    code = (
        "import json\nfrom transformers import pipeline\n"
        f"ner = pipeline('radiology-ner', model={str(carrying)!r}, trust_remote_code=True, quantize='int8')\n"
        f"print(json.dumps(ner({REPORT!r})))"
    )
    fresh = run_fresh(code, tmp_path)
    assert json.loads(fresh.strip().splitlines()[-1]) == json.loads(json.dumps(carried(REPORT)))
    with pytest.raises(ValueError, match="choose one of"):
        hf_pipeline.load_pipeline(tiny_bundle, quantize="int4")


FOUR_LAYERS = dict(vocab_size=100, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)


def test_int8_quantizes_every_weighted_matmul_per_row_and_rows_never_meet(tmp_path):
    """Four encoder layers: every weighted MatMul is int8 by int8, each input quantized once per row (query, key and
    value share theirs); a window's logits are the same, to the bit, alone and beside a longer window that pads it.
    Exporting leaves the user's logging as it was."""
    code = (
        "import collections, logging, json, numpy as np, onnx, onnxruntime, torch\n"
        "from transformers import BertConfig, BertForTokenClassification\n"
        "from hf_pipeline.int8 import export_int8\n"
        f"config = BertConfig(**{FOUR_LAYERS!r}, num_labels=5)\n"
        "torch.manual_seed(0)\n"
        f"path = export_int8(BertForTokenClassification(config).eval(), {str(tmp_path / 'm.onnx')!r}, 64)\n"
        "ops = collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)\n"
        "session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])\n"
        "ids = np.random.default_rng(0).integers(5, 100, (2, 12)); mask = np.ones_like(ids); mask[0, 7:] = 0\n"
        "alone = session.run(None, {'input_ids': ids[:1, :7], 'attention_mask': mask[:1, :7]})[0][0]\n"
        "padded = session.run(None, {'input_ids': ids, 'attention_mask': mask})[0][0, :7]\n"
        "print(json.dumps({'ops': ops, 'handlers': len(logging.getLogger().handlers), "
        "'level': logging.getLogger().level, 'same': bool((alone == padded).all()), 'rows': len(alone)}))"
    )
    result = json.loads(run_fresh(code, Path.cwd(), project=True).strip().splitlines()[-1])
    assert result["ops"]["MatMulIntegerToFloat"] == 4 * 6 + 1  # every weighted MatMul of 4 layers, the classifier
    assert result["ops"]["QuantizeLinear"] == 4 * 4 + 1  # one input for query, key and value, 3 more, the classifier's
    assert result["ops"].get("MatMul", 0) == 4 * 2  # the attention products, activations by activations
    assert result["handlers"] == 0 and result["level"] == logging.WARNING
    assert result["same"] and result["rows"] == 7


def test_int8_matmul_is_exact_integer_arithmetic_even_where_int16_pairs_would_saturate(tmp_path):
    """The rewritten MatMul computes exactly round(x / row scale) @ round(w / column scale), rescaled: no saturation
    of the AVX2 kernels' int16 pair sums, which 8-bit weights reach when a row's largest values meet a column's
    (here rows of equal values and a column of equal weights: 255 x 127 x 2 > 32,767)."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(64, 16)).astype(np.float32)
    weight[:, 0] = 1.0
    rows = np.concatenate([np.ones((1, 64)), rng.normal(size=(5, 64)) * 10]).astype(np.float32)[None]
    inputs = [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, "rows", 64])]
    outputs = [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)]
    node = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = onnx.helper.make_graph([node], "one", inputs, outputs, [onnx.numpy_helper.from_array(weight, "w")])
    onnx.save(
        onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", int8.OPSET)]), tmp_path / "f.onnx"
    )
    quantized = int8.quantize_weights(tmp_path / "f.onnx")
    session = int8._onnxruntime().InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])
    found = session.run(None, {"x": rows})[0]
    row_scales = np.abs(rows).max(-1, keepdims=True) / 127
    column_scales = np.abs(weight).max(0) / int8.WEIGHT_LEVELS
    integers = np.round(rows / row_scales) @ np.round(weight / column_scales)
    np.testing.assert_allclose(found, integers * row_scales * column_scales, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(found, rows @ weight, atol=0.03 * np.abs(rows @ weight).max())


def test_shared_bundle_loads_in_a_fresh_process_and_predicts(shared_bundle, tmp_path, capsys):
    fresh = predict_in_fresh_process(shared_bundle, tmp_path)
    local = hf_pipeline.load_pipeline(shared_bundle)(REPORT)
    assert_same_entities([fresh], [json.loads(json.dumps(local))])
    folder = tmp_path / "reports"
    folder.mkdir()
    (folder / "r1.txt").write_text(REPORT, encoding="utf-8")
    assert predict_main(["--model", str(shared_bundle), "--input", str(folder), "--output", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "r1.ann").read_text(encoding="utf-8").count("\n") == len(local)
