"""Building the object store an installation's settings name (``store_url``)."""

from __future__ import annotations

from gateway.config import Settings
from gateway.store.base import ObjectStore
from gateway.store.local import LocalStore

MIB = 1 << 20
# Connections kept open to S3 per process: one per concurrent transfer up to this many
# (boto3's default of 10 would queue transfers behind each other on a busy node).
S3_MAX_POOL_CONNECTIONS = 128


def open_store(settings: Settings) -> ObjectStore:
    """The store of ``settings``: a local directory, or an S3-compatible bucket."""
    location = settings.store_location
    if location.scheme == "file":
        assert location.path is not None
        return LocalStore(location.path)
    return _s3_store(settings)


def _s3_store(settings: Settings) -> ObjectStore:
    # boto3 is imported here so that the CLI and local-store installations start fast.
    import boto3
    from botocore.config import Config

    from gateway.store.s3 import S3Store

    location = settings.store_location
    session = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key_id or None,
        aws_secret_access_key=settings.s3_secret_access_key or None,
        region_name=settings.s3_region or None)
    config = Config(
        max_pool_connections=S3_MAX_POOL_CONNECTIONS,
        retries={"max_attempts": 5, "mode": "standard"},
        # Checksums only where S3 requires them: many S3-compatible servers reject the
        # newer default trailing checksums, and the gateway hashes every object itself.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Path-style addressing works with every S3-compatible server behind an endpoint.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"})
    client = session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)
    sse = {"ServerSideEncryption": settings.s3_sse} if settings.s3_sse else {}
    if settings.s3_sse_kms_key_id:
        sse["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
    return S3Store(client, bucket=location.bucket, prefix=location.prefix,
                   part_size=settings.s3_part_size_mib * MIB,
                   part_buffers=settings.s3_part_buffers, sse=sse)
