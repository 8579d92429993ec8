"""Build the layered dataset from a brat corpus: a ``datasets`` builder that this project runs itself.

``datasets`` no longer runs loading scripts, so the builder runs here and the Hub gets Parquet files plus a
card (see :func:`export`). One row per report, with the schema of the dataset card.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
from datasets.builder import Key
from datasets.exceptions import DatasetGenerationError

from hf_dataset import SAMPLE_CORPUS
from hf_dataset.ann import Problem
from hf_dataset.brat import BratError, Corpus, check_problems, scan_corpus
from hf_dataset.entities import Entity, EntityTable
from hf_dataset.layers import Discontinuous, label_names
from hf_dataset.rows import COUNTS, ReportLayers, layer_report, report_row
from hf_pipeline.scoring import Report, score

SPRADIE_TYPES = [
    "Anatomical_Entity",
    "Finding",
    "Location",
    "Measure",
    "Type_of_measure",
    "Degree",
    "Abbreviation",
    "Negation",
    "Uncertainty",
    "Conditional_Temporal",
]
_BUILD_CACHES: list[tempfile.TemporaryDirectory] = []  # the folders built datasets are mapped from, until exit
SPLIT_FOLDERS = {"train": "train", "dev": "validation", "validation": "validation", "test": "test"}


def find_splits(brat_dir: str | Path) -> dict[str, Path]:
    """Map split names to folders: ``train/``, ``dev/`` or ``validation/``, ``test/``; else the folder is ``train``."""
    brat_dir = Path(brat_dir)
    if not brat_dir.is_dir():
        state = "is not a folder" if brat_dir.exists() else "does not exist"
        raise BratError(
            f"--brat_dir {brat_dir} {state}; pass the folder that holds the .txt/.ann files "
            "(or its train/, dev/ or validation/, test/ folders)."
        )
    found = {SPLIT_FOLDERS[p.name]: p for p in brat_dir.iterdir() if p.is_dir() and p.name in SPLIT_FOLDERS}
    found = {split: found[split] for split in ("train", "validation", "test") if split in found}
    if "dev" in {p.name for p in brat_dir.iterdir()} and (brat_dir / "validation").is_dir():
        raise ValueError(f"{brat_dir} has both dev/ and validation/; keep one of them.")
    return found or {"train": brat_dir}


def read_splits(
    brat_dir: str | Path, types: str | Sequence[str] | None = None, skip_invalid: bool = False, keep: bool = True
) -> tuple[dict[str, Corpus], list[str]]:
    """Read every split and resolve the label set; fail once, listing every problem of every split.

    Args:
        keep: keep the documents (else each corpus lists its reports' sources, to be read again: see
            :func:`~hf_dataset.brat.scan_corpus`).

    Returns:
        The corpus of each split (with ``skip_invalid``, its skipped annotations in ``Corpus.invalid``) and the
        label set (see :func:`resolve_types`).
    """
    folders = find_splits(brat_dir)
    given = None if types == "auto" else resolve_types(types)
    corpora = {split: scan_corpus(folder, given, keep) for split, folder in folders.items()}
    names = given or sorted(set().union(*(corpus.type_names for corpus in corpora.values())))
    check_problems({f"{split} ({folders[split]})": corpus for split, corpus in corpora.items()}, skip_invalid)
    return corpora, names


def resolve_types(types: str | Sequence[str] | None) -> list[str]:
    """``None``: the SpRadIE types; else the given list (a comma-separated string or a sequence). ``"auto"``,
    every type in the corpus, is resolved by :func:`read_splits`."""
    if types is None:
        return list(SPRADIE_TYPES)
    names = types.split(",") if isinstance(types, str) else list(types)
    names = [name.strip() for name in names if name.strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"--types needs distinct, non-empty type names; got {types!r}.")
    return names


def features(types: Sequence[str], max_layers: int = 3) -> datasets.Features:
    """The dataset schema; every ``ner_tags_k`` column has the same ClassLabel names."""
    tags = datasets.ClassLabel(names=label_names(types))
    offsets = datasets.List(datasets.List(datasets.Value("int32")))
    entity = {
        "id": datasets.Value("string"),
        "type": datasets.Value("string"),
        "start": datasets.Value("int32"),
        "end": datasets.Value("int32"),
        "fragments": offsets,
        "text": datasets.Value("string"),
        "layer": datasets.Value("int8"),
    }
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "tokens": datasets.List(datasets.Value("string")),
            "token_offsets": offsets,
            **{f"ner_tags_{k}": datasets.List(tags) for k in range(1, max_layers + 1)},
            "entities": datasets.List(entity),
        }
    )


@dataclass
class SplitStatistics:
    """What the layering did to one split; every entity read is encoded, merged, dropped or invalid."""

    reports: int = 0
    read: int = 0
    encoded: int = 0
    merged: int = 0
    dropped: int = 0
    invalid: int = 0
    misaligned: int = 0
    discontinuous: int = 0
    per_type: Counter = field(default_factory=Counter)
    per_layer: Counter = field(default_factory=Counter)
    oracle: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)  # every invalid annotation: file, line, id, reason

    def to_dict(self) -> dict[str, Any]:
        values = dict(self.__dict__)
        values["per_type"] = dict(sorted(self.per_type.items()))
        values["per_layer"] = {str(k): v for k, v in sorted(self.per_layer.items())}
        return values

    def add(self, path: str, entities: EntityTable, layers: ReportLayers, root: str | Path | None) -> None:
        """Count one layered report (its ``.ann`` at ``path``); its entities that cover no word become invalid
        (listed, kind layering)."""
        self.reports += 1
        self.read += len(entities)
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(layers, name))
        per_type = np.bincount(np.frombuffer(entities.types, np.int32), minlength=len(entities.type_names))
        self.per_type.update({name: int(n) for name, n in zip(entities.type_names, per_type) if n})
        self.per_layer.update({k: int(n) for k, n in enumerate(np.bincount(layers.layer_of)) if k and n})
        uncovered = [
            Problem(path, entities.lines[i], "covers no word", entities.id(i), "layering") for i in layers.uncovered
        ]
        self.invalid += len(uncovered)
        self.skipped += [problem.to_dict(root) for problem in uncovered]


@dataclass
class LayeredSplit:
    """A split's documents and statistics; the statistics are complete once the split has been generated."""

    corpus: Corpus
    statistics: SplitStatistics
    oracle: Report = field(default_factory=Report)

    def finish(self) -> None:
        """The oracle F1 from the counts of every report: exact and lenient micro F1 of decode(encode(gold))."""
        self.statistics.oracle = oracle_figures(self.oracle)


