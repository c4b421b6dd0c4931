"""The baseline: a dialplan-only recorder (Answer, Playback(notice), MixMonitor + Dial, CDR to
PostgreSQL with cdr_pgsql) in an Asterisk instance of its own, from the same installed root
and the same production configuration, with bench/asterisk-baseline/ laid over it."""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from devstack.asterisk import AsteriskInstance, AsteriskRoot, render_conf
from devstack.ports import free_block
from devstack.postgres import Postgres

OVERLAY = Path(__file__).resolve().parent / "asterisk-baseline"
CDR_DB = "bench_cdr"


@dataclass
class BaselineAsterisk(AsteriskInstance):
    notice: Path | None = None  # the 8 kHz WAV the baseline plays (the service's own notice)

    @property
    def monitor_dir(self) -> Path:
        return self.spool / "monitor"

    def prepare(self) -> None:
        self.monitor_dir.mkdir(parents=True, exist_ok=True)
        sounds = self.home / "sounds"
        sounds.mkdir(parents=True, exist_ok=True)
        if self.notice is not None:
            shutil.copy(self.notice, sounds / "notice.wav")
        super().prepare()  # production configuration, ownership of the whole tree
        etc = self.home / "etc"
        render_conf({**self.values, "SOUNDS_DIR": f"/srv/{self.name}/sounds"}, etc,
                    source=OVERLAY)
        with open(etc / "modules.conf", "a") as modules:
            modules.write("\n; baseline recorder\n" + (OVERLAY / "modules.extra").read_text())
        st = (self.home / "spool").stat()
        for conf in etc.iterdir():
            os.chown(conf, st.st_uid, st.st_gid)


def create_cdr_database(pg: Postgres) -> str:
    """A database and role of the baseline's own in the stack's cluster; returns the password."""
    password = secrets.token_hex(12)
    pg.psql(
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CDR_DB}') THEN "
        f"CREATE ROLE {CDR_DB} LOGIN PASSWORD '{password}'; ELSE "
        f"ALTER ROLE {CDR_DB} LOGIN PASSWORD '{password}'; END IF; END $$;",
        db="postgres",
    )
    if not pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{CDR_DB}'",  # noqa: S608 - constant
                   db="postgres").strip():
        pg.psql(f"CREATE DATABASE {CDR_DB} OWNER {CDR_DB}", db="postgres")
    pg.psql((OVERLAY / "cdr.sql").read_text(), db=CDR_DB)
    pg.psql(f"ALTER TABLE cdr OWNER TO {CDR_DB}", db=CDR_DB)
    return password


def baseline_instance(root: AsteriskRoot, pg: Postgres, state: Path, notice: Path,
                      rtp_start: int, rtp_end: int) -> BaselineAsterisk:
    base = free_block(6, start=20000, end=29000)
    password = create_cdr_database(pg)
    return BaselineAsterisk(
        root,
        f"baseline-{base}",
        {
            "SIP_PORT": str(base),
            "ARI_PORT": str(base + 1),
            "ARI_USER": "baseline",
            "ARI_PASSWORD": secrets.token_hex(12),
            "AGENT1_PORT": str(base + 2),
            "AGENT2_PORT": str(base + 3),
            "AGENT3_PORT": str(base + 4),
            "RTP_START": str(rtp_start),
            "RTP_END": str(rtp_end),
            "CDR_DB_PORT": str(pg.port),
            "CDR_DB_NAME": CDR_DB,
            "CDR_DB_USER": CDR_DB,
            "CDR_DB_PASSWORD": password,
        },
        state,
        notice=notice,
    )


def _answered_with_conversation(first: str, last: str) -> str:
    """The WHERE clause of the answered calls from caller numbers first..last whose record
    carries the conversation's length (generated digits only: nothing else reaches SQL)."""
    if not (first.isdigit() and last.isdigit()):
        raise ValueError("caller numbers are digits")
    return (f"disposition = 'ANSWERED' AND src BETWEEN '{first}' AND '{last}' "
            "AND userfield ~ '^[0-9]+([.][0-9]+)?$'")


def cdr_count(pg: Postgres, first: str, last: str, min_conversation: int) -> int:
    """Answered calls from caller numbers first..last the baseline wrote to PostgreSQL whose
    conversation (the agent's answer to the hang-up, which its dialplan writes into the
    record's userfield) lasted at least `min_conversation` seconds. Not billsec: it runs from
    the caller's Answer(), before the notice, and shows no wait for the agent.

    By number, not by time: cdr_pgsql stores whole seconds, so a time filter would miss
    the calls of a step's first second."""
    where = _answered_with_conversation(first, last)
    sql = (f"SELECT count(*) FROM cdr WHERE {where} "  # noqa: S608
           f"AND userfield::numeric >= {int(min_conversation)}")
    out = pg.psql(sql, db=CDR_DB)
    return int(out.strip() or 0)


def shortest_conversation(pg: Postgres, first: str, last: str) -> str:
    """The shortest conversation (s) of the answered calls from first..last, for a step's
    notes ('' when none has one)."""
    where = _answered_with_conversation(first, last)
    sql = f"SELECT min(userfield::numeric) FROM cdr WHERE {where}"  # noqa: S608
    return pg.psql(sql, db=CDR_DB).strip()


def recordings_since(instance: BaselineAsterisk, since_epoch: float, min_bytes: int) -> int:
    """MixMonitor files written since `since_epoch` that hold at least `min_bytes`."""
    count = 0
    for path in instance.monitor_dir.glob("*.wav"):
        st = path.stat()
        if st.st_mtime >= since_epoch and st.st_size >= min_bytes:
            count += 1
    return count
