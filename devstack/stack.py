"""The whole local stack: PostgreSQL, Asterisk 22, the callrec service; `.stack/env`.

`make up` runs the demo profile on the documented ports; tests run an ephemeral profile
on free ports with generated passwords, so both can run at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

from devstack.account import Account, closed_directory, service_account
from devstack.asterisk import HOST_ACCOUNT, AsteriskInstance, AsteriskRoot, unmount_below
from devstack.errors import StackError
from devstack.paths import PROMPTS, REPO, stack_dir, venv_python
from devstack.ports import free_block, require_free
from devstack.postgres import Postgres
from devstack.proc import read_pid, spawn, stop, wait_until

DEMO_CONFIG = REPO / "config" / "demo.toml"


# callrec ahead of Asterisk's media work when the machine is out of CPU (README,
# "Performance"); set by root before the service takes its own account
SERVICE_NICE = -10


@dataclass
class StackConfig:
    dir: Path
    name: str  # Asterisk instance directory inside the root
    sip_port: int
    ari_port: int
    web_port: int
    pg_port: int
    agent_ports: dict[str, int]
    rtp_start: int
    rtp_end: int
    ari_user: str
    ari_password: str
    db_owner_password: str
    db_app_password: str
    secret_key: str
    demo: bool = False
    # where the PostgreSQL cluster lives, when not in `dir` (see cluster_home)
    pg_dir: str | None = None
    # the agents' SIP passwords; none given: the demo profile's (asterisk-conf/defaults.env)
    agent_passwords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def demo_profile(cls, directory: Path) -> StackConfig:
        """`make up`: the documented ports; any of them can be moved by environment."""
        return cls(
            dir=directory,
            name="demo",
            sip_port=5060,
            ari_port=8088,
            web_port=8080,
            pg_port=55432,
            agent_ports={f"agent{i}": 5070 + i for i in (1, 2, 3)},
            rtp_start=10000,
            rtp_end=10999,
            ari_user="callrec",
            ari_password="demo-ari-secret",
            db_owner_password="demo-owner-secret",
            db_app_password="demo-app-secret",
            secret_key="demo-secret-key-not-for-production",
            demo=True,
            pg_dir=cluster_home(directory),
        ).with_ports_from(os.environ)

    def with_ports_from(self, env: Mapping[str, str]) -> StackConfig:
        """The ports the environment moves (README: `CALLREC_SIP_PORT=5070 make up`), over
        those of the saved profile; the others stay."""
        moved: dict[str, Any] = {}
        for key, name in _PORT_SETTINGS.items():
            if env.get(name, "").strip():
                moved[key] = _port(env[name], name)
        agents = dict(self.agent_ports)
        for agent in agents:
            name = f"CALLREC_{agent.upper()}_PORT"
            if env.get(name, "").strip():
                agents[agent] = _port(env[name], name)
        return replace(self, **moved, agent_ports=agents)

    @classmethod
    def ephemeral(cls, directory: Path) -> StackConfig:
        """Tests: free ports, generated passwords."""
        base = free_block(8, start=20000, end=29000)
        return cls(
            dir=directory,
            name=f"test-{base}",
            sip_port=base,
            ari_port=base + 1,
            web_port=base + 2,
            pg_port=base + 3,
            agent_ports={"agent1": base + 4, "agent2": base + 5, "agent3": base + 6},
            rtp_start=12000 + (base % 8) * 1000,
            rtp_end=12000 + (base % 8) * 1000 + 999,  # 200 calls x 2 legs x RTP+RTCP
            ari_user="callrec",
            ari_password=secrets.token_hex(12),
            db_owner_password=secrets.token_hex(12),
            db_app_password=secrets.token_hex(12),
            secret_key=secrets.token_hex(32),
            agent_passwords={f"agent{i}": secrets.token_hex(12) for i in (1, 2, 3)},
        )

    def save(self) -> None:
        data = asdict(self)
        data["dir"] = str(self.dir)
        path = self.dir / "stack.json"
        path.write_text(json.dumps(data, indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, directory: Path) -> StackConfig | None:
        try:
            data = json.loads((directory / "stack.json").read_text())
        except FileNotFoundError:
            return None
        data["dir"] = Path(data["dir"])
        return cls(**data)


@dataclass
class Stack:
    cfg: StackConfig
    root: AsteriskRoot = field(default_factory=AsteriskRoot)

    def __post_init__(self) -> None:
        d = self.cfg.dir
        pg_root = Path(self.cfg.pg_dir) if self.cfg.pg_dir else d / "postgres"
        self.pg = Postgres(pg_root, self.cfg.pg_port, self.cfg.db_owner_password,
                           self.cfg.db_app_password)
        self.asterisk = AsteriskInstance(
            self.root,
            self.cfg.name,
            {
                "SIP_PORT": str(self.cfg.sip_port),
                "ARI_PORT": str(self.cfg.ari_port),
                "ARI_USER": self.cfg.ari_user,
                "ARI_PASSWORD": self.cfg.ari_password,
                "AGENT1_PORT": str(self.cfg.agent_ports["agent1"]),
                "AGENT2_PORT": str(self.cfg.agent_ports["agent2"]),
                "AGENT3_PORT": str(self.cfg.agent_ports["agent3"]),
                "RTP_START": str(self.cfg.rtp_start),
                "RTP_END": str(self.cfg.rtp_end),
                **{f"{agent.upper()}_PASSWORD": password
                   for agent, password in self.cfg.agent_passwords.items()},
            },
            d / "asterisk",
        )

    @cached_property
    def account(self) -> Account | None:
        """The account the service and `callrec` commands run as (devstack/account.py);
        None where they run as whoever runs the stack: not root (no account to switch to),
        or a directory on the way to the clone or the stack closed to other accounts
        (`closed_to_account`)."""
        if os.geteuid() != 0 or self.closed_to_account is not None:
            return None
        return service_account(member_of=HOST_ACCOUNT)

    @property
    def closed_to_account(self) -> Path | None:
        for path in (REPO, self.cfg.dir, self.root.path):
            if path.exists() and (closed := closed_directory(path)) is not None:
                return closed
        return None

    # ---- what tests and `make up` read
    @property
    def sip_port(self) -> int:
        return self.cfg.sip_port

    @property
    def agent_ports(self) -> dict[str, int]:
        return self.cfg.agent_ports

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.ari_port}"

    @property
    def ari_user(self) -> str:
        return self.cfg.ari_user

    @property
    def ari_password(self) -> str:
        return self.cfg.ari_password

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.web_port}"

    @property
    def owner_dsn(self) -> str:
        return self.pg.url("callrec_owner")

    @property
    def app_dsn(self) -> str:
        return self.pg.url("callrec_app")

    @property
    def archive_dir(self) -> Path:
        return self.cfg.dir / "archive"

    @property
    def state_dir(self) -> Path:
        return self.cfg.dir / "state"

    @property
    def config_path(self) -> Path:
        return self.cfg.dir / "config" / "routing.toml"

    @property
    def prompts_dir(self) -> Path:
        return self.cfg.dir / "prompts"

    @property
    def log_dir(self) -> Path:
        return self.cfg.dir / "logs"

    @property
    def service_log(self) -> Path:
        return self.log_dir / "callrec.log"

    @property
    def service_pidfile(self) -> Path:
        return self.state_dir / "callrec.pid"

    @property
    def env(self) -> dict[str, str]:
        return {
            "CALLREC_DATABASE_URL": self.app_dsn,
            "CALLREC_DATABASE_OWNER_URL": self.owner_dsn,
            "CALLREC_ARI_URL": self.ari_url,
            "CALLREC_ARI_USER": self.ari_user,
            "CALLREC_ARI_PASSWORD": self.ari_password,
            "CALLREC_ARI_APP": "callrec",
            "CALLREC_SIP_HOST": "127.0.0.1",
            "CALLREC_SIP_PORT": str(self.sip_port),
            "CALLREC_WEB_URL": self.web_url,
            "CALLREC_ARCHIVE_DIR": str(self.archive_dir),
            # Asterisk runs on this host: recordings are read from its spool, not over ARI
            "CALLREC_ASTERISK_RECORDINGS_DIR": str(self.asterisk.recordings),
            "CALLREC_STATE_DIR": str(self.state_dir),
            "CALLREC_CONFIG": str(self.config_path),
            "CALLREC_PROMPTS_DIR": str(self.prompts_dir),
            "CALLREC_PROMPT_CACHE_DIR": str(self.state_dir / "prompt-cache"),
            "CALLREC_PID_FILE": str(self.service_pidfile),
            "CALLREC_SECRET_KEY": self.cfg.secret_key,
            "CALLREC_LOG_FORMAT": "json",
            "CALLREC_NICE": str(SERVICE_NICE),
            **{f"CALLREC_{a.upper()}_PORT": str(p) for a, p in self.agent_ports.items()},
        }

    # ---- lifecycle
    def check_ports(self) -> None:
        require_free(self.cfg.sip_port, "SIP (Asterisk)", "CALLREC_SIP_PORT", udp=True)
        require_free(self.cfg.ari_port, "ARI HTTP (Asterisk)", "CALLREC_ARI_PORT")
        require_free(self.cfg.web_port, "the callrec web console", "CALLREC_WEB_PORT")
        require_free(self.cfg.pg_port, "PostgreSQL", "CALLREC_PG_PORT")

    def up(self, with_service: bool = True, log: Path | None = None) -> None:
        self.cfg.dir.mkdir(parents=True, exist_ok=True)
        self.cfg.dir.chmod(0o755)  # the postgres user must reach its cluster below
        running = {
            "asterisk": self.asterisk.running(),
            "postgres": self.pg.data.exists() and self.pg.running(),
            "callrec": read_pid(self.service_pidfile) is not None,
        }
        self._check_ports_of_stopped(running)
        self.cfg.save()
        self.root.ensure(log=log)
        for sub in (self.archive_dir, self.state_dir, self.log_dir, self.config_path.parent):
            sub.mkdir(parents=True, exist_ok=True)
        self.archive_dir.chmod(0o750)
        self._seed_editable_files()
        if self.account is not None:
            # what the service writes: recordings, journal and built prompts, and what the
            # console edits (the routing file, prompt texts)
            self.account.own(self.archive_dir, self.state_dir, self.config_path.parent,
                             self.prompts_dir)
        self.pg.start()
        self.migrate()
        self.asterisk.start()
        self.build_prompts()
        if with_service:
            self.start_service()
        self.write_env()

    def _check_ports_of_stopped(self, running: dict[str, bool]) -> None:
        if not running["asterisk"]:
            require_free(self.cfg.sip_port, "SIP (Asterisk)", "CALLREC_SIP_PORT", udp=True)
            require_free(self.cfg.ari_port, "ARI HTTP (Asterisk)", "CALLREC_ARI_PORT")
        if not running["postgres"]:
            require_free(self.cfg.pg_port, "PostgreSQL", "CALLREC_PG_PORT")
        if not running["callrec"]:
            require_free(self.cfg.web_port, "the callrec web console", "CALLREC_WEB_PORT")

    def _seed_editable_files(self) -> None:
        """Routing file and prompt sources are copied once; admins (and tests) edit the copy."""
        if not self.config_path.exists() and DEMO_CONFIG.exists():
            shutil.copy(DEMO_CONFIG, self.config_path)
        if not self.prompts_dir.exists() and PROMPTS.exists():
            shutil.copytree(PROMPTS, self.prompts_dir)

    def migrate(self) -> None:
        from callrec.archive.migrate import migrate

        asyncio.run(migrate(self.owner_dsn))

    def _callrec_command(self, args: Sequence[str],
                         extra_env: Mapping[str, str] | None = None,
                         ) -> tuple[list[str], dict[str, str]]:
        """The `callrec` command against this stack, as the service's account: what it
        writes (built prompts, their lock) stays the service's to replace."""
        env = {**os.environ, **self.env, **(extra_env or {})}
        argv = [str(venv_python()), "-m", "callrec.cli", *args]
        if self.account is not None:
            return self.account.command(argv), self.account.environment(env)
        return argv, env

    def exec_callrec(self, args: Sequence[str]) -> NoReturn:
        """Become the `callrec` command (`.stack/callrec`, which `make up` writes), in the
        caller's directory (a relative `--out` is the caller's)."""
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        argv, env = self._callrec_command(args, {"PYTHONPATH": path})
        os.execvpe(argv[0], argv, env)  # noqa: S606 - our own fixed argv, no shell wanted

    def callrec(self, *args: str, check: bool = True, input: str | None = None,
                extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the `callrec` command against this stack."""
        argv, env = self._callrec_command(args, extra_env)
        proc = subprocess.run(
            argv,
            capture_output=True, text=True, env=env, cwd=REPO, input=input, check=False,
        )
        if check and proc.returncode != 0:
            raise StackError(f"callrec {' '.join(args)} failed: {proc.stderr or proc.stdout}")
        return proc

    def build_prompts(self) -> None:
        self.callrec("prompts", "build")

    def start_service(self, timeout: float = 30) -> None:
        if read_pid(self.service_pidfile) is not None:
            return
        env = {**os.environ, **self.env}
        argv = [str(venv_python()), "-m", "callrec.cli", "serve"]
        if self.account is not None:
            argv = self.account.command(argv, nice=SERVICE_NICE)
            env = self.account.environment(env)
        spawn(
            argv,
            log=self.service_log,
            pidfile=self.service_pidfile,
            env=env,
            cwd=REPO,
        )
        wait_until(self._service_ready, timeout, "callrec service", interval=0.1)

    def _service_ready(self) -> bool:
        if read_pid(self.service_pidfile) is None:
            tail = self.service_log.read_text(errors="replace")[-3000:]
            raise StackError(f"callrec service exited during start-up:\n{tail}")
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.web_url + "/healthz", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except urllib.error.HTTPError as exc:
            # 503: up but degraded (database away, archive full): started all the same.
            return exc.code == 503

    def stop_service(self, sig: int = signal.SIGTERM) -> None:
        stop(self.service_pidfile, timeout=15, sig=sig)

    def write_env(self) -> Path:
        path = self.cfg.dir / "env"
        path.write_text("".join(f"{k}={v}\n" for k, v in sorted(self.env.items())))
        path.chmod(0o600)
        self._write_command()
        return path

    def _write_command(self) -> None:
        """`.stack/callrec ARGS`: the `callrec` command with this stack's settings, as the
        service's account (no settings in the script: it reads the stack's own)."""
        script = self.cfg.dir / "callrec"
        script.write_text(
            "#!/bin/sh\n# callrec against the local stack (written by make up)\n"
            f"CALLREC_STACK_DIR={shlex.quote(str(self.cfg.dir))} "
            f"PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}} "
            f"exec {shlex.quote(str(venv_python()))} -m devstack callrec \"$@\"\n")
        script.chmod(0o755)

    def down(self) -> None:
        errors = []
        for step in (self.stop_service, self.asterisk.stop, self.pg.stop):
            try:
                step()
            except (StackError, OSError, subprocess.SubprocessError) as exc:
                errors.append(f"{step.__qualname__}: {exc}")
        if errors:
            raise StackError("; ".join(errors))

    def destroy(self) -> None:
        """Stop everything and remove this stack's state (tests, `make clean-stack`)."""
        try:
            self.down()
        finally:
            self.asterisk.destroy()
            self.pg.destroy()
            if self.cfg.pg_dir:  # its own directory outside the stack's
                shutil.rmtree(Path(self.cfg.pg_dir).parent, ignore_errors=True)
            remove_tree(self.cfg.dir)


