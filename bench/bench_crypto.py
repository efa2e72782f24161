"""Benchmark hurren.crypto against gmssl (pure Python) on the same data, in one run (< 2 min).

Run from the repository root: ``.venv/bin/python bench/bench_crypto.py``

SM4: 10 MB through ours (OpenSSL); gmssl manages ~0.2 MB/s, so it gets the first 256 KB of the
same 10 MB and its rate is scaled (ECB throughput does not depend on the size). SM2: wrapping and
unwrapping one 16-byte SM4 key, ours and gmssl's. Outputs are cross-checked before anything is
timed, so a fast wrong answer cannot win.
"""

from __future__ import annotations

import os
import platform
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import cryptography  # noqa: E402
from cryptography.hazmat.backends.openssl import backend  # noqa: E402
from gmssl.sm2 import CryptSM2  # noqa: E402
from gmssl.sm4 import SM4_DECRYPT, SM4_ENCRYPT, CryptSM4  # noqa: E402

from hurren import crypto  # noqa: E402

MB = 1024 * 1024
SM4_SIZE = 10 * MB
GMSSL_SM4_SIZE = 256 * 1024


def best_of(repeats: int, func: Callable[[], object]) -> float:
    """Best wall time of ``repeats`` runs: the least disturbed by other processes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def per_second(count: int, func: Callable[[], object], repeats: int = 3) -> float:
    return count / best_of(repeats, lambda: [func() for _ in range(count)])


def main() -> None:
    started = time.perf_counter()
    data = random.Random(20240903).randbytes(SM4_SIZE)
    key = os.urandom(16)
    private, public = crypto.generate_keypair()

    # --- SM4: check both implementations agree, then time them ----------------------------
    ours_ct = crypto.sm4_encrypt(data, key)
    gm = CryptSM4()
    gm.set_key(key, SM4_ENCRYPT)
    head = data[:GMSSL_SM4_SIZE]
    start = time.perf_counter()
    gm_ct = gm.crypt_ecb(head)
    gm_enc_s = time.perf_counter() - start
    assert gm_ct[:GMSSL_SM4_SIZE] == ours_ct[:GMSSL_SM4_SIZE], "SM4 outputs differ"
    gm.set_key(key, SM4_DECRYPT)
    start = time.perf_counter()
    assert gm.crypt_ecb(gm_ct) == head
    gm_dec_s = time.perf_counter() - start

    ours_enc_s = best_of(5, lambda: crypto.sm4_encrypt(data, key))
    ours_dec_s = best_of(5, lambda: crypto.sm4_decrypt(ours_ct, key))
    assert crypto.sm4_decrypt(ours_ct, key) == data

    # --- SM2: interoperate first, then time ------------------------------------------------
    gm_sm2 = CryptSM2(private_key=private, public_key=public[2:], mode=1)  # C1C3C2, no 04 prefix
    no04 = crypto.CryptoOptions(with_04_prefix=False)
    assert gm_sm2.decrypt(crypto.sm2_encrypt(key, public, options=no04)) == key
    assert crypto.sm2_decrypt(gm_sm2.encrypt(key), private, options=no04) == key

    _, cold_public = crypto.generate_keypair()
    start = time.perf_counter()
    crypto.wrap_key(key, cold_public)  # builds the fixed-base table for this public key
    cold_wrap_ms = (time.perf_counter() - start) * 1e3

    str_key = crypto.wrap_key(key, public)
    wrapped = crypto.b64decode(str_key)
    ours_wrap = per_second(300, lambda: crypto.wrap_key(key, public))
    ours_unwrap = per_second(150, lambda: crypto.unwrap_key(str_key, private))
    gm_wrap = per_second(20, lambda: gm_sm2.encrypt(key), repeats=2)
    gm_unwrap = per_second(20, lambda: gm_sm2.decrypt(wrapped[1:]), repeats=2)

    # --- report ----------------------------------------------------------------------------
    rows = [
        (
            "SM4-ECB+PKCS7 encrypt",
            f"{SM4_SIZE / MB / ours_enc_s:8.1f} MB/s",
            f"{GMSSL_SM4_SIZE / MB / gm_enc_s:8.3f} MB/s*",
            (SM4_SIZE / ours_enc_s) / (GMSSL_SM4_SIZE / gm_enc_s),
        ),
        (
            "SM4-ECB+PKCS7 decrypt",
            f"{SM4_SIZE / MB / ours_dec_s:8.1f} MB/s",
            f"{GMSSL_SM4_SIZE / MB / gm_dec_s:8.3f} MB/s*",
            (SM4_SIZE / ours_dec_s) / (GMSSL_SM4_SIZE / gm_dec_s),
        ),
        (
            "SM2 wrap 16-byte key",
            f"{ours_wrap:7.0f} /s ({1e3 / ours_wrap:.2f} ms)",
            f"{gm_wrap:6.0f} /s ({1e3 / gm_wrap:.1f} ms)",
            ours_wrap / gm_wrap,
        ),
        (
            "SM2 unwrap 16-byte key",
            f"{ours_unwrap:7.0f} /s ({1e3 / ours_unwrap:.2f} ms)",
            f"{gm_unwrap:6.0f} /s ({1e3 / gm_unwrap:.1f} ms)",
            ours_unwrap / gm_unwrap,
        ),
    ]
    print(
        f"hurren.crypto vs gmssl 3.2.2 | Python {platform.python_version()}, cryptography "
        f"{cryptography.__version__}, {backend.openssl_version_text()}, {os.cpu_count()} CPUs"
    )
    print(f"{'operation':<24} {'ours':>24} {'gmssl (pure Python)':>24} {'ours/gmssl':>11}")
    print("-" * 86)
    for name, ours, theirs, ratio in rows:
        print(f"{name:<24} {ours:>24} {theirs:>24} {ratio:>10.0f}x")
    print("-" * 86)
    print(f"ours: SM4 on {SM4_SIZE // MB} MB, best of 5; SM2 best of 3 batches (wrap includes Base64).")
    print(
        f"* gmssl SM4 measured on the first {GMSSL_SM4_SIZE // 1024} KB of the same {SM4_SIZE // MB} MB "
        f"({gm_enc_s:.2f} s + {gm_dec_s:.2f} s) and scaled; it would need "
        f"~{SM4_SIZE / GMSSL_SM4_SIZE * (gm_enc_s + gm_dec_s) / 60:.0f} min for the whole 10 MB both ways."
    )
    print(
        f"ours, first wrap to a new public key (builds its fixed-base table): {cold_wrap_ms:.1f} ms; "
        "later wraps reuse the table."
    )
    print(f"total run time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
