"""Shared fixtures: offline settings and tiny real models built in the test session."""

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

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import hf_pipeline  # noqa: E402
from hf_dataset import SAMPLE_CORPUS, SPRADIE_TYPES, label_names, read_corpus  # noqa: E402
from hf_pipeline.training.base_models import build_tiny_model, train_wordpiece  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
NUBES = REPO.parent / "shared" / "corpora" / "nubes"


def sample_texts() -> list[str]:
    return [doc.text for doc in read_corpus(SAMPLE_CORPUS / "train").documents]


def make_bundle(folder: Path, max_position_embeddings: int = 64, seed: int = 0, layers=(1, 2, 3)) -> Path:
    """A bundle of tiny random BERTs (one per layer) with a WordPiece tokenizer trained on the sample."""
    torch.manual_seed(seed)
    tokenizer = train_wordpiece(sample_texts(), vocab_size=400, model_max_length=max_position_embeddings)
    labels = label_names(SPRADIE_TYPES)
    models = [build_tiny_model(tokenizer, labels, max_position_embeddings, hidden_size=32) for _ in layers]
    return hf_pipeline.save_bundle(models, tokenizer, folder, layers=layers)


def make_shared_bundle(folder: Path, max_position_embeddings: int = 64, seed: int = 0) -> Path:
    """A shared-encoder bundle: one tiny random BERT whose classifier has a block of labels per layer."""
    from transformers import BertForTokenClassification

    from hf_pipeline.bundle import make_shared_config

    torch.manual_seed(seed)
    tokenizer = train_wordpiece(sample_texts(), vocab_size=400, model_max_length=max_position_embeddings)
    labels = label_names(SPRADIE_TYPES)
    config = build_tiny_model(tokenizer, labels, max_position_embeddings, hidden_size=32).config
    make_shared_config(config, labels, [1, 2, 3])
    return hf_pipeline.save_bundle([BertForTokenClassification(config)], tokenizer, folder)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete three-layer bundle folder (random weights: for mechanics, not quality)."""
    return make_bundle(tmp_path_factory.mktemp("bundle") / "tiny-radiology-ner")


@pytest.fixture(scope="session")
def shared_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny shared-encoder bundle (random weights)."""
    return make_shared_bundle(tmp_path_factory.mktemp("shared") / "tiny-shared-ner")
