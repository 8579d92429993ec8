"""One quick answer to "can the Hub be used now?", so that nothing waits on a Hub that will not answer."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from huggingface_hub import constants


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
    """Whether ``name`` is meant as a local path rather than a Hub repo id (``owner/name`` or ``name``).

    A Hub id has at most one ``/``, no ``\\`` or ``:``, and never starts with ``.``, ``/`` or ``~``; ``runs/model`` is
    a path when its first folder (``runs``) exists here.
    """
    if name.startswith((".", "/", "~")) or "\\" in name or ":" in name or name.count("/") > 1:
        return True
    return "/" in name and os.path.isdir(name.split("/", 1)[0])


def _in_hub_cache(repo_id: str, repo_type: str) -> bool:
    folder = Path(constants.HF_HUB_CACHE) / f"{repo_type}s--{repo_id.replace('/', '--')}" / "snapshots"
    return folder.is_dir() and any(folder.iterdir())


def unavailable(name: str, repo_type: str = "model", timeout: float = 3.0) -> str | None:
    """Why ``name`` (a local path or a Hub repo id) cannot be used now, in one sentence, or ``None``.

    ``None`` for an existing path, a repo in the local Hub cache, or a reachable Hub. Callers add what to do::

        reason = unavailable(args.model)
        if reason:
            raise SystemExit(f"{reason} Point --model at a local folder ...")
    """
    if os.path.exists(name):
        return None
    if looks_local(name):
        return f"{name} does not exist."
    if _in_hub_cache(name, repo_type):
        return None
    reason = hub_unreachable(timeout=timeout)
    if reason:
        return f"Cannot download {name!r}: it is not cached and the Hub cannot be used ({reason})."
    return None
