"""The catalog asks for credentials (issue 13: "FerretDB needs no credentials; identity data
readable with plain pymongo"). On the default PostgreSQL backend FerretDB hands each client's
user and password to PostgreSQL, which accepts only the install's own password."""

from __future__ import annotations

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import OperationFailure, PyMongoError

from catalog.db import connect, database
from core.settings import Settings
from schemas.catalog import PatientRecord

pytestmark = [pytest.mark.integration]


def plain_client(settings: Settings, **auth: str) -> AsyncMongoClient:
    return AsyncMongoClient(settings.mongo.uri, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000,
                            socketTimeoutMS=10_000, retryWrites=False, **auth)


@pytest.fixture
def postgres_backend(stack: Settings) -> Settings:
    if stack.mongo.backend != "postgresql":
        pytest.skip("FerretDB's SQLite backend has no authentication (docs/security.md, Catalog)")
    return stack


async def test_a_client_without_credentials_reads_nothing(postgres_backend: Settings) -> None:
    client = plain_client(postgres_backend)
    try:
        with pytest.raises(PyMongoError):
            await client[postgres_backend.mongo.database][PatientRecord.collection].find_one({})
    finally:
        await client.close()


async def test_a_wrong_password_is_refused(postgres_backend: Settings) -> None:
    user = postgres_backend.mongo.user
    client = plain_client(postgres_backend, username=user, password="not-the-installs-password",
                          authMechanism="PLAIN")
    try:
        with pytest.raises(OperationFailure):
            await client[postgres_backend.mongo.database][PatientRecord.collection].find_one({})
    finally:
        await client.close()


async def test_the_services_sign_in_with_the_installs_own_password(postgres_backend: Settings) -> None:
    client = connect(postgres_backend.mongo)
    try:
        await database(client, postgres_backend.mongo)[PatientRecord.collection].find_one({})
    finally:
        await client.close()
