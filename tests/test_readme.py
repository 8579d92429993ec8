"""The README's pipeline example prints what it says, with the tiny model its main command trains."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .helpers import REPO

MARKER = "<!-- README example: tiny model -->"


def readme_example() -> tuple[str, str]:
    """The marked Python block and the text block after it (its expected output)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    after = readme[readme.index(MARKER) :]
    code, expected = re.findall(r"```(?:python|text)\n(.*?)```", after, re.DOTALL)[:2]
    return code, expected


def main_command_training() -> list[str]:
    """The training half of the README's first command (the setup half is what CI itself runs)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = re.search(r"bash scripts/setup.sh && \.venv/bin/python (train\.py [^\n`]+)", readme).group(1)
    return command.split()


@pytest.mark.slow
def test_readme_pipeline_example_prints_what_the_readme_shows(tmp_path):
    training = main_command_training()
    assert training[:3] == ["train.py", "--preset", "tiny"] and training[-2:] == ["--output_dir", "runs/tiny"]
    out = tmp_path / "runs" / "tiny"
    trained = subprocess.run(
        [sys.executable, *training[:-1], str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    code, expected = readme_example()
    code = code.replace('"runs/tiny/model"', repr(str(out / "model")))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == expected
