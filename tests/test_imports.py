"""``import hf_pipeline`` is light (no torch, no transformers) and still registers the radiology-ner task."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import REPO

HEAVY = ("torch", "transformers", "datasets")
REGISTERED = (
    "\nfrom transformers.pipelines import PIPELINE_REGISTRY"
    "\nfrom hf_pipeline.radiology_ner import RadiologyNerPipeline"
    "\n_, task, _ = PIPELINE_REGISTRY.check_task('radiology-ner')"
    "\nassert task['impl'] is RadiologyNerPipeline, task"
)


def run(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def imported_heavy(code: str) -> list[str]:
    """The heavy modules that running ``code`` in a fresh interpreter imported."""
    check = f"\nimport sys; print([m for m in {HEAVY!r} if m in sys.modules])"
    return eval(run(code + check).stdout.strip().splitlines()[-1])


def test_import_hf_pipeline_imports_neither_torch_nor_transformers():
    assert imported_heavy("import hf_pipeline, hf_pipeline.scoring, hf_pipeline.hub") == []


def test_scorer_cli_help_imports_neither_torch_nor_transformers_nor_datasets():
    assert (
        imported_heavy(
            "import sys; sys.argv = ['score', '--help']\ntry:\n    import runpy; "
            "runpy.run_module('hf_pipeline.score', run_name='__main__')\nexcept SystemExit:\n    pass"
        )
        == []
    )


@pytest.mark.parametrize(
    "first_import",
    [
        "import hf_pipeline\nfrom transformers import pipeline",  # the README's order
        "from transformers import pipeline\nimport hf_pipeline",  # transformers first
        "import hf_pipeline\nhf_pipeline.load_pipeline",  # a lazy name first (bundle imports transformers itself)
        "from hf_pipeline.bundle import load_pipeline",  # a submodule first
        "from hf_pipeline.radiology_ner import word_spans",
    ],
)
def test_the_task_is_registered_whatever_is_imported_first(first_import):
    run(first_import + REGISTERED)


def test_lazy_names_and_unknown_names():
    run(
        "import hf_pipeline\n"
        "from hf_pipeline.bundle import TASK, load_pipeline\n"
        "assert hf_pipeline.load_pipeline is load_pipeline and hf_pipeline.TASK == TASK\n"
        "assert set(hf_pipeline.__all__) <= set(dir(hf_pipeline))\n"
        "try:\n    hf_pipeline.no_such_name\nexcept AttributeError as error:\n    assert 'no_such_name' in str(error)\n"
        "else:\n    raise AssertionError('no AttributeError')"
    )


def test_metric_path_loads_the_evaluate_module_from_any_folder(tmp_path):
    code = (
        "import evaluate, hf_pipeline\n"
        "metric = evaluate.load(hf_pipeline.METRIC_PATH)\n"
        "gold = [[{'type': 'Finding', 'fragments': [[0, 10]]}]]\n"
        "print(metric.compute(predictions=gold, references=gold)['exact_f1'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=os.environ, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "1.0"
