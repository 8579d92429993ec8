"""One quick answer to "can the Hub be used now?", so that nothing waits on a Hub that will not answer."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

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
