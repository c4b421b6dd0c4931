"""Service settings, read from CALLREC_* environment variables."""

from __future__ import annotations

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
        state_dir = Path(env.get("CALLREC_STATE_DIR", str(archive_dir.parent / "state")))
        log_format = env.get("CALLREC_LOG_FORMAT", "json")
        if log_format not in ("json", "console"):
            raise ConfigError("CALLREC_LOG_FORMAT must be 'json' or 'console'")
        months = env.get("CALLREC_RETENTION_MONTHS", "12")
        if not (months.isascii() and months.isdigit()) or not 1 <= int(months) <= 120:
            raise ConfigError("CALLREC_RETENTION_MONTHS must be a whole number from 1 to 120")
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
            retention_months=int(months),
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
