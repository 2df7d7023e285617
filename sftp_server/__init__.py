"""The SSH/SFTP adapter of Blindpost, on paramiko.

It translates SSH sign-in and SFTP requests into calls on :mod:`gateway` services and
owns only protocol facts: which signature was verified, which challenge is outstanding,
which SFTP path names which gateway object, which status code answers which error.

- :mod:`sftp_server.transport`: algorithms, strict key exchange, version banner.
- :mod:`sftp_server.auth`: the two-factor state machine (public key, then a TOTP code).
- :mod:`sftp_server.vfs`: the one function mapping SFTP paths to gateway objects.
- :mod:`sftp_server.handles`: upload and download handles, the reorder buffer.
- :mod:`sftp_server.server`: the SFTP request handlers and ``limits@openssh.com``.
- :mod:`sftp_server.errors`: the one table from gateway errors to SFTP status codes.
- :mod:`sftp_server.listener`: accept loop, connection limits, timeouts.
- :mod:`sftp_server.service`: worker processes on one port; ``start()`` for ``serve``.
- :mod:`sftp_server.cli`: the ``blindpost sftp`` command.
"""
