"""Shared fixtures for the envelope tests: one identity of each kind per session."""

from __future__ import annotations

import pytest

from gateway.envelope import Identity, generate_identity


@pytest.fixture(scope="session")
def x25519_identity() -> Identity:
    """A classical X25519 identity."""
    return generate_identity(post_quantum=False)


@pytest.fixture(scope="session")
def hybrid_identity() -> Identity:
    """A hybrid ML-KEM-768 + X25519 identity."""
    return generate_identity(post_quantum=True)


@pytest.fixture(params=["x25519", "hybrid"])
def identity(
    request: pytest.FixtureRequest, x25519_identity: Identity, hybrid_identity: Identity
) -> Identity:
    """Each kind of identity in turn."""
    return x25519_identity if request.param == "x25519" else hybrid_identity
