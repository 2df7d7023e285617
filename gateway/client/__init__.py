"""The client side of Blindpost, for staff and partner machines: ``send`` and ``fetch``.

It needs paramiko, cryptography, click and rich, nothing of the server (no database,
no web framework), so ``pip install blindpost`` stays small. Modules:

- :mod:`~gateway.client.connection`: one SSH connection, host key checked, one code;
- :mod:`~gateway.client.sftp`: a small pipelined SFTP v3 client over it;
- :mod:`~gateway.client.hostkeys`, :mod:`~gateway.client.recipient_pins`: what is pinned;
- :mod:`~gateway.client.send`, :mod:`~gateway.client.fetch`: the two workflows,
  with :mod:`~gateway.client.fetched` (what was fetched) and :mod:`~gateway.client.files`
  (private, atomic, durable output files).
"""
