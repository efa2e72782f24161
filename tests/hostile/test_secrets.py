"""No secrets in the repository; session keys and SM2 nonces from a CSPRNG; key reuse bounded.

The repository scan reads every file ``git ls-files`` lists (tracked) plus untracked files that are
not ignored (work about to be committed). It looks for PEM private keys, 64-hex strings next to
key/secret/private words, and passwords in URLs. Allowed, explicitly:

* the documented local-loopback defaults ``hurren:hurren`` (PostgreSQL of scripts/services) and
  ``hurren-secret-local`` (MinIO of scripts/services): they only ever reach 127.0.0.1;
* the GB/T 32918 / GM/T 0003 standard's published SM2 test vectors (a private key printed in the
  standard, used by tests/unit/test_crypto.py and the simulator's demo platform): public knowledge.

CSPRNG use and KeyRing bounds are proven in tests/unit/test_crypto.py (named below and checked to
exist); here we check the bound the production code actually configures.
"""

from __future__ import annotations

import inspect
import re
import subprocess
from pathlib import Path

import pytest

from hurren import crypto
from hurren.platform import client as platform_client
from hurren.platform import envelope

ROOT = Path(__file__).resolve().parents[2]

# Passwords in URLs / secret defaults that are documented local-loopback defaults (see docstring).
ALLOWED_URL_CREDENTIALS = {"hurren:hurren"}  # the local PostgreSQL of scripts/services (127.0.0.1 only)
# Placeholders in docs and examples, and the deliberately fake password the log-scrubbing test plants.
PLACEHOLDER_PASSWORDS = {"PASSWORD", "pw", "…", "pw-not-for-logs"}
ALLOWED_SECRET_VALUES = {"hurren-secret-local"}

PEM_PRIVATE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )?PRIVATE KEY-----")
HEX64_NEAR_WORD = re.compile(
    r"(?i)(private|secret|priv_?key|sk|\bkey\b|password|passwd|token)[^\n]{0,40}?\b([0-9a-f]{64})\b"
)
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://([^/\s:@'\"]+):([^/\s@'\"]+)@", re.I)


def repo_files() -> list[Path]:
    def ls(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", *args], cwd=ROOT, capture_output=True, text=True, check=True)
        return [line for line in out.stdout.splitlines() if line]

    names = set(ls()) | set(ls("--others", "--exclude-standard"))
    return sorted(ROOT / n for n in names if (ROOT / n).is_file())


def _standard_vectors() -> set[str]:
    """The SM2 private keys published in the standards (test vectors), as lower-case hex."""
    text = (ROOT / "tests/unit/test_crypto.py").read_text(encoding="utf-8")
    return {m.lower() for m in re.findall(r"\b[0-9A-Fa-f]{64}\b", text)} if "32918" in text else set()


def test_git_sees_the_repository() -> None:
    assert len(repo_files()) > 50


def test_no_pem_private_keys() -> None:
    found = []
    for path in repo_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        if PEM_PRIVATE.search(text) and path.name != Path(__file__).name:
            found.append(str(path.relative_to(ROOT)))
    assert not found


def test_no_64_hex_private_keys_next_to_secret_words() -> None:
    allowed = _standard_vectors()
    found = []
    for path in repo_files():
        if path.suffix in {".tsv", ".lock"} or path.name == "requirements.lock":
            continue  # code tables and pinned package hashes (sha256=...)
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in HEX64_NEAR_WORD.finditer(text):
            if m.group(2).lower() in allowed or "sha256" in m.group(0).lower():
                continue
            found.append(f"{path.relative_to(ROOT)}: {m.group(0)[:80]}")
    assert not found, "\n".join(found)


def test_no_passwords_in_urls_but_the_local_defaults() -> None:
    found = []
    for path in repo_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for m in URL_PASSWORD.finditer(text):
            cred = f"{m.group(1)}:{m.group(2)}"
            if (
                cred in ALLOWED_URL_CREDENTIALS
                or m.group(2) in PLACEHOLDER_PASSWORDS
                or m.group(2).startswith(("$", "{", "<", "*"))
            ):
                continue  # documented default, or a placeholder / template / masked value
            found.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not found, "\n".join(found)


def test_secret_defaults_are_only_the_documented_local_ones() -> None:
    """Hard-coded secret values in shipped code and config (tests hold only obviously fake ones)."""
    pattern = re.compile(r"(?i)\b\w*(?:SECRET_KEY|PASSWORD)[\"']?[ \t]*[:=][ \t]*[\"']([^\"'\s$]{6,})[\"']")
    found = []
    for path in repo_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "tests" or path.suffix not in {
            ".py",
            ".yml",
            ".yaml",
            ".env",
            ".example",
            ".toml",
            ".json",
        }:
            continue
        for m in pattern.finditer(path.read_text(encoding="utf-8", errors="replace")):
            if m.group(1) not in ALLOWED_SECRET_VALUES and m.group(1) != "hurren":
                found.append(f"{path.relative_to(ROOT)}: {m.group(0)}")
    assert not found, "\n".join(found)


# --- CSPRNG and key reuse -----------------------------------------------------------------------

CSPRNG_TESTS = (
    "test_sm2_k_comes_from_secrets_randbelow",
    "test_keypair_comes_from_secrets_randbelow",
    "test_session_key_comes_from_secrets_token_bytes",
    "test_key_rotates_after_max_uses",
)


def test_csprng_use_is_proven_in_test_crypto() -> None:
    from tests.unit import test_crypto

    for name in CSPRNG_TESTS:
        assert callable(getattr(test_crypto, name, None)), name


def test_no_weak_random_in_crypto() -> None:
    src = inspect.getsource(crypto)
    assert "import random" not in src and "random." not in src.replace("secrets.", "")


def test_production_key_reuse_is_bounded() -> None:
    for fn in (envelope.Envelope.__init__, platform_client.PlatformClient.__init__):
        params = inspect.signature(fn).parameters
        assert params["key_max_uses"].default == 1000
        assert params["key_max_age_s"].default == 600.0


def test_key_ring_refuses_unbounded_reuse() -> None:
    public = crypto.public_key_from_private("1" * 64)
    with pytest.raises(ValueError, match="for ever"):
        crypto.KeyRing(public_key=public, max_uses=None, max_age_seconds=None)
    ring = crypto.KeyRing(public_key=public, max_uses=2, max_age_seconds=None)
    first = ring.current()
    assert ring.current() is first
    assert ring.current() is not first  # third use: a fresh key


def test_the_scanners_catch_planted_secrets() -> None:
    """The patterns above are not vacuous: each finds a planted example (built here, never stored)."""
    hexkey = "ab" * 32
    assert PEM_PRIVATE.search("-----BEGIN EC " + "PRIVATE KEY-----")
    assert HEX64_NEAR_WORD.search(f'private_key = "{hexkey}"')
    m = URL_PASSWORD.search("postgresql://admin:" + "s3cr3t@db.example/x")
    assert m and f"{m.group(1)}:{m.group(2)}" not in ALLOWED_URL_CREDENTIALS
    assert URL_PASSWORD.search("postgresql+psycopg://hurren:hurren@127.0.0.1:55432/x")  # found, then allowed
