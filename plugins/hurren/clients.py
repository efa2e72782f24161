"""Clients built from :mod:`hurren.settings`: an S3 (MinIO) client and the store's engine.

Nothing else lives here; each caller owns what it builds (dispose engines it no longer needs).
"""

from __future__ import annotations

import os
from typing import Any

import certifi
import urllib3
from minio import Minio
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from hurren.settings import Settings, settings

__all__ = ["minio_client", "store_engine"]


S3_TIMEOUT = urllib3.Timeout(connect=10, read=60)
"""minio's own default waits 5 minutes for each of 6 tries: a hung S3 would stall a load or a push
for half an hour; this gives up within about 5 minutes and the task fails and retries."""


def minio_client(config: Settings | None = None) -> Minio:
    """A MinIO/S3 client for ``config`` (default: :func:`hurren.settings.settings`)."""
    s = config or settings()
    http = urllib3.PoolManager(
        timeout=S3_TIMEOUT,
        maxsize=16,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        s.s3_endpoint,
        access_key=s.s3_access_key,
        secret_key=s.s3_secret_key,
        secure=s.s3_secure,
        region=s.s3_region,
        http_client=http,
    )


def store_engine(config: Settings | None = None, **engine_kwargs: Any) -> Engine:
    """A SQLAlchemy engine on the municipal store; ``engine_kwargs`` go to ``create_engine``."""
    s = config or settings()
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(s.store_url, **engine_kwargs)
