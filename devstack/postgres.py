"""A private PostgreSQL cluster (initdb under the stack directory, its own port).

Two roles, as in a real deployment: `callrec_owner` owns the schema and runs the
migrations; `callrec_app` is what the service connects as (no DDL, no changes to
audit rows). The superuser is reachable only over the cluster's private socket: its
directory and the socket are the postgres user's alone (0700), and a local connection must
come from that user (peer authentication)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import StackError
from devstack.proc import wait_until

DB_NAME = "callrec"


def _pg_bindir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise StackError("PostgreSQL is not installed (apt-get install postgresql)")


@dataclass
class Postgres:
    root: Path  # holds data/, sock/, log
    port: int
    owner_password: str
    app_password: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def sock(self) -> Path:
        return self.root / "sock"

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, role: str = "callrec_app") -> str:
        password = self.app_password if role == "callrec_app" else self.owner_password
        return f"postgresql://{role}:{password}@127.0.0.1:{self.port}/{DB_NAME}"

    # -- running as the postgres user: the server refuses to run as root
    def _as_pg(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise StackError(f"{argv[-1] if argv else ''}: {proc.stderr.strip() or proc.stdout}")
        return proc

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        """initdb once; a half-initialised data directory is wiped and redone."""
        bindir = _pg_bindir()
        if (self.data / "PG_VERSION").exists() and (self.root / "initialised").exists():
            return
        if self.data.exists():
            shutil.rmtree(self.data)
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        for path in (self.root, self.sock):
            self._chown(path)
        self._check_traversable()
        # peer: only the postgres OS user is the superuser; run as another user (not root),
        # the socket's directory is that user's alone, which is what keeps others out
        local = "peer" if os.geteuid() == 0 else "trust"
        self._as_pg(
            [
                str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                f"--auth-local={local}", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--locale=C.UTF-8",
            ]
        )
        (self.root / "initialised").write_text("ok\n")

    def _check_traversable(self) -> None:
        probe = self._as_pg(["test", "-w", str(self.root)], check=False)
        if probe.returncode != 0:
            raise StackError(
                f"the postgres user cannot write {self.root}; every parent directory must be "
                "searchable by others (chmod o+x), or set CALLREC_STACK_DIR elsewhere"
            )

    def running(self) -> bool:
        return self._as_pg(
            [str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "status"], check=False
        ).returncode == 0

    def start(self) -> None:
        self.init()
        self.sock.chmod(0o700)  # clusters made before it was so are closed now too
        if not self.running():
            self._as_pg(
                [
                    str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                    "-w", "-t", "60", "-o",
                    f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 "
                    "-c unix_socket_permissions=0700 -c fsync=on -c max_connections=200",
                    "start",
                ]
            )
        wait_until(self._ready, 60, "PostgreSQL")
        self._bootstrap_roles()

    def _ready(self) -> bool:
        return self._as_pg(
            [str(_pg_bindir() / "pg_isready"), "-h", str(self.sock), "-p", str(self.port)],
            check=False,
        ).returncode == 0

    def psql(self, sql: str, db: str = DB_NAME) -> str:
        out = self._as_pg(
            [
                str(_pg_bindir() / "psql"), "-h", str(self.sock), "-p", str(self.port),
                "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql,
            ]
        )
        return out.stdout

    def _bootstrap_roles(self) -> None:
        # Passwords are generated hex or the demo profile's fixed words: checked to be
        # plain tokens before they are written into SQL text.
        for value in (self.owner_password, self.app_password):
            if not re.fullmatch(r"[A-Za-z0-9_-]{8,}", value):
                raise StackError("database passwords must be 8+ letters, digits, '-' or '_'")
        self.psql(
            f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callrec_owner') THEN
                CREATE ROLE callrec_owner LOGIN PASSWORD '{self.owner_password}';
              ELSE
                ALTER ROLE callrec_owner LOGIN PASSWORD '{self.owner_password}';
              END IF;
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'callrec_app') THEN
                CREATE ROLE callrec_app LOGIN PASSWORD '{self.app_password}';
              ELSE
                ALTER ROLE callrec_app LOGIN PASSWORD '{self.app_password}';
              END IF;
            END $$;
            """,  # noqa: S608 - values checked above
            db="postgres",
        )
        exists = self.psql(
            f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'",  # noqa: S608 - a constant
            db="postgres",
        )
        if not exists.strip():
            self.psql(f"CREATE DATABASE {DB_NAME} OWNER callrec_owner", db="postgres")
        self.psql(
            f"REVOKE ALL ON DATABASE {DB_NAME} FROM PUBLIC; "
            f"GRANT CONNECT ON DATABASE {DB_NAME} TO callrec_app; "
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC; "
            "GRANT USAGE ON SCHEMA public TO callrec_app; "
            "ALTER SCHEMA public OWNER TO callrec_owner;"
        )

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists() and self.running():
            self._as_pg(
                [str(_pg_bindir() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                check=False,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
