"""The one list of audit event tags, ``subject:action`` (or ``subject:action:outcome``)."""

from __future__ import annotations

import enum


class AuditTag(enum.StrEnum):
    """Every kind of event the audit log records.

    The string values are part of the log's content and of what SIEMs match on:
    never rename one, only add new members.
    """

    LOGIN_SUCCESS = "auth:login:success"
    LOGIN_FAILURE = "auth:login:failure"
    LOCKOUT = "auth:lockout"
    STEP_UP_SUCCESS = "auth:stepup:success"
    STEP_UP_FAILURE = "auth:stepup:failure"
    SESSION_ENDED = "auth:session:ended"
    UPLOAD_COMPLETE = "file:upload:complete"
    UPLOAD_ABORTED = "file:upload:aborted"
    DOWNLOAD_COMPLETE = "file:download:complete"
    DOWNLOAD_INCOMPLETE = "file:download:incomplete"
    FILE_SUPERSEDE = "file:supersede"
    FILE_WITHDRAW = "file:withdraw"
    FILE_PURGE = "file:purge"
    KEY_PROPOSE = "key:propose"
    KEY_APPROVE = "key:approve"
    KEY_REVOKE = "key:revoke"
    ACCOUNT_CREATE = "account:create"
    ACCOUNT_DISABLE = "account:disable"
    ACCOUNT_ENABLE = "account:enable"
    ACCOUNT_KEY_ADD = "account:key:add"
    ACCOUNT_TOTP_RESET = "account:totp:reset"
    PARTNER_CREATE = "partner:create"
    PARTNER_CHANGE = "partner:change"
    PARTNER_DISABLE = "partner:disable"
    SETTING_CHANGE = "setting:change"
    SETTING_INSECURE_USE = "setting:insecure:use"
    AUDIT_CHECKPOINT = "audit:checkpoint"
    INTEGRITY_VIOLATION = "integrity:violation"
    INTEGRITY_ADOPT = "integrity:adopt"
    INTEGRITY_KEY_ROTATE = "integrity:key:rotate"
    INTEGRITY_REMOVE = "integrity:remove"
    ACCESS_DENIED = "access:denied"
    SERVICE_START = "service:start"
    SERVICE_STOP = "service:stop"
    SERVICE_WORKER_RESTART = "service:worker:restart"
    SERVICE_PURGE_FAILURE = "service:purge:failure"
    LOGOUT = "auth:logout"
    ACCOUNT_PASSWORD_CHANGE = "account:password:change"
    ACCOUNT_TOTP_ENROL = "account:totp:enrol"
    ACCOUNT_PASSKEY_ADD = "account:passkey:add"
    ACCOUNT_PASSKEY_REMOVE = "account:passkey:remove"
    TOKEN_CREATE = "token:create"
    TOKEN_REVOKE = "token:revoke"
    AUDIT_VERIFY = "audit:verify"
    EXPOSURE_REPORT = "exposure:report"
    ACCOUNT_KEY_REMOVE = "account:key:remove"
    ACCOUNT_UNLOCK = "account:unlock"
    ACCOUNT_ALLOW_FROM = "account:allow-from"
    ACCOUNT_MACHINE_PROPOSE = "account:machine:propose"
    ACCOUNT_MACHINE_APPROVE = "account:machine:approve"
    AUTHORITY_PROPOSE = "authority:propose"
    AUTHORITY_APPROVE = "authority:approve"
    AUTHORITY_WITHDRAW = "authority:withdraw"
    PARTNER_ENABLE = "partner:enable"
    SOURCE_UNBLOCK = "source:unblock"
    # Current state (gateway/ledger.py): the rows a transaction sealed or removed, with
    # the digest of each; the one-time baseline of an installation from before it; and
    # each TOTP time step used, so that resetting the stored last step replays nothing.
    STATE_SEAL = "state:seal"
    STATE_BASELINE = "state:baseline"
    TOTP_USE = "auth:totp:use"
    # A checkpoint that fewer witnesses than the quorum cosigned, and a witness refusing
    # a checkpoint because it contradicts what the witness cosigned before.
    AUDIT_WITNESS_QUORUM_MISSED = "audit:witness:quorum-missed"
    AUDIT_WITNESS_REFUSED = "audit:witness:refused"
    # Notifications (gateway/notify): an account opting in or out (never the address),
    # a message handed to the relay or webhook, and an attempt that failed.
    NOTIFY_SUBSCRIBE = "notify:subscribe"
    NOTIFY_UNSUBSCRIBE = "notify:unsubscribe"
    NOTIFY_SENT = "notify:sent"
    NOTIFY_FAILURE = "notify:failure"
    # The partner portal: a partner user stored their passkey-wrapped identity (only its
    # recipient's fingerprint is recorded; the wrapped identity is ciphertext).
    PORTAL_IDENTITY_STORE = "portal:identity:store"
    # A partner's data-sharing agreement, written when a second admin approved it
    # (gateway/agreements.py); an upload refused by it is a file:upload:aborted.
    AGREEMENT_SET = "agreement:set"
    # A console password reset (a one-time password, approved by a second admin), and a
    # refused change of one's own password (wrong current password).
    ACCOUNT_PASSWORD_RESET = "account:password:reset"
    ACCOUNT_PASSWORD_FAILURE = "account:password:failure"
    # The code a partner user reads over SFTP to register their first portal passkey
    # (gateway/portal_enrolment.py): issued, used, refused (a wrong one is also counted
    # as a login failure against the account).
    PORTAL_ENROLMENT_ISSUE = "portal:enrolment:issue"
    PORTAL_ENROLMENT_USE = "portal:enrolment:use"
    PORTAL_ENROLMENT_FAILURE = "portal:enrolment:failure"
    # An account's notification address: a code sent to it, and the code typed (the
    # address itself is never recorded).
    NOTIFY_VERIFY_SENT = "notify:verify:sent"
    NOTIFY_VERIFY_FAILURE = "notify:verify:failure"
    # An address code refused because the account asked for too many too quickly
    # (gateway/notify/service.py: VERIFY_SENDS an hour, VERIFY_COOLDOWN apart).
    NOTIFY_VERIFY_LIMITED = "notify:verify:limited"
