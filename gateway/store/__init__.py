"""Ciphertext object store: an interface and its backends.

Objects are named by random ids chosen here, never by anything a client sent. Only
ciphertext is ever written through this interface.
"""

from gateway.store.base import ObjectInfo, ObjectReader, ObjectStore, PendingObject, StoredObject
from gateway.store.local import LocalStore

__all__ = ["LocalStore", "ObjectInfo", "ObjectReader", "ObjectStore", "PendingObject",
           "StoredObject"]
