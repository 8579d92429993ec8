"""One answer to "can this model or dataset be used now?" for every command that takes a folder or a Hub id.

A name is a local folder, something meant as a local path, or a Hub repo id; :func:`check_usable` tells them apart
the same way everywhere (train.py, predict, the Space, push_to_hub.py, the model card) and fails within seconds,
saying what to do, instead of waiting on a Hub that will not answer.
"""

from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

from huggingface_hub import constants, snapshot_download, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id

KINDS = ("model", "dataset")
DRIVE = re.compile(r"^[A-Za-z]:[\\/]")  # C:\models or C:/models


class UnusableError(ValueError):
    """A model or dataset that cannot be used now; the message names the option, what is wrong and what to do."""


def offline_variable() -> str | None:
    """The environment setting that puts huggingface_hub in offline mode (``"TRANSFORMERS_OFFLINE=1"``), or ``None``.

    huggingface_hub reads ``HF_HUB_OFFLINE`` and, only when that one is unset or empty, ``TRANSFORMERS_OFFLINE``.
    """
    if not constants.HF_HUB_OFFLINE:
        return None
    name = "HF_HUB_OFFLINE" if os.environ.get("HF_HUB_OFFLINE") else "TRANSFORMERS_OFFLINE"
    return f"{name}={os.environ.get(name, '')}"


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be used right now (offline mode, no answer within ``timeout`` seconds), or ``None``.

    Any HTTP answer, even an error status, means the Hub is reachable.
    """
    offline = offline_variable()
    if offline:
        return f"{offline} is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        return f"{constants.ENDPOINT} could not be reached within {timeout:g} s ({error})"
    return None


def looks_local(name: str) -> bool:
    """Whether ``name`` is meant as a local path rather than a Hub repo id (``name`` or ``namespace/name``).

    A path starts with ``.``, ``/`` or ``~``, holds a ``\\`` or a drive letter (``C:/``), more than one ``/``, or a
    ``/`` with an empty side; ``runs/model`` is a path too when its first folder (``runs``) exists here.

    >>> [looks_local(name) for name in ("org/model", "model", "./model", "a/b/c", "C:\\\\models\\\\x", "org/")]
    [False, False, True, True, True, True]
    """
    return _path_syntax(name) or ("/" in name and os.path.isdir(name.split("/", 1)[0]))


def _path_syntax(name: str) -> bool:
    if name.startswith((".", "/", "~")) or "\\" in name or DRIVE.match(name) or name.count("/") > 1:
        return True
    return "/" in name and "" in name.split("/")


def hub_id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Hub repo id (written as a local path, or outside huggingface_hub's rules), or
    ``None``. Says nothing about whether the repo exists.

    >>> hub_id_problem("org/model"), hub_id_problem("runs/tiny/model")
    (None, 'a local path, not a Hub repo id')
    """
    if _path_syntax(name):
        return "a local path, not a Hub repo id"
    try:
        validate_repo_id(name)
    except HFValidationError:
        return "not a Hub repo id (`name` or `namespace/name`, made of letters, digits, '-', '_' and '.')"
    return None


def is_hub_id(name: str | None) -> bool:
    """Whether ``name`` is a Hub repo id and no local path (an existing one, or one written as a path).

    >>> is_hub_id("google-bert/bert-base-multilingual-cased"), is_hub_id("/data/model"), is_hub_id(None)
    (True, False, False)
    """
    return bool(name) and not os.path.exists(name) and not looks_local(name) and hub_id_problem(name) is None


def in_hub_cache(repo_id: str, kind: str = "model", revision: str | None = None) -> bool:
    """Whether the Hub cache holds ``repo_id`` at ``revision``: a model's ``config.json``, a dataset's snapshot, or
    (datasets only) the copy ``datasets`` itself keeps, which is what ``load_dataset`` reads offline."""
    if kind == "model":
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    return cached_snapshot(repo_id, kind, revision) is not None or _in_datasets_cache(repo_id)


def cached_snapshot(repo_id: str, kind: str = "dataset", revision: str | None = None) -> str | None:
    """The folder of ``repo_id``'s complete snapshot in the Hub cache, or ``None``; never asks the Hub."""
    try:
        return snapshot_download(repo_id, repo_type=kind, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def _in_datasets_cache(repo_id: str) -> bool:
    import datasets  # only for a dataset id that is not in the Hub cache: the one case that needs it

    folder = Path(datasets.config.HF_DATASETS_CACHE) / repo_id.replace("/", "___")
    return folder.is_dir() and any(path.is_dir() for path in folder.glob("*/*/*"))


def check_usable(
    name_or_path: str,
    kind: str = "model",
    option: str = "--model_name_or_path",
    advice: str | None = None,
    revision: str | None = None,
    timeout: float = 3.0,
) -> None:
    """Fail within seconds, saying what to do, unless ``name_or_path`` can be used now.

    Usable: an existing folder; a Hub repo id in the local Hub cache; a Hub repo id while the Hub answers (it is
    downloaded later, by whoever loads it). Anything that looks like a local path (see :func:`looks_local`) is
    never sent to the Hub.

    Args:
        name_or_path: a local folder or a Hub repo id (``name`` or ``namespace/name``).
        kind: ``model`` or ``dataset``.
        option: how the user gave it (``--model``, ``MODEL_ID`` ...): every message starts with it.
        advice: what else the user can do, appended to the message about a Hub id that cannot be downloaded
            (default: point ``option`` at a local folder).
        revision: the branch, tag or commit to find in the cache (default: ``main``).
        timeout: seconds to wait for the Hub to answer.

    Raises:
        UnusableError: with a message that says what was wrong and what to do.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    if os.path.isdir(name_or_path):
        return
    if os.path.lexists(name_or_path):
        raise UnusableError(f"{option} {name_or_path} is a file; give a {kind} folder or a Hub {kind} id.")
    if looks_local(name_or_path):
        absolute = os.path.isabs(os.path.expanduser(name_or_path)) or DRIVE.match(name_or_path) or "\\" in name_or_path
        here = "" if absolute else f" (relative to {os.getcwd()})"
        raise UnusableError(f"{option} {name_or_path}: no such folder{here}.")
    problem = hub_id_problem(name_or_path)
    if problem:
        raise UnusableError(f"{option} {name_or_path}: no such folder, and {problem}. Give a folder or a Hub id.")
    if in_hub_cache(name_or_path, kind, revision):
        return
    reason = hub_unreachable(timeout=timeout)
    if reason:
        offline = offline_variable()
        fix = f"Unset {offline.split('=')[0]} to download it once" if offline else "Check the network or HF_ENDPOINT"
        advice = advice or f"or point {option} at a local {kind} folder."
        raise UnusableError(
            f"{option} {name_or_path}: no such folder, and the Hub {kind} {name_or_path!r} is not in the Hub cache "
            f"and cannot be downloaded now ({reason}). {fix}, {advice}"
        )
