"""Service settings, read from CALLREC_* environment variables."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from callrec.clinic_time import DEFAULT_ZONE, clinic_timezone
from callrec.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    database_url: str
    ari_url: str
    ari_user: str
    ari_password: str
    app_name: str
    web_host: str
    web_port: int
    public_url: str  # how Asterisk reaches our HTTP server (prompt audio)
    archive_dir: Path
    journal_dir: Path
    config_path: Path
    prompts_dir: Path
    prompt_cache_dir: Path
    log_format: str  # "console" or "json"
    retention_months: int = 12  # privacy statement §9
    # Asterisk's recording spool as this process sees it; unset: recordings come over ARI.
    asterisk_recordings_dir: Path | None = None
    # the clinic's calendar for the dates people type and read (callrec.clinic_time)
    timezone: ZoneInfo = DEFAULT_ZONE
    # CPU priority to take at start (callrec.scheduling); None: leave it as started
    nice: int | None = None
    # hours between the service's retention runs (CALLREC_RETENTION_INTERVAL_HOURS)
    retention_interval_hours: float = 24.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env

        def need(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                raise ConfigError(f"{key} is not set")
            return value

        web_url = env.get("CALLREC_WEB_URL", "http://127.0.0.1:8080").rstrip("/")
        host_port = web_url.split("://", 1)[-1].split("/", 1)[0]
        host, _, port = host_port.rpartition(":")
        # isdigit() takes '²' too, which int() refuses: ASCII digits only, a real port
        if not host or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"CALLREC_WEB_URL must look like http://host:port, got {web_url!r}")
        archive_dir = Path(need("CALLREC_ARCHIVE_DIR"))
        state_dir = default_state_dir(env)
        log_format = env.get("CALLREC_LOG_FORMAT", "json")
        if log_format not in ("json", "console"):
            raise ConfigError("CALLREC_LOG_FORMAT must be 'json' or 'console'")
        months = retention_months_from(env)
        interval = env.get("CALLREC_RETENTION_INTERVAL_HOURS", "24").strip()
        try:
            hours = float(interval)
        except ValueError:
            hours = math.nan
        if not MIN_INTERVAL_HOURS <= hours <= MAX_INTERVAL_HOURS:  # NaN fails too
            raise ConfigError(
                f"CALLREC_RETENTION_INTERVAL_HOURS must be a number of hours from "
                f"{MIN_INTERVAL_HOURS} to {MAX_INTERVAL_HOURS:g}, got {interval!r}")
        spool = env.get("CALLREC_ASTERISK_RECORDINGS_DIR", "").strip()
        if spool and not Path(spool).is_absolute():
            raise ConfigError("CALLREC_ASTERISK_RECORDINGS_DIR must be an absolute path")
        nice_text = env.get("CALLREC_NICE", "").strip()
        try:
            nice = int(nice_text) if nice_text else None
        except ValueError:
            nice = 99
        if nice is not None and not -20 <= nice <= 19:
            raise ConfigError("CALLREC_NICE must be a whole number from -20 to 19")
        return cls(
            nice=nice,
            timezone=clinic_timezone(env),
            asterisk_recordings_dir=Path(spool) if spool else None,
            retention_months=months,
            retention_interval_hours=hours,
            database_url=need("CALLREC_DATABASE_URL"),
            ari_url=need("CALLREC_ARI_URL").rstrip("/"),
            ari_user=need("CALLREC_ARI_USER"),
            ari_password=need("CALLREC_ARI_PASSWORD"),
            app_name=env.get("CALLREC_ARI_APP", "callrec"),
            web_host=env.get("CALLREC_WEB_BIND", host),
            web_port=int(port),
            public_url=env.get("CALLREC_PUBLIC_URL", web_url).rstrip("/"),
            archive_dir=archive_dir,
            journal_dir=Path(env.get("CALLREC_JOURNAL_DIR", str(state_dir / "journal"))),
            config_path=Path(need("CALLREC_CONFIG")),
            prompts_dir=Path(env.get("CALLREC_PROMPTS_DIR", "prompts")),
            prompt_cache_dir=Path(
                env.get("CALLREC_PROMPT_CACHE_DIR", str(state_dir / "prompt-cache"))
            ),
            log_format=log_format,
        )


#: Retention runs no more often than every 6 minutes (each is an audit entry and a scan) and
#: no less often than monthly (§9: deletion when the 12 months are up, not weeks later).
MIN_INTERVAL_HOURS, MAX_INTERVAL_HOURS = 0.1, 24.0 * 31


def default_state_dir(env: Mapping[str, str]) -> Path:
    """CALLREC_STATE_DIR, else `state` beside CALLREC_ARCHIVE_DIR, else (a checkout with
    neither set: the commands run by hand) `.stack/state`, where the local stack keeps it."""
    state = env.get("CALLREC_STATE_DIR", "").strip()
    if state:
        return Path(state)
    archive = env.get("CALLREC_ARCHIVE_DIR", "").strip()
    return Path(archive).parent / "state" if archive else Path(".stack/state")


def retention_months_from(env: Mapping[str, str]) -> int:
    """CALLREC_RETENTION_MONTHS (default 12, from 1 to 120)."""
    months = env.get("CALLREC_RETENTION_MONTHS", "12").strip()
    # isdigit() takes '²' too, which int() refuses: ASCII digits only
    if not (months.isascii() and months.isdigit()) or not 1 <= int(months) <= 120:
        raise ConfigError("CALLREC_RETENTION_MONTHS must be a whole number from 1 to 120")
    return int(months)
