"""Connecting to the catalog database (MongoDB, or FerretDB locally) with PyMongo's async API.

PyMongo's ``AsyncMongoClient`` is the maintained successor of Motor (end of life 2026-05).
"""

from __future__ import annotations

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from core.settings import MongoSettings


def connect(mongo: MongoSettings, *, timeout_s: float = 10.0) -> AsyncMongoClient:
    """A client that fails a call after ``timeout_s`` without a server (the caller retries)."""
    ms = int(timeout_s * 1000)
    return AsyncMongoClient(
        mongo.uri,
        appname="slidestream",
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=max(ms, 30_000),
        retryWrites=False,  # FerretDB has no retryable writes; our writes are idempotent instead
    )


def database(client: AsyncMongoClient, mongo: MongoSettings) -> AsyncDatabase:
    return client[mongo.database]
