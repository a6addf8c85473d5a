"""A PostgreSQL database made for one benchmark run and dropped after it (the benchmarks' one way)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def scratch_postgres(admin_url: str = POSTGRES_ADMIN, *, prefix: str = "notifier_bench") -> Iterator[str]:
    """A new, empty database next to `admin_url`'s (its SQLAlchemy URL), dropped on the way out."""
    import psycopg

    from notifier.db import dispose_engines

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{base}/{name}"
    finally:
        dispose_engines()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