def remove_tree(path: Path) -> None:
    """`rm -rf` that never leaves the tree's filesystem: a build of the Asterisk root cut
    short by a signal can leave the host's /dev bind-mounted inside it."""
    unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def cluster_home(directory: Path) -> str | None:
    """None: the cluster lives in the stack directory. The postgres user must reach it, so
    a stack directory others cannot reach (a clone in root's 0700 home) gets its cluster
    under /var/lib/callrec-devstack instead: no permission of the clone's parents is
    changed."""
    for parent in directory.resolve().parents:
        try:
            if not parent.stat().st_mode & stat.S_IXOTH:
                break
        except FileNotFoundError:
            continue
    else:
        return None
    tag = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:12]
    return str(Path("/var/lib/callrec-devstack") / tag / "postgres")


_PORT_SETTINGS = {"sip_port": "CALLREC_SIP_PORT", "ari_port": "CALLREC_ARI_PORT",
                  "web_port": "CALLREC_WEB_PORT", "pg_port": "CALLREC_PG_PORT"}


def _port(text: str, name: str) -> int:
    value = text.strip()
    if not (value.isascii() and value.isdigit() and 1 <= int(value) <= 65535):
        raise StackError(f"{name} must be a port number (1-65535), got {text!r}")
    return int(value)


def saved_stack() -> Stack:
    """The stack saved in the stack directory, demo or test (`.stack/callrec`)."""
    directory = stack_dir()
    saved = StackConfig.load(directory)
    if saved is None:
        raise StackError(f"no stack in {directory}: make up first")
    return Stack(saved)


def demo_stack() -> Stack:
    directory = stack_dir()
    saved = StackConfig.load(directory)
    cfg = saved.with_ports_from(os.environ) if saved else StackConfig.demo_profile(directory)
    if not cfg.demo:
        raise StackError(f"{directory} holds a test stack, not the demo stack")
    return Stack(cfg)
