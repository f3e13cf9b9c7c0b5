"""Connecting to the catalog database (MongoDB, or FerretDB locally) with PyMongo's async API.

PyMongo's ``AsyncMongoClient`` is the maintained successor of Motor (end of life 2026-05).
"""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from core.settings import MongoSettings


def connect(mongo: MongoSettings, *, timeout_s: float = 10.0) -> AsyncMongoClient:
    """A client that fails a call after ``timeout_s`` without a server (the caller retries)."""
    ms = int(timeout_s * 1000)
    # On FerretDB's PostgreSQL backend the client signs in (PLAIN; FerretDB passes the user
    # and password through to PostgreSQL, which checks them); a ``url`` carries its own.
    credentials = mongo.credentials()
    auth: dict[str, Any] = {}
    if credentials is not None:
        auth = {"username": credentials[0], "password": credentials[1].get_secret_value(),
                "authMechanism": "PLAIN"}
    return AsyncMongoClient(
        mongo.uri,
        **auth,
        appname="slidestream",
        serverSelectionTimeoutMS=ms,
        connectTimeoutMS=ms,
        socketTimeoutMS=max(ms, 30_000),
        retryWrites=False,  # FerretDB has no retryable writes; our writes are idempotent instead
    )


def database(client: AsyncMongoClient, mongo: MongoSettings) -> AsyncDatabase:
    return client[mongo.database]
