"""Helpers for the tests that run the tutorials as displayed (docs/tutorials/)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "docs" / "tutorials"


def console_output(page: str, command: str) -> list[str]:
    """The lines a ``.. code-block:: console`` on ``page`` shows after ``$ command``."""
    text = (TUTORIALS / page).read_text()
    for block in re.findall(r"^\.\. code-block:: console\n\n((?:   .*\n|\n)+)", text, re.MULTILINE):
        lines = [line[3:] for line in block.rstrip("\n").split("\n")]
        if lines and lines[0] == f"$ {command}":
            return lines[1:]
    raise AssertionError(f"{page}: no console block for '$ {command}'")


def run_tutorial(
    script: str,
    cwd: Path | None = None,
    tiny: bool = False,
    launcher: tuple[str, ...] = (),
    timeout: float = 600,
) -> list[str]:
    """Run a tutorial file as its page shows (``python script``); its stdout lines."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        OMP_NUM_THREADS="1",
    )
    if tiny:
        env["FOCAL_DETECT_TUTORIAL_TINY"] = "1"
    result = subprocess.run(
        [sys.executable, *launcher, str(TUTORIALS / script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout.rstrip("\n").split("\n")
