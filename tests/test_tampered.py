"""A bundle whose config or tokenizer was damaged or swapped is refused when loaded, with the key and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import hf_pipeline

from .helpers import make_shared_bundle


@pytest.fixture(scope="module")
def crf_shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = make_shared_bundle(tmp_path_factory.mktemp("crf") / "bundle")
    config = json.loads((bundle / "config.json").read_text())
    labels = len(config["ner_labels"])
    config["ner_decoder"] = "crf"
    config["ner_crf_transitions"] = [[[0.0] * labels for _ in range(labels)] for _ in config["ner_layers"]]
    (bundle / "config.json").write_text(json.dumps(config))
    assert hf_pipeline.load_pipeline(bundle).decoder == "crf"
    return bundle


def tampered(bundle: Path, folder: Path, **changes) -> Path:
    copy = shutil.copytree(bundle, folder / "copy")
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def nan_transitions(bundle: Path) -> list:
    matrices = json.loads((bundle / "config.json").read_text())["ner_crf_transitions"]
    matrices[0][1][2] = float("nan")
    return matrices


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ner_decoder": "banana"}, "ner_decoder.*banana"),
        ({"ner_scheme": "banana"}, "ner_scheme.*banana"),
        ({"ner_window": -5}, "ner_window.*-5"),
        ({"ner_window": 3.5}, "ner_window.*3.5"),
        ({"ner_crf_transitions": "nan"}, "NaN or infinite"),
        ({"ner_labels": "reordered"}, "labels of tag sequence 1"),
        ({"ner_labels": "not IOB2"}, "labels of tag sequence 1"),
    ],
)
def test_a_damaged_config_is_refused_with_the_key_and_the_fix(crf_shared, tmp_path, change, message):
    config = json.loads((crf_shared / "config.json").read_text())
    values = {
        "nan": nan_transitions(crf_shared),
        "reordered": [config["ner_labels"][1], config["ner_labels"][0], *config["ner_labels"][2:]],
        "not IOB2": ["O", *(label.replace("B-", "X-") for label in config["ner_labels"][1:])],
    }
    change = {key: values.get(value, value) if isinstance(value, str) else value for key, value in change.items()}
    with pytest.raises(ValueError, match=message):
        hf_pipeline.load_pipeline(tampered(crf_shared, tmp_path, **change))


def test_a_tokenizer_from_another_bundle_or_none_is_refused(crf_shared, tmp_path):
    other = make_shared_bundle(tmp_path / "other", seed=3)
    swapped = shutil.copytree(crf_shared, tmp_path / "swapped")
    from transformers import AutoTokenizer

    smaller = AutoTokenizer.from_pretrained(other)
    vocabulary = dict(list(smaller.get_vocab().items())[:300])  # another, smaller WordPiece vocabulary
    (swapped / "tokenizer.json").unlink()
    (swapped / "vocab.txt").write_text("\n".join(sorted(vocabulary, key=vocabulary.get)) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not the ones this bundle was saved with"):
        hf_pipeline.load_pipeline(swapped)
    bare = shutil.copytree(crf_shared, tmp_path / "bare")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises((ValueError, OSError)):
        hf_pipeline.load_pipeline(bare)


def test_an_int8_graph_of_another_model_or_a_garbage_one_is_refused(tmp_path):
    from hf_pipeline.bundle import add_int8

    first, second = make_shared_bundle(tmp_path / "first"), make_shared_bundle(tmp_path / "second", seed=4)
    add_int8(first)
    add_int8(second)
    assert hf_pipeline.load_pipeline(first, quantize="int8")("Quiste renal.") is not None
    graph = "onnx/model.int8.onnx"
    shutil.copyfile(second / graph, first / graph)
    with pytest.raises(ValueError, match="not exported from this bundle's weights.*add_int8"):
        hf_pipeline.load_pipeline(first, quantize="int8")
    (first / graph).write_bytes(b"not a graph at all")
    with pytest.raises(ValueError, match="not a readable ONNX graph"):
        hf_pipeline.load_pipeline(first, quantize="int8")


def test_push_to_hub_dry_run_refuses_what_the_pipeline_refuses(crf_shared, tmp_path, capsys):
    from hf_pipeline.bundle import add_int8
    from push_to_hub import main as push

    def dry_run(bundle: Path) -> int:
        return push(["model", "--model_dir", str(bundle), "--repo_id", "org/m", "--dry_run"])

    assert dry_run(crf_shared) == 0, capsys.readouterr().err
    assert dry_run(tampered(crf_shared, tmp_path, ner_crf_transitions=nan_transitions(crf_shared))) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    first, second = make_shared_bundle(tmp_path / "first"), make_shared_bundle(tmp_path / "second", seed=4)
    add_int8(first)
    add_int8(second)
    assert dry_run(first) == 0, capsys.readouterr().err
    shutil.copyfile(second / "onnx" / "model.int8.onnx", first / "onnx" / "model.int8.onnx")
    assert dry_run(first) == 2
    assert "not exported from this bundle's weights" in capsys.readouterr().err
