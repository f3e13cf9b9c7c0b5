"""The S3 object store on the real MinIO: checksums, copies, deletes, listings, ranged reads,
and reading one tile of a stored pyramidal TIFF without downloading the slide."""

from __future__ import annotations

import hashlib

import pytest

from core.settings import Settings, TierEndpoint
from schemas.common import ObjectRef
from slide_io.tiles import TiledTiff
from storage.objects import ObjectStore
from tests.integration.tierkit import lr_tiff, services, uid

pytestmark = pytest.mark.integration


async def test_put_stat_checksum_copy_delete(stack: Settings) -> None:
    async with services(stack) as svc:
        store = svc.store
        data = lr_tiff(0)
        src = store.ref("recent", f"test/{uid('o')}.tiff")
        stored = await store.put_bytes(src, data)
        assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
        info = await store.stat(src)
        assert info is not None and info.size == len(data) and info.sha256 == stored.sha256
        dst = store.ref("mid", src.key)
        await store.copy(src, dst, sha256=stored.sha256)
        assert await store.checksum(dst) == (stored.sha256, len(data))
        assert (await store.stat(dst)).sha256 == stored.sha256
        await store.delete(src)
        await store.delete(src)  # idempotent
        assert await store.stat(src) is None and await store.checksum(src) is None
        with pytest.raises(FileNotFoundError):
            await store.copy(src, store.ref("long", src.key))


async def test_ranged_reads_return_exact_bytes(stack: Settings) -> None:
    async with services(stack) as svc:
        data = lr_tiff(1)
        ref = svc.store.ref("recent", f"test/{uid('r')}.tiff")
        await svc.store.put_bytes(ref, data)
        assert await svc.store.get_object(ref, offset=100, length=50) == data[100:150]
        assert await svc.store.get_object(ref, offset=len(data) - 10, length=100) == data[-10:]
        reader = svc.store.range_reader(ref)
        assert reader.size == len(data) and reader.name == ref.key
        assert reader.read_range(0, 8) == data[:8]
        assert reader.read_range(len(data) - 3, 10) == data[-3:]
        assert reader.read_range(len(data) + 5, 10) == b""
        with pytest.raises(ValueError):
            reader.read_range(-1, 4)


async def test_one_tile_of_a_stored_slide_reads_like_the_local_file(stack: Settings, tmp_path) -> None:
    async with services(stack) as svc:
        data = lr_tiff(2)
        ref = svc.store.ref("recent", f"test/{uid('t')}.tiff")
        await svc.store.put_bytes(ref, data)
        local = tmp_path / "slide.tiff"
        local.write_bytes(data)
        with TiledTiff(local) as expected, TiledTiff(svc.store.range_reader(ref)) as remote:
            assert remote.level_count == expected.level_count
            offset, length = remote.tile_byte_range(0, 1, 1)
            assert length < len(data) / 2  # one tile is a small part of the slide
            assert (remote.read_tile(0, 1, 1) == expected.read_tile(0, 1, 1)).all()


async def test_list_usage_and_delete_prefix(stack: Settings) -> None:
    async with services(stack) as svc:
        store = svc.store
        bucket = store.bucket("hr_cache")
        prefix = f"test/{uid('p')}/"
        for i in range(5):
            await store.put_bytes(ObjectRef(bucket=bucket, key=f"{prefix}x4/{i}.png"), b"z" * (i + 1))
        await store.put_bytes(ObjectRef(bucket=bucket, key=f"{prefix[:-1]}-other/keep.png"), b"k")
        assert await store.usage(bucket, prefix) == (5, 15)
        assert await store.delete_prefix(bucket, prefix) == 5
        assert await store.list_prefix(bucket, prefix) == []
        assert await store.usage(bucket, f"{prefix[:-1]}-other/") == (1, 1)  # a sibling prefix is untouched
        with pytest.raises(ValueError):
            await store.delete_prefix(bucket, "")


def test_a_bucket_on_two_endpoints_is_refused(stack: Settings) -> None:
    storage = stack.storage.model_copy(update={"mid": TierEndpoint(bucket=stack.storage.recent.bucket,
                                                                   endpoint="10.0.0.9:9000")})
    with pytest.raises(ValueError, match="two endpoints"):
        ObjectStore(storage)


def test_the_running_minio_refuses_the_old_shared_pair_and_takes_the_installs_own(stack: Settings) -> None:
    """Before issue 13 every install ran MinIO with slidestream / slidestream-dev-secret; now the
    stack runs with its own pair (the state dir's secrets/storage-root.key) and refuses that one."""
    from minio import Minio
    from minio.error import S3Error

    old = Minio(stack.storage.endpoint, access_key="slidestream", secret_key="slidestream-dev-secret",
                secure=False, region=stack.storage.region)
    with pytest.raises(S3Error) as refused:
        old.bucket_exists(stack.storage.recent.bucket)
    assert refused.value.code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")
    with pytest.raises(S3Error):
        old.list_buckets()

    access, secret = stack.storage.credentials()
    own = Minio(stack.storage.endpoint, access_key=access, secret_key=secret.get_secret_value(),
                secure=False, region=stack.storage.region)
    assert own.bucket_exists(stack.storage.recent.bucket)
    assert (stack.state_dir / "secrets" / "storage-root.key").stat().st_mode & 0o077 == 0


def test_bootstrap_names_refused_storage_credentials(stack: Settings) -> None:
    """A stack started with the old shared pair and clients using the install's own (or the
    reverse) fail bootstrap with a message saying what to do, not just an S3 error code."""
    from pydantic import SecretStr

    from infra.bootstrap import ensure_buckets
    from infra.errors import BootstrapError

    old = stack.storage.model_copy(update={"access_key": "slidestream", "secret_key": SecretStr("slidestream-dev-secret")})
    with pytest.raises(BootstrapError, match="check the storage credentials") as refused:
        ensure_buckets(old)
    assert "slidestream-dev-secret" not in str(refused.value)
    assert ensure_buckets(stack.storage) == []  # the install's own pair: every bucket is there
