"""Write the built dataset as Parquet per split plus a dataset card that ``load_dataset`` understands."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import datasets
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from hf_dataset.builder import RadiologyNer, SplitStatistics

STATISTICS_FILE = "statistics.json"
BUILD_ENTRIES = ("data", "README.md", STATISTICS_FILE)  # what a build writes, and replaces with --overwrite
SHOWN_SKIPPED = 100


def size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < limit:
            return name
    return "100K<n<1M"


class OutputError(ValueError):
    """An ``--output_dir`` that cannot take the dataset; the message says what to do."""


def check_output_dir(output_dir: str | Path, overwrite: bool = False) -> Path:
    """Refuse an output folder that is a file, or that is not empty unless ``overwrite``.

    Raises:
        OutputError: with the fix in the message.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"--output_dir {output_dir} is a file; pass a folder (it is created if missing).")
    blocking = next((parent for parent in output_dir.absolute().parents if parent.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise OutputError(f"--output_dir {output_dir} cannot be created: {blocking} is a file; pass another folder.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not overwrite:
        raise OutputError(
            f"--output_dir {output_dir} is not empty. Pass --overwrite to replace the dataset in it "
            f"({', '.join(BUILD_ENTRIES)}; data/ as a whole, other files are kept), or choose a new folder."
        )
    return output_dir


def export(
    dataset: datasets.DatasetDict,
    builder: RadiologyNer,
    output_dir: str | Path,
    license: str = "other",
    pretty_name: str = "Spanish radiology reports with layered nested entities",
    overwrite: bool = False,
) -> Path:
    """Write ``data/<split>-00000-of-00001.parquet``, ``README.md`` and ``statistics.json`` under ``output_dir``.

    All or nothing: the files go to a temporary folder next to ``output_dir`` and are moved into place only
    when every one is complete, so a failed write (a full disk) leaves ``output_dir`` as it was. With
    ``overwrite``, an existing dataset's ``data/`` folder, card and statistics are replaced (no split of the
    old build survives); other files, such as ``.git`` or ``.gitattributes``, are kept.

    Raises:
        OutputError: ``output_dir`` is a file, or is not empty and ``overwrite`` is false.
        OSError: a write failed; nothing was changed in ``output_dir``.
    """
    output_dir = check_output_dir(output_dir, overwrite).absolute()
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        _write_build(dataset, builder, staging, license, pretty_name)
        _install(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def _write_build(
    dataset: datasets.DatasetDict, builder: RadiologyNer, folder: Path, license: str, pretty_name: str
) -> None:
    (folder / "data").mkdir()
    for split, rows in dataset.items():
        rows.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    statistics = {split: layered.statistics.to_dict() for split, layered in builder.splits.items()}
    (folder / STATISTICS_FILE).write_text(json.dumps(statistics, indent=2) + "\n", encoding="utf-8")
    dataset_card(dataset, builder, license, pretty_name).save(folder / "README.md")


def _install(staging: Path, output_dir: Path) -> None:
    """Move a complete build into ``output_dir``: one rename for a new or empty folder, else entry by entry."""
    if not output_dir.exists() or not any(output_dir.iterdir()):
        if output_dir.exists():
            output_dir.rmdir()
        staging.rename(output_dir)
        return
    old = staging / ".old"
    old.mkdir()
    for name in BUILD_ENTRIES:
        if (output_dir / name).exists() or (output_dir / name).is_symlink():
            os.replace(output_dir / name, old / name)
        os.replace(staging / name, output_dir / name)


def dataset_card(dataset: datasets.DatasetDict, builder: RadiologyNer, license: str, pretty_name: str) -> DatasetCard:
    rows = sum(len(split) for split in dataset.values())
    card_data = DatasetCardData(
        language=["es"],
        license=license,
        pretty_name=pretty_name,
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        size_categories=[size_category(rows)],
        tags=["medical", "radiology", "nested-ner", "brat", "spanish"],
    )
    data_files = [{"split": split, "path": f"data/{split}-*"} for split in dataset]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(card_data)
    info = DatasetInfo(features=next(iter(dataset.values())).features)
    info.splits = datasets.SplitDict(
        {name: datasets.SplitInfo(name, num_examples=len(split)) for name, split in dataset.items()}
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card_data)
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n\n{card_body(builder, pretty_name)}")


def card_body(builder: RadiologyNer, pretty_name: str) -> str:
    config = builder.config
    return f"""# {pretty_name}

Spanish radiology reports annotated with overlapping, nested and discontinuous entities (brat standoff),
turned into three **layers** of IOB2 word tags so that one token classifier per layer can learn them
(the method of Solarte-Pabón et al., CLEF eHealth 2021 / SpRadIE). Built with `python -m hf_dataset build`.

## Columns

| column | content |
| --- | --- |
| `id` | report path relative to its split folder, no extension |
| `text` | the report exactly as stored (CRLF kept) |
| `tokens`, `token_offsets` | words and single punctuation marks, with end-exclusive character offsets |
| `ner_tags_1` ... `ner_tags_{config.max_layers}` | IOB2 tags per layer, one `ClassLabel` with the same names on all |
| `entities` | every valid gold entity: `id`, `type`, `start`, `end`, `fragments`, `text`, `layer` (0 = not encoded) |

Labels: {", ".join(f"`{name}`" for name in builder.types)}.

## Policies

- **Offsets** are character offsets into the `.txt` as stored, end-exclusive: `text[start:end]` is the entity
  text for every fragment.
- **Words**: a run of letters (any script, with combining marks), a run of digits, or a single other
  character; a letter glued to a digit starts a new word (`5mm` is `5` + `mm`, `T12` is `T` + `12`), which
  misaligns fewer gold entities on real corpora than keeping them glued. An entity covers the words it
  overlaps; a boundary inside a word is *misaligned*: the entity is widened to whole words and counted.
- **Discontinuous entities** are encoded as `{config.discontinuous}` (`hull`: first start to last end;
  `split`: each fragment as its own span in the same layer). The `entities` column keeps the true fragments
  in the order the `.ann` lists them (brat allows any order; the text field joins them in that order); the hull,
  the layering and the scorer use them sorted.
- **Layers**: entities sorted by (start, longer first, type order) each take the lowest of {config.max_layers}
  layers in which they overlap no word already taken; entities are never split across layers, so every layer
  is valid IOB2. An entity that fits nowhere is **dropped for depth**; exact duplicates (same type, same
  fragments) are **merged** and carry their twin's layer.
- **Invalid** annotations (text that differs from the `.txt`, offsets outside it, a `T` id used twice in one
  `.ann`, types outside the label set) stop the build unless `--skip_invalid` is given; then each one is skipped
  (of a duplicated id, the first line is kept) and listed below and in `statistics.json` with file, line, id
  and reason. Spans covering no word are listed the same way. Unreadable files (a `.txt` without `.ann` or
  the reverse, a file that is not UTF-8) always stop the build. Every problem of every split is reported in
  one run.
- **Oracle**: decoding the gold tags and scoring them against the true gold entities with the task's official
  scorer gives the ceiling of the layered method on this corpus.

Every entity read is accounted for: read = encoded + merged + dropped + invalid.

- **Rebuilding**: the build writes to a temporary folder and moves the files into place only when all are
  complete (a failed write leaves the old folder as it was). A folder that is not empty is refused unless
  `--overwrite` is given; it then replaces `data/` as a whole (no split of an older build survives), this card
  and `statistics.json`, and keeps other files such as `.git` or `.gitattributes`.

## Statistics

{statistics_table(builder)}

{skipped_table(builder)}

## Citation

Solarte-Pabón O. et al., "Information Extraction from Spanish Radiology Reports using multilingual BERT",
CLEF eHealth 2021. Task: Cotik V. et al., "Overview of CLEF eHealth Task 1 - SpRadIE: A challenge on
information extraction from Spanish Radiology Reports", CLEF 2021.
"""


def statistics_table(builder: RadiologyNer) -> str:
    splits: dict[str, SplitStatistics] = {name: layered.statistics for name, layered in builder.splits.items()}
    rows: list[tuple[str, list]] = [
        ("reports", [s.reports for s in splits.values()]),
        ("entities read", [s.read for s in splits.values()]),
        *[(f"type {t}", [s.per_type[t] for s in splits.values()]) for t in builder.types],
        *[(f"layer {k}", [s.per_layer[k] for s in splits.values()]) for k in range(1, builder.config.max_layers + 1)],
        ("merged duplicates", [s.merged for s in splits.values()]),
        ("dropped for depth", [s.dropped for s in splits.values()]),
        ("invalid (skipped)", [s.invalid for s in splits.values()]),
        ("misaligned", [s.misaligned for s in splits.values()]),
        ("discontinuous", [s.discontinuous for s in splits.values()]),
        ("oracle exact F1", [f"{s.oracle['exact_f1']:.4f}" for s in splits.values()]),
        ("oracle lenient F1", [f"{s.oracle['lenient_f1']:.4f}" for s in splits.values()]),
    ]
    lines = ["| | " + " | ".join(splits) + " |", "| --- |" + " ---: |" * len(splits)]
    lines += [f"| {name} | " + " | ".join(str(value) for value in values) + " |" for name, values in rows]
    return "\n".join(lines)


def skipped_table(builder: RadiologyNer, limit: int = SHOWN_SKIPPED) -> str:
    """Every skipped (invalid) annotation with split, file, line, id and reason; the first ``limit`` in full."""
    rows = [(name, item) for name, layered in builder.splits.items() for item in layered.statistics.skipped]
    if not rows:
        return "No annotation was skipped."
    lines = [
        f"Skipped annotations ({len(rows)}):",
        "",
        "| split | file | line | id | reason |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for name, item in rows[:limit]:
        reason = str(item["reason"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {name} | `{item['file']}` | {item['line']} | {item['id']} | {reason} |")
    if len(rows) > limit:
        lines.append(f"\n... and {len(rows) - limit} more, listed in `{STATISTICS_FILE}`.")
    return "\n".join(lines)
