"""Blindpost gateway: the core domain, services, envelope encryption, audit log and CLI.

The dependency rule: this package imports nothing from ``sftp_server`` or ``admin_ui``.
"""

__version__ = "0.1.0"
