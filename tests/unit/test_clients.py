"""The S3 client gives up on a server that accepts connections and never answers."""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest
import urllib3

from hurren import clients
from hurren.settings import settings


def test_a_hung_s3_fails_the_put_after_bounded_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:  # accept, read nothing back, never answer
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(clients, "S3_TIMEOUT", urllib3.Timeout(connect=1, read=0.5))
    monkeypatch.setenv("HURREN_S3_ENDPOINT", f"127.0.0.1:{server.getsockname()[1]}")
    monkeypatch.setenv("HURREN_S3_REGION", "us-east-1")  # no region lookup first
    settings.cache_clear()
    try:
        client = clients.minio_client()
        started = time.monotonic()
        with pytest.raises(urllib3.exceptions.MaxRetryError):
            client.put_object("hurren-reports", "x.pdf", io.BytesIO(b"%PDF-1.4"), 8)
        assert time.monotonic() - started < 15
        assert len(accepted) == 4  # the first try and 3 retries, then it gives up
    finally:
        settings.cache_clear()
        server.close()
        for s in accepted:
            s.close()
