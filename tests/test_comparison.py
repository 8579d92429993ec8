"""Nested and flat figures of the scorer, and the paired bootstrap comparison of two prediction folders."""

from __future__ import annotations

import json

import pytest

from hf_dataset import SAMPLE_CORPUS, read_corpus, write_ann
from hf_dataset.entities import Entity
from hf_pipeline.score import main as score_main
from hf_pipeline.scoring import paired_bootstrap, score


def e(type_: str, start: int, end: int) -> Entity:
    return Entity(type_, ((start, end),))


def test_nested_and_flat_follow_their_definition():
    # gold: a Finding holding an ANAT (both nested), a lone Degree (flat)
    gold = {"d": [e("Finding", 0, 20), e("ANAT", 5, 10), e("Degree", 30, 35)]}
    # predicted: the ANAT alone (flat on the predicted side), the Degree next to an overlapping Measure (nested)
    predicted = {"d": [e("ANAT", 5, 10), e("Degree", 30, 35), e("Measure", 33, 40)]}
    report = score(gold, predicted).to_dict()
    assert (report["nested"]["gold"], report["nested"]["predicted"]) == (2, 2)
    assert (report["flat"]["gold"], report["flat"]["predicted"]) == (1, 1)
    assert report["nested"]["exact"]["f1"] == 0.0  # the nested gold ANAT was found by a flat prediction
    assert report["flat"]["exact"]["f1"] == 0.0
    assert report["exact"]["f1"] == pytest.approx(2 * 2 / 6)
    perfect = score(gold, gold).to_dict()
    assert perfect["nested"]["exact"]["f1"] == perfect["flat"]["exact"]["f1"] == 1.0


def test_bootstrap_is_seeded_paired_and_brackets_the_observed_difference():
    gold = {f"d{i}": [e("X", 0, 5), e("Y", 10, 15)] for i in range(12)}
    worse = {doc: entities[:1] for doc, entities in gold.items()}
    half = {doc: entities if i % 2 else entities[:1] for i, (doc, entities) in enumerate(gold.items())}
    result = paired_bootstrap(gold, worse, half, resamples=500, seed=3)
    exact = result["all"]["exact"]
    assert exact["difference"] == pytest.approx(exact["second"] - exact["first"]) and exact["difference"] > 0
    low, high = exact["interval"]
    assert 0 < low <= exact["difference"] <= high
    assert exact["second_better"] == 1.0  # "half" is never worse on any document
    assert paired_bootstrap(gold, worse, half, resamples=500, seed=3) == result
    same = paired_bootstrap(gold, half, half, resamples=200)["all"]["lenient"]
    assert same["interval"] == [0.0, 0.0] and same["second_better"] == 0.0


def test_score_cli_compares_two_prediction_folders(tmp_path, capsys):
    corpus = read_corpus(SAMPLE_CORPUS / "test")
    for name, keep in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        for doc in corpus.documents:
            write_ann(tmp_path / name / f"{doc.id}.ann", doc.text, doc.entities[: len(doc.entities) * keep // 2])
    gold = str(SAMPLE_CORPUS / "test")
    assert score_main(["--gold", gold, "--pred", str(tmp_path / "a"), "--compare", str(tmp_path / "b"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["documents"] == len(corpus.documents) and result["resamples"] == 1000
    assert result["all"]["exact"]["second"] == 1.0 and result["all"]["exact"]["interval"][0] > 0
    assert score_main(["--gold", gold, "--pred", str(tmp_path / "a"), "--compare", str(tmp_path / "b")]) == 0
    table = capsys.readouterr().out
    assert "paired bootstrap over" in table and "nested" in table and "95% interval" in table
