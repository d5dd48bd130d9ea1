"""A throwaway PostgreSQL server on 127.0.0.1 for tests (``initdb`` + ``pg_ctl`` in a temporary directory).

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user in a
directory it owns. Tests skip (with the reason) where the binaries or that user are missing.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["postgres_bin", "postgres_server"]


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb`` and ``pg_ctl``, or the ones on PATH."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if all(Path(folder, tool).is_file() for tool in ("initdb", "pg_ctl", "createdb")):
            return Path(folder)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(database: str = "nb360") -> Iterator[str]:
    """Start a server, create ``database``, yield its URL (``postgresql://postgres@127.0.0.1:PORT/database``), stop it.

    Raises ``RuntimeError`` with the reason where no server can be started (the caller skips).
    """
    binaries = postgres_bin()
    if binaries is None:
        raise RuntimeError("PostgreSQL binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin or on PATH")
    prefix: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="nb360-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            raise RuntimeError("running as root and there is no 'postgres' user to run initdb as") from None
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()

    def run(*command: str) -> None:
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True, cwd=folder)

    started = False
    try:
        run(str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c max_connections=50"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "-t", "60", "start")
        started = True
        run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql://postgres@127.0.0.1:{port}/{database}"
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"{Path(err.cmd[len(prefix)]).name} failed: {(err.stderr or err.stdout).strip()[-300:]}") from None
    finally:
        if started:
            subprocess.run(
                [*prefix, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True
            )
        shutil.rmtree(folder, ignore_errors=True)