def oracle_f1(gold: dict[str, Sequence[Entity]], decoded: dict[str, list[Entity]], types: Sequence[str]) -> dict:
    """Exact and lenient F1 of the gold tags decoded back to entities: the ceiling of the layered method."""
    return oracle_figures(score(gold, decoded, types))


def oracle_figures(report: Report) -> dict[str, float]:
    result = report.to_dict()
    return {"exact_f1": result["exact"]["f1"], "lenient_f1": result["lenient"]["f1"]}


def start_split(corpus: Corpus, root: str | Path | None = None) -> LayeredSplit:
    """A split before layering: its reading problems are counted and itemised (file paths relative to ``root``)."""
    statistics = SplitStatistics(invalid=len(corpus.invalid), read=len(corpus.invalid))
    statistics.skipped = [problem.to_dict(root) for problem in corpus.invalid]
    return LayeredSplit(corpus, statistics)


class RadiologyNerConfig(datasets.BuilderConfig):
    """Where the corpus is and how to layer it."""

    def __init__(
        self,
        brat_dir: str | None = None,
        types: str | Sequence[str] | None = None,
        max_layers: int = 3,
        discontinuous: Discontinuous = "hull",
        skip_invalid: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if discontinuous not in ("hull", "split"):
            raise ValueError(f"discontinuous must be 'hull' or 'split', got {discontinuous!r}.")
        if max_layers < 1:
            raise ValueError(f"max_layers must be at least 1, got {max_layers}.")
        self.brat_dir = str(brat_dir or SAMPLE_CORPUS)
        self.types = types
        self.max_layers = max_layers
        self.discontinuous = discontinuous
        self.skip_invalid = skip_invalid


class RadiologyNer(datasets.ArrowBasedBuilder):
    """Brat corpus → one row per report with layered IOB2 tags; ``self.splits`` keeps the statistics.

    Reading (every problem of every split, before anything is written) happens here, keeping only where each
    report is; each report is read again when its split is generated, and layered then (:mod:`hf_dataset.rows`), so
    a corpus is never in memory whole and the statistics are complete after ``download_and_prepare`` (:func:`build`
    always runs it in a fresh cache).
    """

    BUILDER_CONFIG_CLASS = RadiologyNerConfig
    DEFAULT_WRITER_BATCH_SIZE = 100  # rows are written 100 at a time: a row is ~13x its report's text
    config: RadiologyNerConfig

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.config
        corpora, self.types = read_splits(cfg.brat_dir, cfg.types, cfg.skip_invalid, keep=False)
        self.splits = {name: start_split(corpus, cfg.brat_dir) for name, corpus in corpora.items()}
        self.info.features = features(self.types, self.config.max_layers)

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description="Spanish radiology reports with layered IOB2 tags for nested NER.")

    def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
        return [datasets.SplitGenerator(name=name, gen_kwargs={"split": name}) for name in self.splits]

    def _generate_tables(self, split: str) -> Iterator[tuple[Key, pa.Table]]:
        layered, cfg = self.splits[split], self.config
        for number, source in enumerate(layered.corpus.sources):
            document = source.read_again(self.types)
            entities = document.entities
            assert isinstance(entities, EntityTable)
            layers = layer_report(document.text, entities, self.types, cfg.max_layers, cfg.discontinuous)
            layered.statistics.add(document.path, entities, layers, cfg.brat_dir)
            layered.oracle.add(layers.oracle)
            yield Key(0, number), report_row(document.id, document.text, entities, layers, self.info.features)
        layered.finish()


