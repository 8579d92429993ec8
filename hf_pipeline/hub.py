"""One quick answer to "can the Hub be used now?", so that nothing waits on a Hub that will not answer."""

from __future__ import annotations

import urllib.error
import urllib.request

from huggingface_hub import constants


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hub cannot be used right now (offline mode, no answer within ``timeout`` seconds), or ``None``.

    Any HTTP answer, even an error status, means the Hub is reachable.
    """
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 is set"
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        return f"{constants.ENDPOINT} could not be reached within {timeout:g} s ({error})"
    return None
