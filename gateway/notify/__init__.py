"""Notifications without health data: e-mail through an SMTP relay and a signed webhook.

A partner's people learn that files wait for them ("3 files for uni-research, the first
expires 5 Dec 14:00 UTC"), admins that a key, grant or authority change awaits a second
admin or that an alarm was raised. What a message says is decided from the audit log and
the transfers' counts and expiry times alone: never a file name, size or content.
Messages wait in an outbox table and a background chore sends them, so a relay that is
down never holds up a transfer (:mod:`gateway.notify.service`).

The package imports none of its modules: every command that opens the data directory
checks the notification settings (:mod:`gateway.notify.settings`), and none of them
should pay for the SMTP, HTTP and e-mail libraries the sender needs
(:mod:`gateway.notify.delivery`).
"""
