"""Creating a data directory: keys, configuration, database and the first admin.

``initialise`` is atomic for a new directory: everything is built in a hidden sibling and
renamed into place at the end, so a failure leaves nothing half-made. With ``force`` on an
existing directory it only adds what is missing, and never overwrites a key.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from gateway import resealing, state_keys
from gateway.account_values import NewAccount
from gateway.actors import Actor
from gateway.app import App
from gateway.audit import generate_signing_key_file
from gateway.config import CONFIG_FILE_NAME, Settings, load_settings, render_example
from gateway.db import upgrade
from gateway.db.models import Account, Role
from gateway.errors import ConfigError, ConflictError, NotFoundError
from gateway.hostkey import generate_host_key, write_private_file
from gateway.integrity import ensure_baseline


@dataclass(frozen=True)
class InitResult:
    """What ``initialise`` made, for the operator to see once."""

    data_dir: Path
    host_key_fingerprint: str | None
    admin: NewAccount | None
    # Rows of an installation from before signed state, sealed when its key was created.
    adopted_rows: int = 0


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def initialise(data_dir: Path, *, admin: str | None, force: bool = False,
               environ: dict[str, str] | None = None) -> InitResult:
    """Create (or, with ``force``, complete) a data directory; see the module docstring."""
    data_dir = data_dir.absolute()
    if data_dir.exists() and not _is_empty_dir(data_dir):
        if not force:
            raise ConflictError(f"{data_dir} already exists; use --force to complete it "
                                "(existing keys are never overwritten)")
        return _populate(data_dir, admin=admin, environ=environ)
    parent = data_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.init-", dir=parent))
    except OSError as exc:
        raise ConfigError(f"{parent}: cannot create the data directory ({exc.strerror})") from exc
    try:
        result = _populate(staging, admin=admin, environ=environ)
        if data_dir.exists():
            data_dir.rmdir()  # An empty directory is replaced by the finished one.
        staging.rename(data_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return InitResult(data_dir, result.host_key_fingerprint, result.admin, result.adopted_rows)


def _populate(root: Path, *, admin: str | None, environ: dict[str, str] | None) -> InitResult:
    root.chmod(0o700)
    settings = load_settings(data_dir=root, environ=environ)
    settings.keys_dir.mkdir(mode=0o700, exist_ok=True)
    config = root / CONFIG_FILE_NAME
    if not config.exists():
        write_private_file(config, render_example().encode())
    fingerprint = None
    if not settings.host_key_path.exists():
        fingerprint = generate_host_key(settings.host_key_path)
    if not settings.audit_key_path.exists():
        generate_signing_key_file(settings.audit_key_path)
    new_state_key = not (settings.keys_dir / state_keys.KEY_FILE).exists()
    if new_state_key:
        state_keys.create_key_file(settings.keys_dir)
    return _migrate_and_create_admin(settings, admin, fingerprint=fingerprint,
                                     adopt=new_state_key)


def _migrate_and_create_admin(settings: Settings, admin: str | None, *,
                              fingerprint: str | None, adopt: bool) -> InitResult:
    app = App(settings)
    try:
        app.check_database()
        upgrade(app.engine)
        app.store  # noqa: B018  # Creates the store directories with their modes.
        # A state key created just now for a database that already holds rows: the
        # installation predates signed state, and its rows are trusted once.
        adopted = resealing.adopt(app).rows if adopt and _has_rows(app) else 0
        # From here on the audit log says which version of each granting row is current.
        ensure_baseline(app)
        return InitResult(settings.data_dir, fingerprint, _first_admin(app, admin), adopted)
    finally:
        app.close()


def _has_rows(app: App) -> bool:
    with app.read() as session:
        return session.scalar(select(func.count()).select_from(Account)) != 0


def _first_admin(app: App, admin: str | None) -> NewAccount | None:
    if admin is None:
        return None
    operator = Actor.local_operator()
    try:
        app.accounts.get(operator, admin)
    except NotFoundError:
        pass
    else:
        return None  # Completing with --force: the admin already exists.
    # The bootstrap (gateway.authority): the operator creates admins directly only while
    # there are fewer than two; past that the service refuses, it never proposes.
    new = app.accounts.add(operator, username=admin, role=Role.ADMIN)
    assert isinstance(new, NewAccount)
    return new
