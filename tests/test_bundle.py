"""The model bundle: its layout, the modules that travel with it, the checks that refuse a broken one, the shared
layout and its per-layer slices, and the CRF head (transitions in config.json, Viterbi in the pipeline)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, pipeline
from transformers.dynamic_module_utils import get_imports

import hf_pipeline
from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus
from hf_pipeline.bundle import PIPELINE_MODULES, make_shared_config, split_shared
from hf_pipeline.crf import TRANSITIONS_KEY, marginals, viterbi
from hf_pipeline.training.base_models import build_tiny_model, train_wordpiece
from hf_pipeline.words import decode_bio, word_spans

from .helpers import (
    REPORT,
    assert_pipeline_returns_merged_and_nested,
    assert_same_entities,
    assert_stock_tokens,
    make_bundle,
    predict_in_fresh_process,
    sample_texts,
)


def test_bundle_layout(tiny_bundle):
    config = json.loads((tiny_bundle / "config.json").read_text())
    assert config["custom_pipelines"]["radiology-ner"]["impl"] == "radiology_ner.RadiologyNerPipeline"
    assert config["ner_layers"] == [1, 2, 3]
    assert (tiny_bundle / "radiology_ner.py").is_file()
    for layer in ("layer_2", "layer_3"):
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
            p.name for p in (tiny_bundle / layer).iterdir()
        }


def imported_packages(path: Path) -> tuple[set[str], set[str]]:
    """The top-level packages a module imports, and the sibling modules it imports relatively."""
    import ast

    tree = ast.parse(path.read_text())
    imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    absolute = {n.name.split(".")[0] for node in imports if isinstance(node, ast.Import) for n in node.names}
    absolute |= {node.module.split(".")[0] for node in imports if isinstance(node, ast.ImportFrom) and not node.level}
    relative = {node.module for node in imports if isinstance(node, ast.ImportFrom) and node.level}
    return absolute, relative


def test_traveling_modules_import_only_allowed_packages(tiny_bundle):
    """The pipeline's modules import torch, transformers, numpy (spans.py: safetensors, which transformers needs), the
    standard library and each other; int8.py also onnxruntime, in a try block, so that transformers does not demand
    it to load the remote code."""
    folder = Path(hf_pipeline.__file__).parent
    stdlib = {"__future__"} | set(sys.stdlib_module_names)
    allowed = {
        "radiology_ner.py": ({"torch", "transformers", "numpy"}, {"words", "schemes", "heads", "int8"}),
        "words.py": (set(), set()),  # no torch: instant import
        "schemes.py": (set(), {"words"}),
        "heads.py": ({"numpy", "torch"}, {"crf", "schemes", "spans"}),
        "crf.py": ({"numpy"}, set()),
        "spans.py": ({"numpy", "torch", "safetensors"}, {"schemes"}),  # safetensors comes with transformers
        "int8.py": ({"torch", "transformers", "numpy", "onnxruntime"}, set()),
        "handler.py": ({"torch", "transformers"}, set()),  # Inference Endpoints' entry point
    }
    assert set(allowed) == {Path(module).name for module in PIPELINE_MODULES}
    for name, (packages, siblings) in allowed.items():
        absolute, relative = imported_packages(folder / name)
        assert absolute <= packages | stdlib and relative == siblings, name
        assert set(get_imports(folder / name)) - stdlib <= {"torch", "transformers", "numpy", "safetensors"}, name
        assert (tiny_bundle / name).is_file()


def test_bundle_whose_layers_disagree_is_refused(tiny_bundle, tmp_path):
    other = make_bundle(tmp_path / "other", seed=2)
    broken = shutil.copytree(tiny_bundle, tmp_path / "vocab")
    model = AutoModelForTokenClassification.from_pretrained(other / "layer_2")
    model.resize_token_embeddings(model.config.vocab_size + 8)
    model.save_pretrained(broken / "layer_2")
    with pytest.raises(ValueError, match="Layer 2 has a vocabulary of"):
        hf_pipeline.load_pipeline(broken)
    retokenized = shutil.copytree(tiny_bundle, tmp_path / "tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (retokenized / "layer_3" / name).unlink()
    train_wordpiece(["otro vocabulario distinto"], vocab_size=60).save_pretrained(retokenized / "layer_3")
    with pytest.raises(ValueError, match="tokenizer in layer_3/ has a different vocabulary"):
        hf_pipeline.load_pipeline(retokenized)
    relabelled = shutil.copytree(tiny_bundle, tmp_path / "labels")
    config = json.loads((relabelled / "layer_3" / "config.json").read_text())
    config["id2label"]["1"], config["label2id"] = "B-Other", {}
    (relabelled / "layer_3" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="Layer 3 has labels"):
        hf_pipeline.load_pipeline(relabelled)


def test_missing_layer_folder_is_a_clear_error(tiny_bundle, tmp_path):
    broken = shutil.copytree(tiny_bundle, tmp_path / "b")
    shutil.rmtree(broken / "layer_3")
    with pytest.raises(OSError, match="has no layer_3/config.json"):
        hf_pipeline.load_pipeline(broken)


def test_shared_bundle_predicts_exactly_what_its_sliced_heads_predict(shared_bundle, tmp_path):
    shared = hf_pipeline.load_pipeline(shared_bundle)
    assert shared.architecture == "shared" and len(shared.layer_models) == 1 and shared.layer_numbers == [1, 2, 3]
    assert not (shared_bundle / "layer_2").exists() and (shared_bundle / "words.py").is_file()
    sliced = hf_pipeline.save_bundle(split_shared(shared.model), shared.tokenizer, tmp_path / "sliced")
    per_layer = hf_pipeline.load_pipeline(sliced)
    assert per_layer.architecture == "per_layer" and len(per_layer.layer_models) == 3
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "test").documents]
    expected = per_layer(texts)
    assert {e["layer"] for doc in expected for e in doc} == {1, 2, 3}
    assert_same_entities(shared(texts), expected)


def test_inconsistent_shared_bundle_is_refused(shared_bundle, tmp_path):
    broken = shutil.copytree(shared_bundle, tmp_path / "broken")
    config = json.loads((broken / "config.json").read_text())
    config["ner_layers"] = [1, 2]
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="so its classifier needs 42 outputs, but it has 63"):
        hf_pipeline.load_pipeline(broken)


def crf_models(layers=(1, 2, 3), seed: int = 0) -> tuple[list, object, list[str]]:
    """Tiny per-layer models with random CRF transitions in their configs (as training leaves them)."""
    torch.manual_seed(seed)
    tokenizer = train_wordpiece(sample_texts(), vocab_size=400, model_max_length=64)
    labels = label_names(SPRADIE_TYPES)
    models = [build_tiny_model(tokenizer, labels, 64, hidden_size=32) for _ in layers]
    rng = np.random.default_rng(seed)
    for model in models:
        setattr(model.config, TRANSITIONS_KEY, rng.normal(size=(1, len(labels), len(labels))).tolist())
    return models, tokenizer, labels


def test_crf_bundle_decodes_each_layer_by_viterbi_over_its_transitions(tmp_path):
    models, tokenizer, labels = crf_models()
    bundle = hf_pipeline.save_bundle(models, tokenizer, tmp_path / "crf")
    assert json.loads((bundle / "config.json").read_text())["ner_decoder"] == "crf"
    ner = hf_pipeline.load_pipeline(bundle)
    assert ner.decoder == "crf"
    text = "Quiste de 3,5 mm en RD, leve ectasia piélica."
    spans = word_spans(text)
    encoded = ner.tokenizer([text[s:e] for s, e in spans], is_split_into_words=True, return_tensors="pt")
    first = [encoded.word_ids().index(w) for w in range(len(spans))]
    expected = []
    with torch.no_grad():
        for model in ner.layer_models:
            emissions = model(**encoded).logits[0, first].log_softmax(-1).double().numpy()
            transitions = np.array(getattr(model.config, TRANSITIONS_KEY)[0])
            path = viterbi(emissions, transitions, labels)
            probabilities = marginals(emissions, transitions, labels)[np.arange(len(path)), path]
            for span in decode_bio([labels[i] for i in path]):
                score = float(np.mean(probabilities[span.first : span.last + 1]))
                expected.append((span.type, spans[span.first][0], spans[span.last][1], score))
    assert_pipeline_returns_merged_and_nested(ner, text, expected, SPRADIE_TYPES)
    argmax = hf_pipeline.load_pipeline(make_bundle(tmp_path / "plain"))
    assert argmax.decoder == "softmax" and argmax.head_parameters == [None, None, None]


def test_crf_bundle_layers_load_in_the_stock_pipeline_and_in_a_fresh_process(tmp_path):
    models, tokenizer, labels = crf_models()
    bundle = hf_pipeline.save_bundle(models, tokenizer, tmp_path / "crf")
    for layer in ("", "layer_2"):
        assert_stock_tokens(REPORT, pipeline("token-classification", model=str(bundle / layer))(REPORT), labels)
    local = hf_pipeline.load_pipeline(bundle)(REPORT)
    assert_same_entities([predict_in_fresh_process(bundle, tmp_path)], [json.loads(json.dumps(local))])


def test_shared_crf_bundle_predicts_what_its_per_layer_slices_predict(tmp_path):
    models, tokenizer, labels = crf_models()
    config = models[0].config
    make_shared_config(config, labels, [1, 2, 3])
    setattr(config, TRANSITIONS_KEY, [getattr(m.config, TRANSITIONS_KEY)[0] for m in models])
    from transformers import BertForTokenClassification

    shared = hf_pipeline.load_pipeline(
        hf_pipeline.save_bundle([BertForTokenClassification(config)], tokenizer, tmp_path / "s")
    )
    sliced = hf_pipeline.load_pipeline(hf_pipeline.save_bundle(split_shared(shared.model), tokenizer, tmp_path / "p"))
    assert (shared.decoder, sliced.decoder) == ("crf", "crf")
    texts = [doc.text for doc in read_corpus(SAMPLE_CORPUS / "test").documents]
    assert_same_entities(shared(texts), sliced(texts))


def test_crf_bundles_that_do_not_add_up_are_refused(tmp_path):
    models, tokenizer, _ = crf_models()
    plain = make_bundle(tmp_path / "plain")
    with pytest.raises(ValueError, match="a CRF head .* or none"):
        hf_pipeline.save_bundle([models[0], *[AutoModelForTokenClassification.from_pretrained(plain / "layer_2")]],
                                tokenizer, tmp_path / "mixed", layers=[1, 2])  # fmt: skip
    bundle = hf_pipeline.save_bundle(models, tokenizer, tmp_path / "crf")
    config = json.loads((bundle / "layer_3" / "config.json").read_text())
    del config[TRANSITIONS_KEY]
    (bundle / "layer_3" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hold 2 transition matrices for layers \\[1, 2, 3\\]"):
        hf_pipeline.load_pipeline(bundle)
