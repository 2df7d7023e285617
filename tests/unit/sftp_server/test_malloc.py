"""The SFTP process asks glibc for two malloc arenas (see sftp_server/malloc.py)."""

from __future__ import annotations

import platform

from sftp_server.malloc import ARENAS, limit_arenas


def test_arena_ceiling_is_accepted_by_glibc() -> None:
    assert ARENAS == 2
    if platform.libc_ver()[0] == "glibc":
        assert limit_arenas() is True
    else:
        assert limit_arenas() is False
