"""train.py: label alignment with windows, argument parsing, the offline error, and a short tiny-preset run."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from transformers import BertModel, EvalPrediction, TrainingArguments

import hf_dataset
from hf_dataset import SAMPLE_CORPUS
from hf_dataset.card import export
from hf_pipeline.score import score_folders
from hf_pipeline.training.arguments import TINY_PRESET, DataArguments, NerTrainingArguments, parse_arguments
from hf_pipeline.training.base_models import build_tiny_model, check_model_reachable, train_wordpiece
from hf_pipeline.training.data import align_labels, layered_loss, windowed_features, windowed_split
from hf_pipeline.training.metrics import entity_metrics
from hf_pipeline.training.schemes import DepthEncoding
from hf_pipeline.training.trainer import CONSOLE_REPORTS
from hf_pipeline.words import window_starts
from train import main as train_main

from .helpers import REPO, fill_hub_cache, repo_files, run_fresh, sample_texts


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(sample_texts(), vocab_size=300)


def test_align_labels_first_subword_only():
    assert align_labels([None, 0, 1, 1, 1, 2, None], [5, 6, 0]) == [-100, 5, 6, -100, -100, 0, -100]


def test_windows_label_each_words_first_subword_and_cover_every_word(tokenizer):
    words = ["Hidronefrosis", "leve", "del", "RD", ",", "ecogenicidad", "conservada", "."] * 6
    labels = [1, 2, 0, 3, 0, 5, 6, 0] * 6
    second_layer = [0, 0, 0, 1, 0, 0, 0, 0] * 6
    max_length, stride = 12, 4
    features, windows = windowed_features(words, [labels, second_layer], tokenizer, max_length, stride)
    word_ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
    starts = window_starts(len(word_ids), max_length - 2, overlap=stride)
    assert len(features) == len(starts) > 1 and windows.starts == starts and windows.word_ids == word_ids
    labelled = set()
    for start, feature in zip(starts, features):
        ids = feature["input_ids"]
        assert len(ids) <= max_length and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert len(feature["labels"]) == len(ids) == len(feature["attention_mask"])
        assert feature["labels"][0] == feature["labels"][-1] == [-100, -100]
        for offset, (label, second) in enumerate(feature["labels"][1:-1]):
            word = word_ids[start + offset]
            if label != -100:
                assert (label, second) == (labels[word], second_layer[word])
                assert word_ids.index(word) == start + offset
                labelled.add(word)
            else:
                assert second == -100 and word_ids.index(word) < start + offset  # a continuation subword
    assert labelled == set(range(len(words)))


def test_layered_loss_of_one_layer_is_the_stock_token_classification_loss():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    labels[0, 0] = -100
    stock = torch.nn.functional.cross_entropy(logits.view(-1, 7), labels.view(-1))
    assert layered_loss(SimpleNamespace(logits=logits), labels[..., None]) == pytest.approx(stock.item())
    two_layers = torch.cat([logits, logits.roll(1, dims=-1)], dim=-1)
    second = torch.nn.functional.cross_entropy(logits.roll(1, dims=-1).view(-1, 7), labels.view(-1))
    both = layered_loss(SimpleNamespace(logits=two_layers), torch.stack([labels, labels], dim=-1))
    assert both == pytest.approx(stock.item() + second.item())


def test_validation_metric_is_the_task_exact_f1_of_what_the_bundle_decodes(tokenizer):
    dataset, _ = hf_dataset.build()
    split = dataset["validation"]
    encoding = DepthEncoding(dataset, [1, 2])
    windows, documents = windowed_split(split, encoding.word_labels, tokenizer, 24, None)
    assert all(d.starts == window_starts(len(d.word_ids), 22) for d in documents)  # the pipeline's windows
    gold_ids = np.array(_padded(windows["labels"]))  # [window, token, sequence]
    labels = len(encoding.sequence_labels[0])
    one_hot = (gold_ids[..., None] == np.arange(labels)).astype(np.float32)  # -100: no label, decoded as O
    metrics = entity_metrics(split, documents, encoding, "softmax", lambda: [None, None])
    perfect = metrics(EvalPrediction(predictions=one_hot, label_ids=gold_ids))
    oracle = [e for row in split for e in row["entities"] if e["layer"] in (1, 2)]
    assert len(oracle) > 100 and perfect["exact_f1"] > 0.95 and perfect["nested_exact_f1"] > 0.9
    assert perfect["lenient_f1"] >= perfect["exact_f1"]
    nothing = metrics(EvalPrediction(predictions=np.zeros_like(one_hot), label_ids=gold_ids))
    assert nothing["exact_f1"] == 0.0
    # The two sequences swapped: the task figure pools them, so it holds.
    swapped = metrics(EvalPrediction(predictions=one_hot[:, :, ::-1].copy(), label_ids=gold_ids))
    assert swapped["exact_f1"] == perfect["exact_f1"]
    crf = entity_metrics(split, documents, encoding, "crf", lambda: [np.zeros((labels, labels))] * 2)
    assert crf(EvalPrediction(predictions=one_hot, label_ids=gold_ids))["exact_f1"] == perfect["exact_f1"]


def _padded(rows: list[list[list[int]]]) -> list[list[list[int]]]:
    width = max(len(row) for row in rows)
    return [row + [[-100] * len(row[0])] * (width - len(row)) for row in rows]


def test_every_training_argument_reaches_the_trainer():
    """A field NerTrainingArguments declares but TrainingArguments lacks would be parsed and never used
    (transformers 5 dropped warmup_ratio: the warm-up was silently off)."""
    stock = {f.name for f in dataclasses.fields(TrainingArguments)}
    ours = {f.name for f in dataclasses.fields(NerTrainingArguments)}
    assert ours == stock
    overridden = [name for name in NerTrainingArguments.__dataclass_fields__ if name in vars(NerTrainingArguments)]
    assert {"warmup_steps", "learning_rate", "metric_for_best_model"} <= set(overridden)
    for key in TINY_PRESET:
        assert key in stock | {f.name for f in dataclasses.fields(DataArguments)}, key


def test_preset_fills_defaults_that_explicit_arguments_override(tmp_path):
    data, model, training = parse_arguments(["--preset", "tiny", "--num_train_epochs", "3", "--output_dir", "x"])
    assert training.num_train_epochs == 3 and training.learning_rate == TINY_PRESET["learning_rate"]
    assert data.max_seq_length == TINY_PRESET["max_seq_length"] and model.layers == [1, 2, 3]
    config = tmp_path / "args.json"
    config.write_text(json.dumps({"preset": "tiny", "output_dir": "y", "layers": [1, 2], "doc_stride": 16}))
    data, model, training = parse_arguments([str(config)])
    assert (model.layers, data.doc_stride, training.output_dir) == ([1, 2], 16, "y")
    assert training.num_train_epochs == TINY_PRESET["num_train_epochs"]
    data, model, training = parse_arguments([])
    assert model.model_name_or_path == "bert-base-multilingual-cased" and training.learning_rate == 5e-5
    with pytest.raises(ValueError, match="including 1"):
        parse_arguments(["--layers", "2", "3"])


def test_without_preset_and_network_it_fails_within_seconds(tmp_path):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "--preset tiny" in result.stderr and "local folder" in result.stderr
    assert elapsed < 60  # mostly import time; no Hub retries


HUB_BASE_MODEL = "PlanTL-GOB-ES/bsc-bio-ehr-es"  # the id of the bug report that took any "org/name" for a folder


def tiny_base_model(folder) -> dict[str, bytes]:
    """The files of a tiny BERT encoder with its tokenizer, as a Hub model repo holds them."""
    tokenizer = train_wordpiece(sample_texts(), vocab_size=300, model_max_length=128)
    encoder = BertModel(build_tiny_model(tokenizer, ["O"], max_position_embeddings=128, hidden_size=32).config)
    encoder.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return repo_files(folder)


def test_a_namespaced_base_model_in_the_hub_cache_trains_offline(tmp_path, monkeypatch):
    fill_hub_cache({("model", HUB_BASE_MODEL): tiny_base_model(tmp_path / "base")}, tmp_path / "cache", monkeypatch)
    monkeypatch.chdir(tmp_path)
    check_model_reachable(HUB_BASE_MODEL)  # refused as "no such folder" before
    args = ["--model_name_or_path", HUB_BASE_MODEL, "--max_steps", "1", "--layers", "1", "--max_seq_length", "128"]
    train_main([*args, "--doc_stride", "32", "--per_device_train_batch_size", "4", "--output_dir", "out"])
    metadata, card = _card(tmp_path / "out")
    assert metadata["base_model"] == HUB_BASE_MODEL and f"fine-tuned from `{HUB_BASE_MODEL}`" in card


@pytest.mark.parametrize("name", ["./x", "runs/x", "C:\\models\\x", "/no/such/model"])
def test_a_missing_local_base_model_is_no_such_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(SystemExit, match=f"^--model_name_or_path {re.escape(name)}: no such folder"):
        check_model_reachable(name)


def test_a_hub_base_model_not_cached_offline_says_what_to_do(tmp_path, monkeypatch):
    fill_hub_cache({}, tmp_path / "cache", monkeypatch)
    with pytest.raises(SystemExit) as caught:
        check_model_reachable(HUB_BASE_MODEL)
    message = str(caught.value)
    assert message.startswith(f"--model_name_or_path {HUB_BASE_MODEL}: no such folder, and the Hub model")
    assert "HF_HUB_OFFLINE=1 is set" in message and "local folder" in message and "--preset tiny" in message


@pytest.mark.slow
def test_short_tiny_run_produces_bundle_results_and_predictions(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", "--preset", "tiny", "--num_train_epochs", "2", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results) == {"train", "validation", "test"}
    for split, figures in results.items():
        for strategy in ("exact", "lenient"):
            assert set(figures[strategy]) == {"precision", "recall", "f1"}
        assert set(figures["oracle"]) == {"exact_f1", "lenient_f1"} and figures["oracle"]["exact_f1"] > 0.9
        assert set(figures["per_type"]) >= {"Finding", "Anatomical_Entity"}
        report = score_folders(SAMPLE_CORPUS / split, out / "predictions" / split).to_dict()
        assert report["missing_predictions"] == 0
        assert report["lenient"]["f1"] == pytest.approx(figures["lenient"]["f1"])
    card = (out / "model" / "README.md").read_text()
    assert "model-index" in card and "lenient" in card.lower()
    code = (
        "from transformers import pipeline\n"
        f"ner = pipeline('radiology-ner', model={str(out / 'model')!r}, trust_remote_code=True)\n"
        "print(len(ner.layer_models), isinstance(ner('Quiste simple en el RD.'), list))"
    )
    assert run_fresh(code, tmp_path).strip().splitlines()[-1] == "3 True"
    # An interrupted run resumes: finished layers are reloaded, not trained again.
    shutil.rmtree(out / "checkpoints" / "layer_3")
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "layer 1: already trained" in resumed.stderr and "layer 3: already trained" not in resumed.stderr


@pytest.mark.slow
def test_the_same_script_runs_data_parallel_under_torchrun(tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py"]
    command += ["--preset", "tiny", "--num_train_epochs", "2", "--layers", "1", "2", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "parallel_mode != ParallelMode.DISTRIBUTED" not in result.stderr
    assert set(json.loads((out / "eval_results.json").read_text())) == {"train", "validation", "test"}
    assert json.loads((out / "model" / "config.json").read_text())["ner_layers"] == [1, 2]


def _card(out) -> tuple[dict, str]:
    text = (out / "model" / "README.md").read_text(encoding="utf-8")
    return yaml.safe_load(text.split("---")[1]), text


def _logged_steps(out, title: str) -> list[dict]:
    lines = re.findall(rf"{title} step \d+: (\{{.*\}})", (out / "train.log").read_text(encoding="utf-8"))
    return [json.loads(line) for line in lines]


def test_warm_up_is_real_and_the_card_records_what_ran(tmp_path):
    out = tmp_path / "run"
    train_main(
        ["--preset", "tiny", "--max_steps", "40", "--logging_steps", "1", "--layers", "1", "--output_dir", str(out)]
    )
    rates = [step["learning_rate"] for step in _logged_steps(out, "layer 1") if "learning_rate" in step]
    assert len(rates) == 40 and rates[0] < max(rates) / 2  # tiny preset: 5% of 40 steps = 2 warm-up steps
    assert rates.index(max(rates)) == 2  # the rate after step 2 is the peak
    metadata, card = _card(out)
    assert metadata["license"] == "apache-2.0"  # the bundled sample's own license
    assert "| `optimizer steps done` | layer 1: 40 |" in card and "| `warm-up steps (effective)` | layer 1: 2 |" in card
    assert "| `epochs done` | layer 1: 13.33 |" in card and "150" not in card.split("## Training")[1].split("##")[0]
    assert "warmup_ratio" not in card and str(tmp_path) not in card
    assert "| `window (max_seq_length, tokens)` | 128 |" in card and "| `architecture` | per_layer |" in card
    assert json.loads((out / "model" / "config.json").read_text())["ner_window"] == 128


def test_license_comes_from_the_dataset_card_and_paths_stay_out(tmp_path):
    dataset, builder = hf_dataset.build()
    folder = export(dataset, builder, tmp_path / "my-corpus", license="cc-by-nc-sa-4.0")
    out = tmp_path / "run"
    train_main(
        ["--preset", "tiny", "--max_steps", "2", "--layers", "1", "--dataset", str(folder), "--output_dir", str(out)]
    )
    metadata, card = _card(out)
    assert metadata["license"] == "cc-by-nc-sa-4.0" and "datasets" not in metadata
    assert "`my-corpus`" in card and str(tmp_path) not in card
    args = ["--preset", "tiny", "--max_steps", "2", "--layers", "1", "--brat_dir", str(SAMPLE_CORPUS)]
    train_main([*args, "--output_dir", str(tmp_path / "brat")])
    assert _card(tmp_path / "brat")[0]["license"] == "unknown"  # never a permissive default for a user's corpus
    train_main([*args, "--license", "mit", "--output_dir", str(tmp_path / "mit")])
    assert _card(tmp_path / "mit")[0]["license"] == "mit"


def test_brat_dir_takes_skip_invalid_discontinuous_and_max_layers(tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(SAMPLE_CORPUS, corpus, ignore=shutil.ignore_patterns("README.md"))
    ann = sorted((corpus / "train").glob("*.ann"))[0]
    lines = ann.read_text(encoding="utf-8").splitlines()
    name, header, text = lines[0].split("\t")
    lines[0] = f"{name}\t{header.split()[0]} 0 3\tXYZ-not-the-text"
    ann.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--preset", "tiny", "--max_steps", "2", "--layers", "1", "--brat_dir", str(corpus)]
    with pytest.raises(SystemExit, match="skip_invalid"):
        train_main([*args, "--output_dir", str(tmp_path / "refused")])
    out = tmp_path / "skipped"
    train_main([*args, "--skip_invalid", "--max_layers", "2", "--discontinuous", "split", "--output_dir", str(out)])
    assert json.loads((out / "model" / "config.json").read_text())["ner_layers"] == [1]
    assert set(json.loads((out / "eval_results.json").read_text())) == {"train", "validation", "test"}
    with pytest.raises(SystemExit, match="only 2 tag layers"):
        train_main([*args, "--skip_invalid", "--max_layers", "2", "--layers", "1", "3", "--output_dir", str(out)])


def train_help(flag: str) -> str:
    result = subprocess.run([sys.executable, "train.py", flag], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_help_fits_one_screen_and_shows_the_projects_options_first():
    short = train_help("--help")
    lines = short.splitlines()
    assert len(lines) <= 50 and max(map(len, lines)) <= 100
    options = re.findall(r"^  --(\w+)", short, re.MULTILINE)
    assert options[:3] == ["dataset", "brat_dir", "types"]
    assert {"decoder", "architecture", "learning_rate"} <= set(options) and "--help_all" in lines[-1]
    full = train_help("--help_all")
    assert "--gradient_accumulation_steps" in full and len(full.splitlines()) > 300


def test_tiny_log_is_short_and_says_which_layer_trains(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "train.py", "--preset", "tiny", "--max_steps", "30", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    console = (result.stdout + result.stderr).replace("\r", "\n")
    for layer in (1, 2, 3):
        assert f"INFO train: training layer {layer}" in console
        progress = re.findall(rf"INFO train: layer {layer}: step (\d+)/30, epoch", console)  # not a terminal: lines
        assert 5 <= len(progress) <= CONSOLE_REPORTS + 1 and progress[-1] != progress[0]
    assert "pin_memory" not in console and "Writing model shards" not in console and "{'loss'" not in console
    assert "LOAD REPORT" not in console
    assert len(result.stdout.splitlines()) + len(result.stderr.splitlines()) < 40 + 3 * (CONSOLE_REPORTS + 1)
    assert "| test |" in result.stdout and len(_logged_steps(out, "layer 3")) >= 1


@pytest.mark.slow
def test_shared_architecture_trains_resumes_and_loads_in_a_fresh_process(tmp_path):
    out = tmp_path / "shared"
    command = [sys.executable, "train.py", "--preset", "tiny", "--architecture", "shared", "--num_train_epochs", "4"]
    command += ["--eval_strategy", "epoch", "--load_best_model_at_end", "true", "--output_dir", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["ner_architecture"] == "shared" and len(config["id2label"]) == 3 * len(config["ner_labels"])
    assert not (out / "model" / "layer_2").exists()
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["test"]["per_layer"]) == {"1", "2", "3"}
    title = r"depth scheme, 3 tag sequences \(shared encoder\)"
    logged = [s for s in _logged_steps(out, title) if "eval_exact_f1" in s]
    assert len(logged) == 4 and all("eval_nested_exact_f1" in s and "eval_flat_exact_f1" in s for s in logged)
    assert "| `architecture` | shared |" in _card(out)[1] and "Architecture: `shared`" in _card(out)[1]
    code = (
        "from transformers import pipeline\n"
        f"ner = pipeline('radiology-ner', model={str(out / 'model')!r}, trust_remote_code=True)\n"
        "print(len(ner.layer_models), ner.architecture, isinstance(ner('Quiste simple en el RD.'), list))"
    )
    assert run_fresh(code, tmp_path).strip().splitlines()[-1] == "1 shared True"
    resumed = subprocess.run(command + ["--resume"], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "depth scheme, 3 tag sequences (shared encoder): already trained" in resumed.stderr


def test_head_learning_rate_applies_to_every_new_weight_and_only_to_them(tmp_path):
    """--head_learning_rate: the classifier and a head attached beside the encoder (here the span scorer) learn at
    it, the pretrained encoder at --learning_rate; Trainer's weight decay split is kept in both."""
    from transformers import BertConfig, BertForTokenClassification

    from hf_pipeline.training.heads import SpanScorer
    from hf_pipeline.training.trainer import NerTrainer

    model = BertForTokenClassification(
        BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    )
    model.span_head = SpanScorer(types=3, dims=1, max_words=2)
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-4, weight_decay=0.1, report_to=[])
    rates = {}
    for head_rate in (None, 5e-3):
        optimizer = NerTrainer(model=model, args=args, head_learning_rate=head_rate).create_optimizer()
        rates[head_rate] = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    assert len(rates[5e-3]) == len(list(model.parameters())) == len(rates[None])
    for name, parameter in model.named_parameters():
        encoder = name.startswith("bert.")
        assert rates[5e-3][id(parameter)][0] == (1e-4 if encoder else 5e-3), name
        assert rates[5e-3][id(parameter)][1] == rates[None][id(parameter)][1], name  # the same decay as Trainer's
        assert rates[None][id(parameter)][0] == 1e-4
    assert {decay for _, decay in rates[5e-3].values()} == {0.0, 0.1}
    with pytest.raises(ValueError, match="head_learning_rate"):
        parse_arguments(["--head_learning_rate", "0"])
