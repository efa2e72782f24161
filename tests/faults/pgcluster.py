"""A throwaway PostgreSQL 15 cluster of the fault matrix's own, so it can be restarted mid-run.

The shared cluster of ``scripts/services`` (port 55432) is never stopped: other test runs use it.
This one lives in a temporary directory, listens on a free loopback port, accepts only the
``postgres`` role with a random password (scram-sha-256) over TCP, and runs as the ``postgres``
OS user (``runuser -u postgres --``) when the tests run as root, as ``scripts/services`` does.
fsync is off: the data is thrown away with the cluster.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

__all__ = ["PG_BIN", "ThrowawayCluster"]

PG_BIN = Path(os.environ.get("HURREN_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThrowawayCluster:
    """``initdb`` + ``pg_ctl start`` in a temp dir; :meth:`restart` is ``pg_ctl restart -m fast``."""

    def __init__(self) -> None:
        self._as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="hurren-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "pg.log"
        self.password = secrets.token_hex(16)
        self.port = _free_port()
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")  # fmt: skip
        pwfile.unlink()
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"
        )
        self.restarts = 0

    def _run(self, program: str, *args: str) -> str:
        cmd = [str(PG_BIN / program), *args]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n{log}"
            )
        return done.stdout

    def url(self, database: str = "postgres") -> str:
        return URL.create("postgresql+psycopg", username="postgres", password=self.password, host="127.0.0.1",
                          port=self.port, database=database).render_as_string(hide_password=False)  # fmt: skip

    def create_database(self, name: str) -> str:
        admin = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)

    def started_at(self) -> str:
        """``pg_postmaster_start_time()``: changes with every restart."""
        engine = create_engine(self.url())
        try:
            with engine.connect() as conn:
                return str(conn.execute(text("select pg_postmaster_start_time()")).scalar_one())
        finally:
            engine.dispose()

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every session is terminated (open transactions roll back),
        the server comes back up; returns once it accepts connections again."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "60", "restart"
        )
        self.restarts += 1

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
