"""Brat corpus to a layered Hugging Face dataset (``python -m hf_dataset build``)."""

from hf_dataset.brat import BratError, Corpus, Document, Entity, read_corpus, write_ann
from hf_dataset.builder import SAMPLE_CORPUS, SPRADIE_TYPES, RadiologyNer, build
from hf_dataset.layers import encode, label_names

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
