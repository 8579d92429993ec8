"""Score a folder of predicted brat files against a gold brat folder.

    python -m hf_pipeline.score --gold DIR --pred DIR [--types T1,T2,...] [--json] [--skip_invalid]
    python -m hf_pipeline.score --gold DIR --pred A --compare B [--resamples 1000] [--seed 0] [--json]

Prints micro exact and lenient P/R/F1, the nested and flat figures (see ``hf_pipeline.scoring``) and a per-type
table (``--json``: the same as JSON). ``--compare`` scores a second prediction folder on the same gold and prints
the paired bootstrap over documents of the difference (B - A) in exact and lenient F1, with its 95% interval.
A gold document whose ``.ann`` is missing from the predictions counts as predicting nothing; a prediction for a document
that is not in gold is an error. An invalid annotation (offsets outside the text or not matching it, a duplicate
id) is an error that names file and line; ``--skip_invalid`` scores without it instead and lists every skipped
annotation, gold and predicted, on stderr (and under ``skipped`` with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hf_dataset.ann import Problem, parse_ann
from hf_dataset.brat import BratError, Corpus, read_corpus, read_text
from hf_dataset.entities import Entity
from hf_pipeline.scoring import Report, format_comparison, format_report, paired_bootstrap, score


def read_predictions(
    pred_dir: str | Path, gold: Corpus, skipped: list[Problem] | None = None
) -> dict[str, list[Entity]]:
    """Read ``pred_dir/<doc id>.ann`` for the gold documents, checked against the gold texts.

    Invalid predicted annotations are appended to ``skipped`` when it is given (and left out), else raised.

    Raises:
        BratError: an ``.ann`` for a document not in gold, or an invalid predicted annotation.
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise BratError(f"{pred_dir} is not a folder of predicted .ann files.")
    texts = {doc.id: doc.text for doc in gold.documents}
    found = {path.relative_to(pred_dir).with_suffix("").as_posix(): path for path in pred_dir.rglob("*.ann")}
    extra = sorted(set(found) - set(texts))
    if extra:
        raise BratError(
            f"{len(extra)} predicted file(s) have no gold document, e.g. {pred_dir / extra[0]}.ann. "
            "Point --gold and --pred at matching folders (ids are paths relative to each folder)."
        )
    predictions = {}
    for doc_id, path in found.items():
        entities, problems = parse_ann(read_text(path), texts[doc_id], str(path))
        if problems and skipped is None:
            raise BratError(
                "Invalid predicted annotations:\n  "
                + "\n  ".join(map(str, problems))
                + "\nFix them, or pass --skip_invalid to score without them (each is listed)."
            )
        if problems:
            skipped.extend(problems)
        predictions[doc_id] = entities
    return predictions


def score_folders(
    gold_dir: str | Path,
    pred_dir: str | Path,
    types: list[str] | None = None,
    skipped: list[Problem] | None = None,
) -> Report:
    """Score ``pred_dir`` against ``gold_dir``; with a ``skipped`` list, invalid annotations (gold and predicted)
    are left out and appended to it instead of raising."""
    gold = read_corpus(gold_dir, skip_invalid=skipped is not None)
    if skipped is not None:
        skipped.extend(gold.invalid)
    predicted = read_predictions(pred_dir, gold, skipped)
    return score({doc.id: doc.entities for doc in gold.documents}, predicted, types)


def compare_folders(
    gold_dir: str | Path,
    first: str | Path,
    second: str | Path,
    types: list[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    skipped: list[Problem] | None = None,
) -> dict:
    """The paired bootstrap (:func:`hf_pipeline.scoring.paired_bootstrap`) of ``second`` against ``first``."""
    gold = read_corpus(gold_dir, skip_invalid=skipped is not None)
    if skipped is not None:
        skipped.extend(gold.invalid)
    predictions = [read_predictions(folder, gold, skipped) for folder in (first, second)]
    entities = {doc.id: doc.entities for doc in gold.documents}
    return paired_bootstrap(entities, *predictions, types=types, resamples=resamples, seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_pipeline.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("--gold", required=True, help="gold brat folder (.txt + .ann)")
    parser.add_argument("--pred", required=True, help="predicted .ann files, same relative paths as gold")
    parser.add_argument("--types", help="comma-separated types to score (default: all found)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--skip_invalid", action="store_true", help="score without invalid annotations, listing them")
    parser.add_argument("--compare", help="a second prediction folder: paired bootstrap of its F1 minus --pred's")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples with --compare (1000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed with --compare (0)")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples must be at least 1, got {args.resamples}")
    types = args.types.split(",") if args.types else None
    skipped: list[Problem] | None = [] if args.skip_invalid else None
    try:
        if args.compare:
            result = compare_folders(args.gold, args.pred, args.compare, types, args.resamples, args.seed, skipped)
        else:
            result = score_folders(args.gold, args.pred, types, skipped).to_dict()
    except BratError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.compare:
        print(json.dumps(result, indent=2) if args.json else format_comparison(result, args.pred, args.compare))
        return 0
    if skipped:
        print(f"skipped {len(skipped)} invalid annotation(s):\n  " + "\n  ".join(map(str, skipped)), file=sys.stderr)
        result["skipped"] = [str(problem) for problem in skipped]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['documents']} documents, {result['gold']} gold and {result['predicted']} predicted entities")
    if result["missing_predictions"]:
        print(f"{result['missing_predictions']} gold document(s) have no predicted .ann: counted as predicting nothing")
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
