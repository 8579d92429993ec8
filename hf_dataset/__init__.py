"""Brat corpus to a layered Hugging Face dataset (``python -m hf_dataset build``).

``import hf_dataset`` is cheap: the names below load their module on first use (PEP 562), so the brat reader and
the scorer's command line start without importing ``datasets``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hf_pipeline.lazy import lazy_attributes

SAMPLE_CORPUS = Path(__file__).parent / "sample_corpus"  # the synthetic sample shipped with the project

if TYPE_CHECKING:  # pragma: no cover
    from hf_dataset.ann import write_ann
    from hf_dataset.brat import BratError, Corpus, Document, read_corpus
    from hf_dataset.builder import SPRADIE_TYPES, RadiologyNer, build
    from hf_dataset.entities import Entity
    from hf_dataset.layers import encode, label_names

_LAZY = {
    **dict.fromkeys(["BratError", "Corpus", "Document", "read_corpus"], "hf_dataset.brat"),
    "Entity": "hf_dataset.entities",
    "write_ann": "hf_dataset.ann",
    **dict.fromkeys(["SPRADIE_TYPES", "RadiologyNer", "build"], "hf_dataset.builder"),
    **dict.fromkeys(["encode", "label_names"], "hf_dataset.layers"),
}

__all__ = [
    "SAMPLE_CORPUS",
    "SPRADIE_TYPES",
    "BratError",
    "Corpus",
    "Document",
    "Entity",
    "RadiologyNer",
    "build",
    "encode",
    "label_names",
    "read_corpus",
    "write_ann",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
