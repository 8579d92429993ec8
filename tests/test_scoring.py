"""The official scorer: hand-computed cases, optimal versus greedy matching, CLI, evaluate module, oracle."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys

import evaluate
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, read_corpus, write_ann
from hf_dataset.entities import Entity
from hf_pipeline.score import main as score_main
from hf_pipeline.scoring import best_matching_sum, jaccard, normalize, overlapping_pairs, score, score_type

from .helpers import REPO


def e(type_: str, *fragments: tuple[int, int]) -> Entity:
    return Entity(type_, tuple(fragments))


def micro(gold, predicted, strategy="lenient"):
    return score({"d": gold}, {"d": predicted}).to_dict()[strategy]


def test_partial_overlap_gives_the_jaccard_value():
    result = micro([e("Finding", (0, 10))], [e("Finding", (5, 15))])
    assert result["precision"] == pytest.approx(5 / 15) and result["recall"] == pytest.approx(5 / 15)
    assert micro([e("Finding", (0, 10))], [e("Finding", (5, 15))], "exact")["f1"] == 0.0


def test_discontinuous_fragments_count_characters_of_all_fragments():
    gold = [e("Anatomical_Entity", (0, 7), (18, 27))]  # 16 characters
    predicted = [e("Anatomical_Entity", (0, 27))]  # 27 characters, 16 shared
    assert micro(gold, predicted)["f1"] == pytest.approx(16 / 27)
    assert micro(gold, [e("Anatomical_Entity", (18, 27), (0, 7))], "exact")["f1"] == 1.0


def test_wrong_type_gets_no_credit_and_counts_as_false_positive():
    report = score({"d": [e("Finding", (0, 10))]}, {"d": [e("Degree", (0, 10))]}).to_dict()
    assert report["lenient"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert report["per_type"]["Degree"] == {
        "gold": 0,
        "predicted": 1,
        "exact": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
        "lenient": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
    }


def test_two_predictions_on_one_gold_entity_get_credit_once():
    result = micro([e("Finding", (0, 10))], [e("Finding", (0, 10)), e("Finding", (0, 10))], "exact")
    assert (result["precision"], result["recall"]) == (0.5, 1.0)


def test_optimal_matching_beats_the_greedy_choice():
    # Greedy pairs g1 with p1 (0.9) and leaves g2 with nothing; optimal pairs g1-p2 and g2-p1.
    gold = [e("F", (0, 10)), e("F", (1, 11))]
    predicted = [e("F", (0, 11)), e("F", (0, 10))]
    assert micro(gold, predicted)["precision"] == pytest.approx((10 / 11 + 1.0) / 2)


def test_identical_inputs_give_one_and_empty_inputs_give_zero():
    gold = [e("Finding", (0, 10)), e("Degree", (2, 4), (6, 8))]
    for strategy in ("exact", "lenient"):
        assert micro(gold, list(gold), strategy) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
        assert micro([], [], strategy) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
        assert micro(gold, [], strategy)["f1"] == 0.0
        assert micro([], gold, strategy)["precision"] == 0.0


def test_documents_are_scored_separately_and_unknown_documents_are_errors():
    gold = {"a": [e("F", (0, 5))], "b": [e("F", (0, 5))]}
    report = score(gold, {"a": [e("F", (0, 5))]})
    assert report.to_dict()["exact"]["recall"] == 0.5 and report.missing_predictions == 1
    with pytest.raises(ValueError, match="not in gold"):
        score(gold, {"c": []})


def greedy_sum(gold, predicted):
    pairs = sorted(((jaccard(g, p), i, j) for i, g in enumerate(gold) for j, p in enumerate(predicted)), reverse=True)
    used_g, used_p, total = set(), set(), 0.0
    for value, i, j in pairs:
        if value and i not in used_g and j not in used_p:
            used_g.add(i), used_p.add(j)
            total += value
    return total


def brute_force_sum(gold, predicted):
    small, large = (gold, predicted) if len(gold) <= len(predicted) else (predicted, gold)
    return max(
        (sum(jaccard(a, b) for a, b in zip(small, perm)) for perm in itertools.permutations(large, len(small))),
        default=0.0,
    )


spans = st.tuples(st.integers(0, 30), st.integers(1, 8)).map(lambda p: ((p[0], p[0] + p[1]),))


@settings(max_examples=200, deadline=None)
@given(st.lists(spans, max_size=5), st.lists(spans, max_size=5))
def test_optimal_matching_is_never_below_greedy_and_equals_brute_force(gold, predicted):
    gold_entities = [Entity("F", normalize(g)) for g in gold]
    predicted_entities = [Entity("F", normalize(p)) for p in predicted]
    matched = score({"d": gold_entities}, {"d": predicted_entities}).total.lenient
    assert matched >= greedy_sum(gold, predicted) - 1e-9
    assert matched == pytest.approx(brute_force_sum(gold, predicted))


def test_cli_reads_brat_folders_counts_missing_and_prints_json(tmp_path, capsys):
    gold = read_corpus(SAMPLE_CORPUS / "test")
    for doc in gold.documents[1:]:
        write_ann(tmp_path / f"{doc.id}.ann", doc.text, doc.entities)
    assert score_main(["--gold", str(SAMPLE_CORPUS / "test"), "--pred", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["missing_predictions"] == 1 and result["exact"]["precision"] == 1.0
    assert result["exact"]["recall"] == pytest.approx(1 - len(gold.documents[0].entities) / result["gold"])
    text = subprocess.run(
        [sys.executable, "-m", "hf_pipeline.score", "--gold", str(SAMPLE_CORPUS / "test"), "--pred", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    assert "1 gold document(s) have no predicted .ann" in text and "micro" in text


def test_cli_rejects_prediction_for_unknown_document(tmp_path, capsys):
    (tmp_path / "not_a_report.ann").write_text("", encoding="utf-8")
    assert score_main(["--gold", str(SAMPLE_CORPUS / "test"), "--pred", str(tmp_path)]) == 2
    assert "have no gold document" in capsys.readouterr().err


def test_cli_skip_invalid_scores_without_bad_annotations_and_lists_them(tmp_path, capsys):
    gold_dir = shutil.copytree(SAMPLE_CORPUS / "test", tmp_path / "gold")
    first = sorted(gold_dir.glob("*.ann"))[0]
    with first.open("a", encoding="utf-8") as ann:
        ann.write("T900\tFinding 0 99999\tnot in the text\n")  # offsets beyond the text, on the last line
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    for doc in read_corpus(SAMPLE_CORPUS / "test").documents:
        write_ann(pred_dir / f"{doc.id}.ann", doc.text, doc.entities)
    with (pred_dir / first.name).open("a", encoding="utf-8") as ann:
        ann.write("T901\tFinding 5 3\tx\n")
    assert score_main(["--gold", str(gold_dir), "--pred", str(pred_dir)]) == 2
    assert "--skip_invalid" in capsys.readouterr().err
    assert score_main(["--gold", str(gold_dir), "--pred", str(pred_dir), "--json", "--skip_invalid"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert len(result["skipped"]) == 2 and "skipped 2 invalid annotation(s)" in captured.err
    assert "T900" in captured.err and "T901" in captured.err and first.name in captured.err
    assert result["exact"]["f1"] == 1.0  # every valid annotation matches; the bad ones are out of both sides


def test_evaluate_module_gives_the_same_figures():
    metric = evaluate.load(str(REPO / "hf_pipeline" / "radiology_ner_metric"))
    gold = [[{"type": "Finding", "fragments": [[0, 10]]}], [{"type": "Degree", "fragments": [[0, 3], [5, 8]]}]]
    predicted = [[{"type": "Finding", "fragments": [[5, 15]]}], [{"type": "Degree", "fragments": [[0, 8]]}]]
    result = metric.compute(predictions=predicted, references=gold)
    direct = score(
        {str(i): [e(x["type"], *map(tuple, x["fragments"])) for x in doc] for i, doc in enumerate(gold)},
        {str(i): [e(x["type"], *map(tuple, x["fragments"])) for x in doc] for i, doc in enumerate(predicted)},
    ).to_dict()
    assert result["lenient_f1"] == pytest.approx(direct["lenient"]["f1"])
    assert result["lenient_precision"] == pytest.approx((1 / 3 + 6 / 8) / 2)


def test_oracle_of_the_bundled_sample_through_the_scorer():
    from hf_dataset.builder import build

    _, builder = build()
    for name, layered in builder.splits.items():
        oracle = layered.statistics.oracle
        assert 0.9 <= oracle["exact_f1"] < 1.0, name  # depth-4 spots are dropped, discontinuous ones hulled
        assert oracle["lenient_f1"] > oracle["exact_f1"]
    assert set(builder.types) == set(SPRADIE_TYPES)


def dense_reference(gold, predicted):
    """The all-pairs definition: one gold x predicted matrix per type, solved as a whole."""
    lenient = np.array([[jaccard(g, p) for p in predicted] for g in gold]).reshape(len(gold), len(predicted))
    return best_matching_sum((lenient == 1.0).astype(float)), best_matching_sum(lenient)


fragment_lists = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 6)).map(lambda p: (p[0], p[0] + p[1])), min_size=1, max_size=3
).map(normalize)


@settings(max_examples=300, deadline=None)
@given(st.lists(fragment_lists, max_size=12), st.lists(fragment_lists, max_size=12), st.booleans())
def test_sweep_and_groups_equal_the_all_pairs_assignment(gold, predicted, duplicate):
    if duplicate and gold:
        predicted = predicted + gold[:2] + gold[:1]
    counts = score_type(gold, predicted)
    exact, lenient = dense_reference(gold, predicted)
    assert counts.exact == pytest.approx(exact) and counts.lenient == pytest.approx(lenient)
    found = {(g, p): value for g, p, value in overlapping_pairs(gold, predicted)}
    expected = {(g, p): jaccard(a, b) for g, a in enumerate(gold) for p, b in enumerate(predicted) if jaccard(a, b)}
    assert found == expected


def test_a_long_report_is_scored_without_all_pairs():
    # 30,000 gold entities of one type: an all-pairs matrix would hold 9e8 similarities.
    gold = [((10 * i, 10 * i + 8),) for i in range(30_000)]
    predicted = [((10 * i + 1, 10 * i + 8),) for i in range(30_000)]
    assert sum(1 for _ in overlapping_pairs(gold, predicted)) == 30_000
    counts = score_type(gold, predicted)
    assert counts.exact == 0 and counts.lenient == pytest.approx(30_000 * 7 / 8)
