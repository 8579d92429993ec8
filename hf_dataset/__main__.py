"""Command line: ``python -m hf_dataset build|stats``.

    python -m hf_dataset build [--brat_dir DIR] [--types T1,T2,...|auto] [--max_layers 3]
                               [--discontinuous hull|split] [--skip_invalid] [--license ID]
                               --output_dir OUT [--overwrite]
    python -m hf_dataset stats --brat_dir DIR [--types ...] [--json]

A DIR with ``train/``, ``dev/`` or ``validation/`` and ``test/`` subfolders gives those splits; a plain folder of
``.txt``/``.ann`` files gives one split, ``train``. Without ``--brat_dir`` the bundled sample corpus is used.
OUT must be missing or empty, or ``--overwrite`` replaces the dataset in it (``data/`` as a whole, the card and
``statistics.json``; other files are kept). The dataset is written to a temporary folder first and moved into
place when complete, so a failed write leaves OUT as it was. Bad input exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import datasets

from hf_dataset.brat import BratError
from hf_dataset.builder import RadiologyNer, build
from hf_dataset.card import check_output_dir, export, skipped_table, statistics_table


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m hf_dataset", description="Brat corpus to a layered dataset.")
    commands = main.add_subparsers(dest="command", required=True)
    for name, help_text in (("build", "write Parquet + dataset card"), ("stats", "print the layering statistics")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--brat_dir", help="brat folder (default: the bundled sample corpus)")
        command.add_argument("--types", help="comma-separated entity types, or 'auto' (default: the SpRadIE types)")
        command.add_argument("--max_layers", type=int, default=3, help="number of tag layers (default 3)")
        command.add_argument("--discontinuous", choices=["hull", "split"], default="hull")
        command.add_argument("--skip_invalid", action="store_true", help="skip and count invalid annotations")
    build_command = commands.choices["build"]
    build_command.add_argument("--output_dir", required=True, help="folder for data/*.parquet and README.md")
    build_command.add_argument(
        "--overwrite", action="store_true", help="replace the dataset files of a non-empty --output_dir"
    )
    build_command.add_argument(
        "--license", default=None, help="license id for the card (default: sample: apache-2.0, else other)"
    )
    commands.choices["stats"].add_argument("--json", action="store_true", help="print statistics as JSON")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    datasets.disable_progress_bars()  # a build takes seconds; the table below is what the user reads
    try:
        builder = run(args)
    except (BratError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        kept = " --output_dir was left as it was." if args.command == "build" else ""
        print(
            f"error: could not read or write: {error}.{kept} Free space (on the output disk and in the temporary "
            f"folder {tempfile.gettempdir()}, set by TMPDIR) or fix the path, then rerun.",
            file=sys.stderr,
        )
        return 2
    if args.command == "stats" and args.json:
        print(json.dumps({name: split.statistics.to_dict() for name, split in builder.splits.items()}, indent=2))
    else:
        print(statistics_table(builder))
        print(skipped_table(builder))
    return 0


def run(args: argparse.Namespace) -> RadiologyNer:
    """Build (and for ``build``, export) the dataset; the output folder is checked before the corpus is read."""
    if args.command == "build":
        check_output_dir(args.output_dir, args.overwrite)
    dataset, builder = build(args.brat_dir, args.types, args.max_layers, args.discontinuous, args.skip_invalid)
    if args.command == "build":
        license = args.license or ("other" if args.brat_dir else "apache-2.0")
        folder = export(dataset, builder, args.output_dir, license=license, overwrite=args.overwrite)
        print(f"wrote {', '.join(f'{name}: {len(rows)} reports' for name, rows in dataset.items())} to {folder}")
    return builder


if __name__ == "__main__":
    sys.exit(main())
