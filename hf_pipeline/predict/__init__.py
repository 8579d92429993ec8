"""Prediction at scale, ``python -m hf_pipeline.predict``: ``inputs`` reads reports (folders, files, Parquet,
datasets, Hub ids) and checks their ids, ``run`` spreads chunks over processes and resumes, ``outputs`` writes brat,
JSONL, Parquet shards or spaCy DocBin files and the manifest."""

from hf_pipeline.predict.run import main

__all__ = ["main"]
