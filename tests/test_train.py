"""train.py: label alignment with windows, argument parsing, the offline error, and a short tiny-preset run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from hf_dataset import SAMPLE_CORPUS
from hf_pipeline.radiology_ner import window_starts
from hf_pipeline.score import score_folders
from train import TINY_PRESET, align_labels, parse_arguments, train_wordpiece, windowed_features

from .conftest import REPO, sample_texts
from .test_pipeline import run_fresh


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(sample_texts(), vocab_size=300)


def test_align_labels_first_subword_only():
    assert align_labels([None, 0, 1, 1, 1, 2, None], [5, 6, 0]) == [-100, 5, 6, -100, -100, 0, -100]


def test_windows_label_each_words_first_subword_and_cover_every_word(tokenizer):
    words = ["Hidronefrosis", "leve", "del", "RD", ",", "ecogenicidad", "conservada", "."] * 6
    labels = [1, 2, 0, 3, 0, 5, 6, 0] * 6
    max_length, stride = 12, 4
    features = windowed_features(words, labels, tokenizer, max_length, stride)
    word_ids = tokenizer(words, is_split_into_words=True, add_special_tokens=False).word_ids()
    starts = window_starts(len(word_ids), max_length - 2, overlap=stride)
    assert len(features) == len(starts) > 1
    labelled = set()
    for start, feature in zip(starts, features):
        ids = feature["input_ids"]
        assert len(ids) <= max_length and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert len(feature["labels"]) == len(ids) == len(feature["attention_mask"])
        assert feature["labels"][0] == feature["labels"][-1] == -100
        for offset, label in enumerate(feature["labels"][1:-1]):
            word = word_ids[start + offset]
            if label != -100:
                assert label == labels[word] and word_ids.index(word) == start + offset
                labelled.add(word)
            else:
                assert word_ids.index(word) < start + offset  # a continuation subword
    assert labelled == set(range(len(words)))


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
