"""Building a large report keeps memory to a small multiple of the row it writes, and a corpus of many reports is
never held whole (benchmarks/bench_build.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hf_dataset.ann import parse_ann_table, write_ann
from hf_dataset.brat import BratError, read_corpus
from hf_dataset.builder import RadiologyNer, _prepare, build
from hf_dataset.rows import parts

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_build.py"


def bench_build():
    spec = importlib.util.spec_from_file_location("bench_build", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_figures(folder: Path) -> tuple[dict[str, float], float]:
    """bench_build's figures of building ``folder`` in a fresh process, and the growth of its memory in MiB."""
    code = f"import json, sys; sys.path.insert(0, {str(BENCH.parent)!r}); from bench_build import figures; "
    code += f"print(json.dumps(figures(__import__('pathlib').Path({str(folder)!r}))))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures, figures["peak"] - figures["imported"]


@pytest.mark.slow
def test_a_2_mb_report_builds_within_four_times_its_arrow_row(tmp_path):
    """One report of 2 MB and ~110,000 entities. Before the streaming builder every word and entity was a Python
    object (several of them) and the peak grew by ~12x the Arrow dataset; now the growth over the imports stays
    within 4x it (the row itself must be in memory once to be written)."""
    bench_build().write_corpus(tmp_path, 2.0, 1)
    figures, growth = build_figures(tmp_path)
    assert figures["entities"] > 100_000 and figures["reports"] == 1
    assert growth <= 4 * figures["arrow"], figures


@pytest.mark.slow
def test_2000_reports_build_within_less_memory_than_their_arrow_dataset(tmp_path):
    """2,000 reports, 10 MB of text. When every report was kept from reading to writing the growth was 1.2x the
    Arrow dataset (15x the text); reading each report again when it is written keeps it at about half."""
    bench_build().write_corpus(tmp_path, 10.0, 2000)
    figures, growth = build_figures(tmp_path)
    assert figures["reports"] == 2000 and figures["entities"] > 500_000
    assert growth <= 0.8 * figures["arrow"], figures
    assert figures["oracle_exact_f1"] > 0.95


def test_a_report_is_layered_in_parts_that_no_entity_or_word_crosses():
    text = "Quiste simple en el RD. " * 40 + "nódulo" + " " * 5 + "x"
    ann = "".join(f"T{i}\tFinding {24 * i} {24 * i + 13}\tQuiste simple\n" for i in range(40))
    ann += f"T40\tFinding {24 * 39} {len(text) - 6}\t{text[24 * 39 : len(text) - 6]}\n"  # spans the last cut points
    entities, problems = parse_ann_table(ann, text, "a.ann")
    assert problems == []
    cuts = list(parts(text, entities, size=50))
    assert [begin for begin, _, _ in cuts][0] == 0 and cuts[-1][1] == len(text)
    assert all(end == next_begin for (_, end, _), (next_begin, _, _) in zip(cuts, cuts[1:]))
    starts, ends = entities.hulls()
    for begin, end, members in cuts:
        assert begin == 0 or text[begin].isspace()
        assert np.all((starts[members] >= begin) & (ends[members] <= end))
    assert sorted(np.concatenate([members for _, _, members in cuts]).tolist()) == list(range(41))
    assert len(cuts) > 5 and any(40 in members for _, _, members in cuts)


def test_layering_in_parts_gives_the_rows_of_layering_the_whole_report(tmp_path, monkeypatch):
    """The sample's train reports as one report: parts of 200 characters give the tags of parts of 1 MB."""
    sample = bench_build().synthetic_report(60_000)
    (tmp_path / "r.txt").write_text(sample[0], encoding="utf-8", newline="")
    write_ann(tmp_path / "r.ann", *sample)
    whole, _ = build(tmp_path)
    monkeypatch.setattr("hf_dataset.rows.PART_CHARACTERS", 200)
    in_parts, builder = build(tmp_path)
    assert whole["train"][0] == in_parts["train"][0]
    assert len(list(parts(sample[0], builder.splits["train"].corpus.sources[0].read()[0].entities, 200))) > 100


def test_the_builder_keeps_where_reports_are_and_reads_each_again_when_it_writes_it(tmp_path):
    """Reading lists every problem first but keeps no text: a corpus of many reports is never in memory whole. The
    rows equal those of the reports as read; a report edited between the two readings stops the build."""
    bench_build().write_corpus(tmp_path, 0.02, 20)
    dataset, builder = build(tmp_path)
    corpus = builder.splits["train"].corpus
    assert corpus.documents == [] and len(corpus.sources) == 20 == dataset["train"].num_rows
    documents = read_corpus(tmp_path).documents
    assert dataset["train"]["text"] == [document.text for document in documents]
    assert sum(map(len, dataset["train"]["entities"])) == sum(len(document.entities) for document in documents)

    reader = RadiologyNer(cache_dir=str(tmp_path / "cache"), brat_dir=str(tmp_path))
    (tmp_path / "report_00007.ann").write_text("T1\tFinding 0 4\tabcd\n", encoding="utf-8")
    with pytest.raises(BratError, match=r"report_00007\.txt or .*report_00007\.ann changed while the dataset was"):
        _prepare(reader)
