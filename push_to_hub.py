"""Publish a model bundle, a dataset folder or the Gradio Space to the Hugging Face Hub.

    python push_to_hub.py model --model_dir OUT/model --repo_id ORG/NAME [--public] [--revision BRANCH] [--dry_run]
    python push_to_hub.py dataset --dataset_dir DIR --repo_id ORG/NAME [--public] [--dry_run]
    python push_to_hub.py space --space_dir space --repo_id ORG/NAME --model_id ORG/NAME [--private] [--dry_run]

Visibility: models and datasets are private unless ``--public`` (a model fine-tuned on clinical reports can
reproduce pieces of them, and clinical corpora are rarely free to share); Spaces are public unless ``--private``
(the demo holds code, no data). Every run first checks the folder (layout, card metadata, no training data in a
model repo, no secrets by file name or content, no link out of the folder; a model bundle must load as the pipeline
loads it, its int8 graphs checked against its weights) and prints the plan: repo, visibility and why, revision,
every file with its size. ``--dry_run`` stops there and touches no network. Every Hub request
gives up after ``--timeout`` seconds without an answer. Exit codes: 0 done, 1 the Hub could not be used (offline,
no token, unreachable, no answer), 2 a check failed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import DatasetCard, HfApi, ModelCard, SpaceCard, get_token, set_client_factory

from hf_pipeline.hub import hub_id_problem, hub_unreachable, offline_variable
from hf_pipeline.publish_files import (
    EXPECTED_LARGE,
    IGNORE_PATTERNS,
    LARGE_FILE,
    CheckFailed,
    check_common,
    check_sizes,
    human_size,
    matches,
    upload_files,
)

try:  # the HTTP client of huggingface_hub: httpx2 from 2.x, httpx before
    from httpx2 import HTTPError as HubTransportError
    from httpx2 import Timeout as HubTimeout
    from httpx2 import TimeoutException as HubTimeoutError
except ImportError:  # pragma: no cover
    from httpx import HTTPError as HubTransportError
    from httpx import Timeout as HubTimeout
    from httpx import TimeoutException as HubTimeoutError

TRAINING_DATA_PATTERNS = ["*.parquet", "*.arrow", "*.jsonl", "*.conll", "*.csv", "*.tsv", "*.ann"]
TOKENIZER_FILES = ["tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model"]
NETWORK_TIMEOUT_S = 5
DEFAULT_TIMEOUT_S = 120.0
CHECK_FAILED, HUB_FAILED = 2, 1
PUBLIC_DATASET_WARNING = (
    "warning: --public makes this dataset visible to everyone. Clinical corpora usually come under a data-use "
    "agreement that forbids redistribution: publish only data you are allowed to share."
)
PUBLIC_MODEL_WARNING = (
    "warning: --public makes this model visible to everyone. A model fine-tuned on clinical reports can reproduce "
    "pieces of them (the tiny preset memorises its training reports): publish only if the training data allows it."
)
PUBLIC_WARNINGS = {"model": PUBLIC_MODEL_WARNING, "dataset": PUBLIC_DATASET_WARNING}
# Why each repo type gets its visibility, printed with the plan: (repo type, private) -> reason.
VISIBILITY_REASONS = {
    ("model", True): "the default for models: one trained on clinical text can reproduce it; --public to publish",
    ("model", False): "--public was given",
    ("dataset", True): "the default for datasets: clinical corpora are rarely free to share; --public to publish",
    ("dataset", False): "--public was given",
    ("space", False): "the default for Spaces: the demo holds code, no data; --private to hide it",
    ("space", True): "--private was given",
}


class HubUnavailable(Exception):
    """The Hub cannot be used right now (offline mode, no token, no network); the message says what to do."""


@dataclass
class Plan:
    """What a push would do: which files go to which repo, and how."""

    repo_type: str
    repo_id: str
    folder: Path
    files: list[str]
    private: bool
    revision: str | None = None
    space_variables: dict[str, str] = field(default_factory=dict)
    large: list[str] = field(default_factory=list)  # files over LARGE_FILE let through by --allow_large


def load_card(readme: Path, card_class: type[ModelCard] | type[DatasetCard] | type[SpaceCard]):
    """Parse ``README.md`` and its YAML front matter, or fail naming the file."""
    if not readme.is_file():
        raise CheckFailed(f"{readme} is missing: every Hub repo needs a card (README.md with YAML metadata).")
    try:
        card = card_class.load(readme)
    except (ValueError, yaml.YAMLError) as error:
        raise CheckFailed(f"{readme}: the YAML metadata does not parse ({error}); fix the front matter.") from error
    if not card.data.to_dict():
        raise CheckFailed(f"{readme} has no YAML metadata: add a '---' front matter block at the top.")
    return card


def check_model(folder: Path, files: list[str]) -> None:
    """A complete radiology-ner bundle, its card, and no training data."""
    from hf_pipeline.bundle import TASK  # imported here: only model pushes need transformers
    from hf_pipeline.int8 import INT8_FOLDER
    from hf_pipeline.radiology_ner import ARCHITECTURE_KEY, LAYER_FOLDER, LAYERS_CONFIG_KEY

    data_files = [
        relative
        for relative in files
        if matches(relative, TRAINING_DATA_PATTERNS) or (relative.endswith(".txt") and f"{relative[:-4]}.ann" in files)
    ]
    if data_files:
        raise CheckFailed(
            f"{folder} holds training data files {data_files}: a model repo must not carry the corpus. "
            "Move them out, or publish the data separately with `push_to_hub.py dataset`."
        )
    config = read_config(folder / "config.json")
    impl = config.get("custom_pipelines", {}).get(TASK, {}).get("impl")
    if not impl:
        raise CheckFailed(
            f"{folder / 'config.json'} has no custom_pipelines['{TASK}']: save the bundle with "
            "hf_pipeline.save_bundle (train.py does)."
        )
    module = f"{impl.rsplit('.', 1)[0]}.py"
    if module not in files:
        raise CheckFailed(f"{folder / module} is missing: config.json points the pipeline at it; re-save the bundle.")
    for needed in re.findall(r"^from \.(\w+) import", (folder / module).read_text(encoding="utf-8"), re.MULTILINE):
        if f"{needed}.py" not in files:
            raise CheckFailed(f"{folder / needed}.py is missing: {module} imports it; re-save the bundle.")
    check_model_folder(folder, "", files)
    shared = config.get(ARCHITECTURE_KEY) == "shared"  # one model, no layer folders
    for layer in [] if shared else config.get(LAYERS_CONFIG_KEY, [1])[1:]:
        subfolder = f"{LAYER_FOLDER.format(layer)}/"
        read_config(folder / subfolder / "config.json")
        check_model_folder(folder, subfolder, files)
    load_card(folder / "README.md", ModelCard)
    check_bundle_loads(folder, has_int8=any(name.startswith(f"{INT8_FOLDER}/") for name in files))


def check_bundle_loads(folder: Path, has_int8: bool) -> None:
    """The check the pipeline runs when it loads a bundle (every config key, the labels, the tokenizer against the
    embeddings, the heads' parameters), and the int8 graphs against the weights they claim to come from: what
    users would meet after the upload, met before it."""
    from hf_pipeline import load_pipeline

    try:
        load_pipeline(folder, device=-1, quantize="int8" if has_int8 else None)  # int8 runs every fp32 check first
    except ImportError as error:
        raise CheckFailed(f"{folder}: its int8 graphs cannot be checked ({error}): pip install '.[int8]'.") from None
    except Exception as error:  # noqa: BLE001 - whatever the loader refuses, the upload is refused with its reason
        reason = " ".join(str(error).split())
        raise CheckFailed(f"{folder} does not load as a radiology-ner bundle: {reason}") from None


def read_config(path: Path) -> dict:
    if not path.is_file():
        raise CheckFailed(f"{path} is missing: the bundle is incomplete; re-save it with hf_pipeline.save_bundle.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise CheckFailed(f"{path} is not valid JSON ({error}); re-save the bundle.") from error


def check_model_folder(folder: Path, prefix: str, files: list[str]) -> None:
    """Weights and tokenizer files of one layer (``prefix`` is ``""`` for the root, ``"layer_k/"`` otherwise)."""
    weights = [f"{prefix}model.safetensors", f"{prefix}model.safetensors.index.json"]
    if not any(name in files for name in weights):
        raise CheckFailed(f"{folder / weights[0]} is missing: the bundle is incomplete; re-save it (train.py).")
    if f"{prefix}tokenizer_config.json" not in files or not any(f"{prefix}{name}" in files for name in TOKENIZER_FILES):
        raise CheckFailed(
            f"{folder / prefix} lacks tokenizer files (tokenizer_config.json and one of {TOKENIZER_FILES}): "
            "save the tokenizer there too (save_bundle does)."
        )


def check_dataset(folder: Path, files: list[str]) -> None:
    """Parquet files under ``data/`` and a card whose YAML has ``configs``."""
    if not any(fnmatch.fnmatchcase(relative, "data/*.parquet") for relative in files):
        raise CheckFailed(f"{folder / 'data'} holds no .parquet files: export the dataset with `python -m hf_dataset`.")
    card = load_card(folder / "README.md", DatasetCard)
    if not card.data.get("configs"):
        raise CheckFailed(
            f"{folder / 'README.md'} has no `configs:` in its YAML: load_dataset would not find the splits; "
            "re-export the dataset (hf_dataset.card.export writes it)."
        )


def check_space(folder: Path, files: list[str]) -> None:
    """A Gradio Space card naming an app file that exists."""
    readme = folder / "README.md"
    card = load_card(readme, SpaceCard)
    if card.data.get("sdk") != "gradio":
        raise CheckFailed(f"{readme}: the YAML must say `sdk: gradio` (found {card.data.get('sdk')!r}).")
    app_file = card.data.get("app_file")
    if not app_file:
        raise CheckFailed(f"{readme}: the YAML must name the app, e.g. `app_file: app.py`.")
    if app_file not in files:
        raise CheckFailed(f"{folder / app_file} is missing: the card's app_file names it.")


CHECKS = {"model": check_model, "dataset": check_dataset, "space": check_space}


def make_plan(args: argparse.Namespace) -> Plan:
    """Check the folder for ``args.command`` and return what would be uploaded."""
    problem = hub_id_problem(args.repo_id)
    if problem:
        raise CheckFailed(f"--repo_id {args.repo_id}: {problem}; use ORG/NAME.")
    problem = args.model_id and hub_id_problem(args.model_id)
    if problem:
        raise CheckFailed(
            f"--model_id {args.model_id}: {problem}; the Space downloads its model from the Hub: push the bundle "
            "first (python push_to_hub.py model --model_dir FOLDER --repo_id ORG/NAME) and give ORG/NAME."
        )
    folder = Path(args.folder)
    files = upload_files(folder) if folder.is_dir() else []
    check_common(folder, files)
    CHECKS[args.command](folder, files)
    large = check_sizes(folder, files, args.command, args.allow_large)
    return Plan(
        repo_type=args.command,
        repo_id=args.repo_id,
        folder=folder,
        files=files,
        private=args.private,
        revision=args.revision,
        space_variables={"MODEL_ID": args.model_id} if args.command == "space" else {},
        large=large,
    )


def print_plan(plan: Plan, dry_run: bool) -> None:
    sizes = {relative: (plan.folder / relative).stat().st_size for relative in plan.files}
    print(f"{'Dry run, nothing is sent' if dry_run else 'Uploading'}: {plan.folder} ->")
    print(f"  repo:       {plan.repo_id} ({plan.repo_type})")
    visibility = "private" if plan.private else "public"
    print(f"  visibility: {visibility} ({VISIBILITY_REASONS[plan.repo_type, plan.private]})")
    print(f"  revision:   {plan.revision or 'main'}")
    for key, value in plan.space_variables.items():
        print(f"  variable:   {key}={value} (Space variable)")
    expected = " or ".join(EXPECTED_LARGE.get(plan.repo_type, [])) or "none"
    print(f"  size rule:  files over {human_size(LARGE_FILE)} need --allow_large (except {expected})")
    print("  files:")
    for relative, size in sizes.items():
        print(
            f"    {human_size(size):>10}  {relative}" + ("  (large: --allow_large)" if relative in plan.large else "")
        )
    print(f"  total:      {len(sizes)} files, {human_size(sum(sizes.values()))}")


# -------------------------------------------------------------------------------------------------- hub


def require_hub() -> str:
    """The token, once offline mode, login and network have been checked; fails within seconds otherwise."""
    offline = offline_variable()
    if offline:
        raise HubUnavailable(f"{offline} is set: unset it to publish, or use --dry_run.")
    token = get_token()
    if not token:
        raise HubUnavailable("No Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access).")
    reason = hub_unreachable(NETWORK_TIMEOUT_S)
    if reason:
        raise HubUnavailable(
            f"Cannot reach the Hub: {reason}. Check the network, proxy or HF_ENDPOINT, or use --dry_run."
        )
    return token


def set_hub_timeout(seconds: float) -> None:
    """Make every request of huggingface_hub give up after ``seconds`` without progress (its default: never).

    huggingface_hub sends its API calls through one shared ``httpx`` client built by a factory; this wraps the
    factory so that the client (and any rebuilt one) carries the timeout.
    """
    from huggingface_hub.utils._http import default_client_factory  # the factory huggingface_hub itself uses

    def factory() -> Any:
        client = default_client_factory()
        client.timeout = HubTimeout(seconds)
        return client

    set_client_factory(factory)


def request_line(error: HubTransportError) -> str:
    """``METHOD URL`` of the request that failed, or ``a request`` when the error does not carry it."""
    try:
        return f"{error.request.method} {error.request.url}"
    except RuntimeError:  # httpx raises it for an error built without its request
        return "a request"


def push(plan: Plan, token: str, timeout: float = DEFAULT_TIMEOUT_S) -> str:
    """Create the repo (and branch), upload the folder, set Space variables; returns the commit URL."""
    set_hub_timeout(timeout)
    api = HfApi(token=token)
    try:
        api.create_repo(
            plan.repo_id,
            repo_type=plan.repo_type,
            private=plan.private,
            exist_ok=True,
            space_sdk="gradio" if plan.repo_type == "space" else None,
        )
        if plan.revision:
            api.create_branch(plan.repo_id, branch=plan.revision, repo_type=plan.repo_type, exist_ok=True)
        commit = api.upload_folder(
            folder_path=plan.folder,
            repo_id=plan.repo_id,
            repo_type=plan.repo_type,
            revision=plan.revision,
            commit_message=f"Upload {plan.repo_type} with push_to_hub.py",
            ignore_patterns=IGNORE_PATTERNS,
        )
        for key, value in plan.space_variables.items():
            api.add_space_variable(plan.repo_id, key, value)
    except HubTimeoutError as error:
        raise HubUnavailable(
            f"Publishing {plan.repo_id} failed: {request_line(error)} got no answer within {timeout:g} s. "
            "Try again later, or allow more time with --timeout."
        ) from error
    except (OSError, HubTransportError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HubUnavailable(f"Publishing {plan.repo_id} failed: {first_line}") from error
    print(f"Done: {commit.commit_url}")
    if plan.repo_type == "model":
        print(f'Pin this version when loading with remote code: revision="{commit.oid}"')
    return commit.commit_url


# -------------------------------------------------------------------------------------------------- cli


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    model = commands.add_parser("model", help="a bundle folder written by train.py (OUT/model)")
    model.add_argument("--model_dir", dest="folder", required=True)
    model.add_argument("--revision", help="upload to this branch (created if missing) instead of main")
    dataset = commands.add_parser("dataset", help="a folder written by `python -m hf_dataset` (data/*.parquet)")
    dataset.add_argument("--dataset_dir", dest="folder", required=True)
    space = commands.add_parser("space", help="the Gradio demo folder (space/)")
    space.add_argument("--space_dir", dest="folder", required=True)
    space.add_argument("--model_id", required=True, help="the model repo the demo loads (Space variable MODEL_ID)")
    for sub, private in ((model, True), (dataset, True), (space, False)):
        sub.add_argument("--repo_id", required=True, help="ORG/NAME on the Hub")
        visibility = sub.add_mutually_exclusive_group()
        visibility.add_argument("--private", dest="private", action="store_const", const=True, help="a private repo")
        visibility.add_argument("--public", dest="private", action="store_const", const=False, help="a public repo")
        sub.set_defaults(private=private)
        sub.add_argument("--dry_run", action="store_true", help="check and print the plan; touch no network")
        sub.add_argument(
            "--allow_large", action="store_true", help=f"send files over {human_size(LARGE_FILE)} (weights excepted)"
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            help="seconds a Hub request may wait for an answer before the push gives up (default: %(default)g)",
        )
    parser.set_defaults(revision=None, model_id=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 done, 1 Hub unavailable, 2 a check failed)."""
    args = parse_args(argv)
    if not args.private and args.command in PUBLIC_WARNINGS:
        print(PUBLIC_WARNINGS[args.command], file=sys.stderr)
    try:
        token = None if args.dry_run else require_hub()  # within seconds, before the slower checks
        plan = make_plan(args)
        print_plan(plan, dry_run=args.dry_run)
        if token is not None:
            push(plan, token, args.timeout)
    except CheckFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return CHECK_FAILED
    except HubUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return HUB_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
