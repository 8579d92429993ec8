"""What a push would send, and the checks every repo type gets before anything is sent: the files (ignore
patterns applied), no ``.git``, no link out of the folder, no secret by name or content (UTF-16/32 text included),
and the size policy (a file over ``LARGE_FILE`` needs ``--allow_large``, except model weights and dataset shards)."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

from hf_dataset.brat import link_outside

IGNORE_PATTERNS = [
    ".git/*",
    "*/.git/*",
    "__pycache__/*",
    "*/__pycache__/*",
    "*.pyc",
    "checkpoint-*/*",
    "*/checkpoint-*/*",
]
# Names of files that hold credentials (matched on the file name) and paths (matched on the whole relative path).
SECRET_FILE_PATTERNS = [".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "id_rsa*", "id_dsa*", "id_ecdsa*"]
SECRET_FILE_PATTERNS += ["id_ed25519*", ".netrc", ".pypirc", ".git-credentials", "kaggle.json"]
SECRET_PATH_PATTERNS = [".aws/credentials", "*/.aws/credentials"]
# What a credential looks like inside a file of any type (weights included), and what to do about it. Each pattern
# starts with a literal so that the regex engine skims gigabytes of weights (about 2 s/GB for all four).
SECRET_CONTENT = {
    "a Hugging Face access token (hf_...)": (
        re.compile(rb"hf_[A-Za-z0-9]{30,}"),
        "revoke the token at https://huggingface.co/settings/tokens",
    ),
    "a private key (-----BEGIN ... PRIVATE KEY-----)": (
        re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----"),
        "treat the key as leaked if it was ever shared",
    ),
    "an AWS access key id (AKIA...)": (re.compile(rb"A(?:KIA|SIA)[0-9A-Z]{16}"), "rotate the key in AWS IAM"),
    "a GitHub token (ghp_..., github_pat_...)": (
        re.compile(rb"gh(?:[pousr]_[A-Za-z0-9]{36}|ithub_pat_[A-Za-z0-9_]{40,})"),
        "revoke it at https://github.com/settings/tokens",
    ),
}
# Size policy: any file over LARGE_FILE is refused without --allow_large, except the ones a repo type is made of.
LARGE_FILE = 50 * 1024**2
EXPECTED_LARGE = {"model": ["*.safetensors", "*.onnx"], "dataset": ["*.parquet"]}
SCAN_CHUNK = 1 << 20
SCAN_OVERLAP = 256  # longer than any pattern above, so a secret cut by a chunk boundary is still found


class CheckFailed(Exception):
    """The folder is not ready to publish; the message names the file and the fix."""


# ------------------------------------------------------------------------------------------------ files


def upload_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the files ``upload_folder`` sends, with this script's ignore patterns applied."""
    files = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not any(fnmatch.fnmatchcase(relative, pattern) for pattern in IGNORE_PATTERNS):
            files.append(relative)
    return files


def matches(relative: str, patterns: list[str]) -> bool:
    """Whether the file name (not the folder part) of ``relative`` matches one of ``patterns``."""
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def human_size(size: int) -> str:
    """
    >>> human_size(512), human_size(2048), human_size(3 * 1024**3)
    ('512 B', '2.0 KiB', '3.0 GiB')
    """
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def check_common(folder: Path, files: list[str]) -> None:
    """Checks for every repo type: a folder, no ``.git``, no link out of it, no secrets by name or content."""
    if not folder.is_dir():
        raise CheckFailed(f"{folder} is not a folder: pass the folder to upload.")
    git = next(folder.rglob(".git"), None)
    if git is not None:
        raise CheckFailed(f"{git} is a git checkout: upload from a plain folder (copy the files out of the clone).")
    check_links(folder)
    secrets = [relative for relative in files if is_secret_file(relative)]
    if secrets:
        raise CheckFailed(f"{folder} holds secret files {secrets}: move them out of the folder before publishing.")
    for relative in files:
        found = secret_in(folder / relative)
        if found:
            kind, advice = found
            raise CheckFailed(f"{folder / relative} contains what looks like {kind}: remove it, and {advice}.")


def is_secret_file(relative: str) -> bool:
    """
    >>> [is_secret_file(name) for name in ("id_ed25519", "deploy.key", ".env.local", "x/.aws/credentials", "a.json")]
    [True, True, True, True, False]
    """
    return matches(relative, SECRET_FILE_PATTERNS) or any(
        fnmatch.fnmatchcase(relative, pattern) for pattern in SECRET_PATH_PATTERNS
    )


def check_links(folder: Path) -> None:
    """Refuse a symbolic link that leads out of ``folder``: the upload would send the file it points to."""
    for path in sorted(folder.rglob("*")):
        target = link_outside(path, folder)
        if target is not None:
            raise CheckFailed(
                f"{path} is a link to {target}, outside {folder}: the upload would send that file. "
                "Copy what belongs in the repo into the folder, or delete the link."
            )


def secret_in(path: Path) -> tuple[str, str] | None:
    """``(what, advice)`` for the first credential found in ``path`` (read in chunks, any file type), or ``None``.

    Text written as UTF-16 or UTF-32 (a Windows editor's "Unicode") puts NUL bytes between the characters of a
    token: each chunk is also searched with its NUL bytes removed.
    """
    tail = b""
    with path.open("rb") as stream:
        while chunk := stream.read(SCAN_CHUNK):
            window = tail + chunk
            views = (window, window.replace(b"\0", b"")) if b"\0" in window else (window,)
            for kind, (pattern, advice) in SECRET_CONTENT.items():
                if any(pattern.search(view) for view in views):
                    return kind, advice
            tail = window[-4 * SCAN_OVERLAP :]  # four bytes a character in UTF-32
    return None


def large_files(folder: Path, files: list[str], repo_type: str) -> list[tuple[str, int]]:
    """Files over ``LARGE_FILE`` bytes that the repo type does not expect to be large (model weights and dataset
    shards may be any size): ``(relative path, size)``."""
    expected = EXPECTED_LARGE.get(repo_type, [])
    sizes = ((relative, (folder / relative).stat().st_size) for relative in files)
    return [(relative, size) for relative, size in sizes if size > LARGE_FILE and not matches(relative, expected)]


def check_sizes(folder: Path, files: list[str], repo_type: str, allow_large: bool) -> list[str]:
    """Refuse unexpectedly large files unless ``allow_large``; returns them (the plan marks them)."""
    large = large_files(folder, files, repo_type)
    if large and not allow_large:
        listed = ", ".join(f"{relative} ({human_size(size)})" for relative, size in large)
        raise CheckFailed(
            f"{folder} holds files over {human_size(LARGE_FILE)} that a {repo_type} repo does not need: {listed}. "
            "Move them out, or pass --allow_large if they belong in the repo."
        )
    return [relative for relative, _ in large]
