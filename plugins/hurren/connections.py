"""Clients built from :mod:`hurren.settings`: an S3 (MinIO) client and the store's engine.

Nothing else lives here; each caller owns what it builds (dispose engines it no longer needs).
"""

from __future__ import annotations

from typing import Any

from minio import Minio
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from hurren.settings import Settings, settings

__all__ = ["minio_client", "store_engine"]


def minio_client(config: Settings | None = None) -> Minio:
    """A MinIO/S3 client for ``config`` (default: :func:`hurren.settings.settings`)."""
    s = config or settings()
    return Minio(
        s.s3_endpoint,
        access_key=s.s3_access_key,
        secret_key=s.s3_secret_key,
        secure=s.s3_secure,
        region=s.s3_region,
    )


def store_engine(config: Settings | None = None, **engine_kwargs: Any) -> Engine:
    """A SQLAlchemy engine on the municipal store; ``engine_kwargs`` go to ``create_engine``."""
    s = config or settings()
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(s.store_url, **engine_kwargs)
