"""Blindpost's additions to SFTP version 3, shared by the server and ``blindpost send/fetch``.

Stock clients need none of them and are not disturbed by them:

- Files carry two extended attributes (SFTP v3 ``SSH_FILEXFER_ATTR_EXTENDED``) in
  ``stat`` replies and listings: :data:`CIPHERTEXT_SHA256` (the lowercase hex SHA-256 of
  the stored ciphertext, as the gateway recorded it) and :data:`TRANSFER_ID` (the
  transfer's id, stable for the life of the file). OpenSSH's ``sftp``, lftp and
  paramiko read and ignore extended attributes they do not know.
- Staff see the read-only folder :data:`RECIPIENTS_FOLDER` (``/.recipients``) with one
  file per active partner: its published recipient list (:mod:`gateway.recipient_list`).
- Staff also see :data:`AGREEMENTS_FOLDER` (``/.agreements``): a partner's data-sharing
  agreement, and the request :data:`DECLARE_CONTENTS` declares what a pre-encrypted
  upload holds (both below).
- The extended request :data:`DECLARE_RECIPIENTS` (advertised in the version packet)
  tells the gateway, for an upload that is already age ciphertext, the fingerprints of
  the keys the client encrypted to: ``string handle, uint32 count, count times string
  fingerprint``. The gateway cannot check the file against them (age hides who a file
  is for); it checks them against the partner's approved keys and records them.
"""

from __future__ import annotations

RECIPIENTS_FOLDER = ".recipients"
# Staff read a partner's data-sharing agreement at /.agreements/SLUG (absent: none), in
# the format of gateway.agreement_terms, before `blindpost send` checks a file against it.
AGREEMENTS_FOLDER = ".agreements"
# A partner user reads /.portal-enrolment to get the one-time code their first portal
# passkey registration takes (gateway.portal_enrolment); each read issues a new code.
PORTAL_ENROLMENT_FILE = ".portal-enrolment"
CIPHERTEXT_SHA256 = "ciphertext-sha256@blindpost"
TRANSFER_ID = "transfer-id@blindpost"
DECLARE_RECIPIENTS = "declare-recipients@blindpost"
# A declaration names at most this many keys (a partner has a handful).
MAX_DECLARED = 64
# The extended request ``declare-contents@blindpost``: what the sender's client read of a
# pre-encrypted upload before encrypting it (gateway.data_elements): ``string handle,
# string format, uint32 count, count times string column, int64 records`` (-1: unknown).
# The gateway checks it against the partner's agreement and records it as declared.
DECLARE_CONTENTS = "declare-contents@blindpost"
MAX_DECLARED_COLUMNS = 1024
