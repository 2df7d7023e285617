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

import sys

# paramiko imports the optional package "invoke" (for ProxyCommand and "Match exec" in
# ssh_config files, which this client never reads). pip installs it with paramiko, and
# importing it took 0.07 s of the 0.21 s every `blindpost send` or `fetch` spends
# starting up. A None entry makes paramiko's guarded import fail, so it skips it; a
# process that imported invoke before keeps it.
sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
