"""Helpers of the benchmarks: an older commit's code beside this one, CPU time of other processes.

``checkout(ref)`` adds a detached ``git worktree`` of ``ref`` in a temporary directory and removes
it afterwards; a benchmark then runs its measuring part in a subprocess with that tree's
``plugins`` first on ``PYTHONPATH`` (``code_env``), the same interpreter and services as the new code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process so far (0 when it is gone or unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """The repository at ``ref`` (a branch, tag or commit), as a temporary worktree."""
    with tempfile.TemporaryDirectory(prefix="hurren-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(tree), ref], check=True
        )
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def describe(ref: str) -> str:
    """``ref`` and its short hash, for the report."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True
    )
    return f"{ref} ({out.stdout.strip()})" if out.returncode == 0 else ref


def code_env(tree: Path) -> dict[str, str]:
    """The environment that makes a subprocess import ``tree``'s hurren."""
    # the test kit (simulator, synthetic data) is this tree's whichever code is measured
    path = os.pathsep.join([str(tree / "plugins"), str(ROOT / "testkit")])
    return {**os.environ, "PYTHONPATH": path, "HURREN_BENCH_CODE": str(tree)}


def child_result(cmd: list[str], tree: Path) -> dict:
    """Run ``cmd`` (a bench's own ``--child`` run on ``tree``'s code) and return the JSON of its
    ``RESULT`` line; its stderr's tail and a clear exit when it fails."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"the run on {tree} failed ({proc.returncode})")
    return json.loads(line[len("RESULT ") :])
