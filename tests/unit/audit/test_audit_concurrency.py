"""Several threads appending at once produce one gap-free log that verifies."""

from __future__ import annotations

import threading

from sqlalchemy.orm import Session, sessionmaker

from gateway.audit import AuditLog, AuditTag, verify_database
from tests.unit.audit.audit_support import named


def test_threads_append_without_gaps(log: AuditLog, sessions: sessionmaker[Session]) -> None:
    workers, each = 6, 15
    errors: list[BaseException] = []
    indices: list[int] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        try:
            for number in range(each):
                with sessions.begin() as session:
                    index = log.record(session, tag=AuditTag.UPLOAD_COMPLETE,
                                       actor=named(f"staff-{worker}"), subject=f"file:{number}")
                with lock:
                    indices.append(index)
        except BaseException as exc:  # Surfaced by the assertion below.
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(indices)) == workers * each
    with sessions.begin() as session:
        report = verify_database(session, verifier=log.verifier)
        tags = [event.tag for event in log.events(session)]
    assert report.size == len(tags)
    assert tags.count(AuditTag.UPLOAD_COMPLETE) == workers * each
