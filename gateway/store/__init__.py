"""Ciphertext object store: an interface and its backends.

Objects are named by random ids chosen here, never by anything a client sent. Only
ciphertext is ever written through this interface. :func:`open_store` builds the
backend that ``store_url`` names (local directory or S3-compatible bucket).
"""

from gateway.store.base import ObjectInfo, ObjectReader, ObjectStore, PendingObject, StoredObject
from gateway.store.factory import open_store
from gateway.store.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectReader", "ObjectStore", "PendingObject",
           "StoredObject", "open_store"]
