"""Proof that the suite leaves the machine's shared Redis alone: before the run, one key of this run
is planted in each of its sixteen databases; a test at the very end of the run checks every one is
still there with its value."""

from __future__ import annotations

import uuid

import redis

from .services import port_open

SHARED_HOST, SHARED_PORT = "127.0.0.1", 6379
DATABASES = range(16)
RUN = uuid.uuid4().hex[:12]


def planted_key(db: int) -> str:
    return f"newsletter-tests:planted:{RUN}:{db}"


def available() -> bool:
    return port_open(SHARED_HOST, SHARED_PORT)


def plant() -> bool:
    if not available():
        return False
    for db in DATABASES:
        with redis.Redis(host=SHARED_HOST, port=SHARED_PORT, db=db) as client:
            client.set(planted_key(db), f"planted in db {db}", ex=24 * 3600)
    return True


def missing() -> list[str]:
    """The planted keys that are gone or changed."""
    gone = []
    for db in DATABASES:
        with redis.Redis(host=SHARED_HOST, port=SHARED_PORT, db=db) as client:
            if client.get(planted_key(db)) != f"planted in db {db}".encode():
                gone.append(f"db {db}: {planted_key(db)}")
    return gone


def remove() -> None:
    for db in DATABASES:
        with redis.Redis(host=SHARED_HOST, port=SHARED_PORT, db=db) as client:
            client.delete(planted_key(db))