def build(
    brat_dir: str | Path | None = None,
    types: str | Sequence[str] | None = None,
    max_layers: int = 3,
    discontinuous: Discontinuous = "hull",
    skip_invalid: bool = False,
) -> tuple[datasets.DatasetDict, RadiologyNer]:
    """Run the builder in a fresh cache (so an edited corpus is never served stale) and return its dataset.

    The dataset is memory-mapped from Arrow files, as ``datasets`` serves every dataset, so a large corpus is not
    held in memory; the cache is a temporary folder (under ``TMPDIR``) removed when the process exits.

    Raises:
        BratError: the corpus cannot be read (every problem of every split listed), or a report changed while it
            was built.
        OSError: the cache (under the temporary folder, ``TMPDIR``) cannot be written.
    """
    cache = tempfile.TemporaryDirectory(prefix="radiology-ner-build-")
    try:
        builder = RadiologyNer(
            cache_dir=cache.name,
            brat_dir=str(brat_dir) if brat_dir else None,
            types=types,
            max_layers=max_layers,
            discontinuous=discontinuous,
            skip_invalid=skip_invalid,
        )
        _prepare(builder)
        dataset = builder.as_dataset()
    except BaseException:
        cache.cleanup()
        raise
    _BUILD_CACHES.append(cache)
    return dataset, builder


def _prepare(builder: RadiologyNer) -> None:
    """Run the builder; a write failure in its cache (a full temporary folder) is raised as the ``OSError`` it is,
    a report changed since it was read as the ``BratError`` it is."""
    try:
        builder.download_and_prepare()
    except DatasetGenerationError as error:
        if isinstance(error.__cause__, (OSError, BratError)):
            raise error.__cause__ from None
        raise
