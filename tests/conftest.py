"""Shared fixtures: offline settings, tiny real models built in the test session, the real corpora, the demo."""

from __future__ import annotations

import os

for name, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(name, value)

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

import hf_pipeline  # noqa: E402

from .helpers import (  # noqa: E402
    CHUNK,
    REPO,
    SPACE_README,
    make_bundle,
    make_shared_bundle,
    shards,
    synthetic_reports,
)

CORPORA_VARIABLE = "RADIOLOGY_NER_CORPORA"
DEFAULT_CORPORA = REPO.parent / "shared" / "corpora"


# --- tiny bundles ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete three-layer bundle folder (random weights: for mechanics, not quality)."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny-radiology-ner")


@pytest.fixture(scope="session")
def shared_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shared-encoder bundle (random weights)."""
    return make_shared_bundle(tmp_path_factory.mktemp("shared") / "tiny-shared-ner")


# --- the real corpora -----------------------------------------------------------------------------------------------


def real_corpora() -> Path:
    """The folder of real brat corpora (``nubes/``, ``ct-ebm-sp-v2-cases/``): ``$RADIOLOGY_NER_CORPORA``, by default
    ``../shared/corpora`` beside the repository. Absent, the tests that need it are skipped with one reason; under
    CI (``CI=true``), which always has the corpora, they fail."""
    folder = Path(os.environ.get(CORPORA_VARIABLE) or DEFAULT_CORPORA)
    if folder.is_dir():
        return folder
    reason = f"no real corpora at {folder}: set {CORPORA_VARIABLE} to the folder that holds them"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: CI always has them).", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def corpora() -> Path:
    """The real corpora folder (see :func:`real_corpora`); a test that asks for it is skipped without it."""
    return real_corpora()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Every test skipped for want of the corpora folds into one summary line, named after :func:`real_corpora`
    (pytest gives a skip raised in a fixture the location of each test)."""
    report = yield
    longrepr = report.longrepr
    if report.skipped and isinstance(longrepr, tuple) and CORPORA_VARIABLE in longrepr[2]:
        report.longrepr = (__file__, real_corpora.__code__.co_firstlineno, longrepr[2])
    return report


# --- python -m hf_pipeline.predict ----------------------------------------------------------------------------------


@pytest.fixture
def datasets_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``datasets`` cache of the test session's own (the shared one keys a local file by its name)."""
    import datasets

    cache = tmp_path_factory.getbasetemp() / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def reports_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("input") / "reports.parquet"
    pq.write_table(pa.Table.from_pylist(synthetic_reports()), path)
    return path


@pytest.fixture(scope="module")
def reference(tiny_bundle: Path, reports_parquet: Path, tmp_path_factory: pytest.TempPathFactory) -> pa.Table:
    """The single-process output of the synthetic reports (chunks of 25)."""
    from hf_pipeline.predict import main

    output = tmp_path_factory.mktemp("reference")
    assert main(["--model", str(tiny_bundle), "--input", str(reports_parquet), "--output", str(output)]
                + ["--format", "parquet", "--chunk_size", str(CHUNK)]) == 0  # fmt: skip
    return shards(output)


# --- push_to_hub.py -------------------------------------------------------------------------------------------------


@pytest.fixture
def model_dir(tiny_bundle: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_bundle, tmp_path / "model")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dataset folder built from the bundled sample, as ``python -m hf_dataset build`` writes it."""
    from hf_dataset.builder import build
    from hf_dataset.card import export

    dataset, builder = build()
    return export(dataset, builder, tmp_path_factory.mktemp("dataset") / "ds")


@pytest.fixture
def space_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "space"
    folder.mkdir()
    (folder / "app.py").write_text("import gradio as gr\n", encoding="utf-8")
    (folder / "README.md").write_text(SPACE_README, encoding="utf-8")
    return folder


# --- the demo (space/app.py) ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ner(tiny_bundle: Path):
    return hf_pipeline.load_pipeline(tiny_bundle)


@pytest.fixture(scope="module")
def example_text() -> str:
    from .space_helpers import app

    return app.load_examples()[0]


@pytest.fixture(scope="module")
def server(tiny_bundle: Path) -> Iterator[str]:
    """``python space/app.py --model DIR`` on a free port chosen through gradio's own environment variables.

    ``MODEL_ID`` names a folder that does not exist: the server only starts if ``--model`` wins.
    """
    from .helpers import free_port
    from .space_helpers import APP_PATH, wait_for_port

    port = free_port()
    env = {
        **os.environ,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "MODEL_ID": str(tiny_bundle.parent / "no-such-model"),
    }
    process = subprocess.Popen(
        [sys.executable, str(APP_PATH), "--model", str(tiny_bundle)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
