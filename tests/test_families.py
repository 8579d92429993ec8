"""Every encoder family a user fine-tunes, with both architectures, every head and every scheme: train a few
steps from a tiny random base checkpoint of that family (tests/families.py), load the bundle in a fresh process
with trust_remote_code, predict texts with accents, CRLF and punctuation glued to words, and check every offset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hf_dataset.card import export
from train import main as train_main

from .families import FAMILIES, build_base, build_with_head
from .helpers import run_fresh, sample_texts

pytestmark = pytest.mark.slow
HOSTILE_TEXTS = [
    "Riñón derecho:5,4cm (RD).\r\nECOGRAFÍA—sin cambios;¿quiste?\r\nNódulo hipoecogénico de 3x2mm.",
    "Hígado: ecoestructura homogénea,vesícula sin litiasis.\r\n\r\nConclusión:normal.",
]
# Every family with the paper's architecture (softmax), with the shared encoder + CRF head, with the type scheme
# + CRF head and with the span head; the other combinations on BERT (cased) and XLM-R.
COMBINATIONS = [
    *[(family, "per_layer", "softmax", "depth") for family in FAMILIES],
    *[(family, "shared", "crf", "depth") for family in FAMILIES],
    *[(family, "shared", "crf", "type") for family in FAMILIES],
    *[(family, "shared", "span", "span") for family in FAMILIES],
    ("bert-cased", "per_layer", "crf", "depth"),
    ("bert-cased", "shared", "softmax", "depth"),
    ("bert-cased", "shared", "softmax", "type"),
    ("xlm-roberta", "per_layer", "crf", "depth"),
]
TRAIN_OPTIONS = ["--max_steps", "3", "--learning_rate", "1e-4", "--max_seq_length", "64", "--doc_stride", "16",
                 "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "1"]  # fmt: skip
FRESH_PREDICT = """
import json, sys
from transformers import pipeline
texts, report = json.loads(sys.argv[1]), {}
for name, folder in json.loads(sys.argv[2]).items():
    ner = pipeline("radiology-ner", model=folder, trust_remote_code=True)
    outputs = ner(texts)
    report[name] = {
        "entities": sum(map(len, outputs)),
        "offsets_exact": all(t[e["start"]:e["end"]] == e["word"] for t, o in zip(texts, outputs) for e in o),
        "architecture": ner.architecture, "decoder": ner.decoder, "scheme": ner.scheme, "layers": ner.layer_numbers,
    }
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import hf_dataset

    dataset, builder = hf_dataset.build(None)
    return export(dataset, builder, tmp_path_factory.mktemp("data") / "sample", license="apache-2.0")


def name_of(family: str, architecture: str, decoder: str, scheme: str) -> str:
    return f"{family}-{architecture}-{decoder}-{scheme}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path) -> dict[str, dict]:
    """Train every combination in this process, then load and predict them all in one fresh process."""
    root, texts = tmp_path_factory.mktemp("families"), sample_texts()
    bases = {family: build_base(family, root / "bases" / family, texts, max_positions=64) for family in FAMILIES}
    results, bundles = {}, {}
    for combination in COMBINATIONS:
        family, architecture, decoder, scheme = combination
        name = name_of(*combination)
        out = root / "runs" / name
        scores = train_main(["--dataset", str(dataset_dir), "--model_name_or_path", str(bases[family]),
                             "--architecture", architecture, "--decoder", decoder, "--scheme", scheme,
                             "--output_dir", str(out), *TRAIN_OPTIONS])  # fmt: skip
        results[name] = {"trained": "test" in scores and (out / "model" / "config.json").is_file()}
        if decoder == "span":
            keep_every_span(out / "model")
        bundles[name] = str(out / "model")
    fresh = json.loads(
        run_fresh(
            f"import sys; sys.argv += [{json.dumps(json.dumps(HOSTILE_TEXTS))}, {json.dumps(json.dumps(bundles))}]"
            + FRESH_PREDICT,
            root,
        ).splitlines()[-1]
    )
    for name in results:
        results[name].update(fresh[name])
    print("\n| family | architecture | decoder | scheme | trained | fresh load | offsets exact | entities predicted |")
    print("| --- | --- | --- | --- | --- | --- | --- | ---: |")
    for (family, architecture, decoder, scheme), name in zip(COMBINATIONS, results):
        r = results[name]
        loaded = (r["decoder"], r["scheme"]) == (decoder, scheme)
        print(f"| {family} | {architecture} | {decoder} | {scheme} | {r['trained']} | {loaded} | "
              f"{r['offsets_exact']} | {r['entities']} |")  # fmt: skip
    return results


def keep_every_span(bundle: Path) -> None:
    """Three steps teach a span head nothing: a threshold under its initial probability returns every span scored,
    so that the offsets check checks something."""
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    config["ner_span_threshold"] = 0.001
    (bundle / "config.json").write_text(json.dumps(config), encoding="utf-8")


@pytest.mark.parametrize(("family", "architecture", "decoder", "scheme"), COMBINATIONS)
def test_family_trains_loads_fresh_and_predicts_exact_offsets(trained, family, architecture, decoder, scheme):
    result = trained[name_of(family, architecture, decoder, scheme)]
    assert result["trained"]
    assert (result["architecture"], result["decoder"], result["scheme"]) == (architecture, decoder, scheme)
    assert result["layers"] == [1, 2, 3]
    assert result["entities"] > 0  # a barely trained model tags plenty: the offsets check checks something
    assert result["offsets_exact"]


def test_a_base_with_a_head_of_another_size_starts_a_new_head_and_says_so_once(tmp_path, dataset_dir, caplog):
    base = build_with_head(tmp_path / "published-ner", sample_texts(), num_labels=5)
    out = tmp_path / "run"
    with caplog.at_level("INFO", logger="train"):
        train_main(["--dataset", str(dataset_dir), "--model_name_or_path", str(base), "--output_dir", str(out),
                    *TRAIN_OPTIONS])  # fmt: skip
    said = [r.getMessage() for r in caplog.records if "head starts afresh" in r.getMessage()]
    assert len(said) == 1 and re.search(r"head of 5 labels; this run needs \d+", said[0]), said
    config = json.loads((out / "model" / "config.json").read_text(encoding="utf-8"))
    assert len(config["id2label"]) == len(
        json.loads((out / "model" / "layer_2" / "config.json").read_text())["id2label"]
    )
    assert "LABEL_0" not in config["id2label"].values()
