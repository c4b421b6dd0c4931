"""Asterisk 22 from Debian sid, installed into a root made with debootstrap.

Debian 12 has no asterisk package, so the stack builds a minimal sid root once
(cached under the stack directory) and runs each Asterisk instance chrooted into it,
with its own rendered configuration, spool, run and log directories. Several instances
(`make up`'s and the tests') share the one root."""

from __future__ import annotations

import contextlib
import fcntl
import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devstack.errors import StackError
from devstack.paths import ASTERISK_CONF, stack_dir
from devstack.proc import alive, read_pid, spawn, stop, wait_until

_APT = ["apt-get", "-o", "Acquire::Check-Valid-Until=false", "-o", "Dpkg::Use-Pty=0"]
_PLACEHOLDER = re.compile(r"@([A-Z0-9_]+)@")
_READY_MARK = ".callrec-root-ready"
# the host's account for the chrooted Asterisk (the root's asterisk user takes its ids)
HOST_ACCOUNT = "callrec-asterisk"


def default_root() -> Path:
    return Path(os.environ.get("CALLREC_ASTERISK_ROOT", stack_dir() / "asterisk-root"))


def debian_mirror() -> str:
    """The Debian archive this machine's apt already uses (override: CALLREC_DEBIAN_MIRROR)."""
    if os.environ.get("CALLREC_DEBIAN_MIRROR"):
        return os.environ["CALLREC_DEBIAN_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for src in sources:
        if not src.is_file() or src.name.endswith(("disabled-by-farm", ".save")):
            continue
        for line in src.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                uris = line.split()[1:]
            elif line.startswith("deb "):
                uris = [w for w in line.split()[1:] if "://" in w][:1]
            else:
                continue
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    raise StackError(
        "cannot tell which Debian mirror this machine uses; set CALLREC_DEBIAN_MIRROR"
    )


@dataclass
class AsteriskRoot:
    """The cached sid root with the asterisk package installed."""

    path: Path = field(default_factory=default_root)

    @property
    def ready(self) -> bool:
        return (self.path / _READY_MARK).exists() and (self.path / "usr/sbin/asterisk").exists()

    def ensure(self, log: Path | None = None) -> None:
        """Build the root unless a complete one exists, and give its asterisk user this
        machine's own account for it. A half-built root is never used: the build happens in
        a sibling directory and is renamed only when complete."""
        if self.ready and self._owns_its_ids():
            return
        self._preflight()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.parent / (self.path.name + ".lock")
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # make up and make test may race to build it
            self._build_unless_ready(log)
            self._take_own_ids()

    def _owns_its_ids(self) -> bool:
        try:
            host = pwd.getpwnam(HOST_ACCOUNT)
        except KeyError:
            return False
        return _asterisk_ids(self.path) == (host.pw_uid, host.pw_gid)

    def _take_own_ids(self) -> None:
        """The package gives the root's asterisk user the first free system id of the root
        (101), which on the host can be another service's (on Debian 12 with PostgreSQL,
        postgres's): Asterisk could then signal, trace and read that service's processes and
        files. It runs as an account of the host's own, made here once."""
        if self._owns_its_ids():
            return
        uid, gid = _host_account(self.path)
        old_uid, old_gid = _asterisk_ids(self.path)
        _set_ids(self.path / "etc/passwd", "asterisk", {2: uid, 3: gid})
        _set_ids(self.path / "etc/group", "asterisk", {2: gid})
        device = os.lstat(self.path).st_dev
        for dirpath, dirs, files in os.walk(self.path):
            # not into what is mounted there (an interrupted build's /proc or /dev)
            dirs[:] = [d for d in dirs if os.lstat(os.path.join(dirpath, d)).st_dev == device]
            for name in (dirpath, *(os.path.join(dirpath, f) for f in files)):
                st = os.lstat(name)
                if st.st_uid == old_uid or st.st_gid == old_gid:
                    os.lchown(name,
                              uid if st.st_uid == old_uid else -1,
                              gid if st.st_gid == old_gid else -1)

    def _build_unless_ready(self, log: Path | None) -> None:
        if self.ready:
            return
        partial = self.path.parent / (self.path.name + ".partial")
        if partial.exists():
            unmount_below(partial)
            shutil.rmtree(partial)
        if self.path.exists():  # a root without the ready mark: unusable, rebuild
            unmount_below(self.path)
            shutil.rmtree(self.path)
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._build(partial, out)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]
        partial.rename(self.path)

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise StackError(
                "building the Asterisk root needs root (debootstrap, chroot); run as root or use "
                "the Docker alternative: docker compose up (see README)"
            )
        if shutil.which("debootstrap") is None:
            raise StackError(
                "debootstrap is not installed: apt-get install debootstrap (make up does this), "
                "or use the Docker alternative: docker compose up"
            )

    def _build(self, target: Path, out: object) -> None:
        mirror = debian_mirror()
        run = _runner(out)
        run(["debootstrap", "--variant=minbase", "sid", str(target), mirror])
        (target / "etc/apt/apt.conf.d/99callrec").write_text(
            'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
        )
        with _mounted(target):
            env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
            run(["chroot", str(target), *_APT, "update", "-q"], env=env)
            run(
                ["chroot", str(target), *_APT, "install", "-y", "-q", "--no-install-recommends",
                 "asterisk", "asterisk-modules"],
                env=env,
            )
            run(["chroot", str(target), *_APT, "clean"], env=env)
        (target / _READY_MARK).write_text("asterisk installed\n")

    def sync_hosts(self) -> None:
        """Let the chrooted Asterisk resolve this machine's hostname: it looks itself up on
        every call, and a failed lookup falls back to querying DNS root servers."""
        hosts = self.path / "etc/hosts"
        name = socket.gethostname()
        lines = hosts.read_text().splitlines() if hosts.exists() else []
        if not any(name in line.split()[1:] for line in lines if line and line[0] != "#"):
            lines.append(f"127.0.1.1\t{name}")
            hosts.write_text("\n".join(lines) + "\n")

    def version(self) -> str:
        out = subprocess.run(
            ["chroot", str(self.path), "asterisk", "-V"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()


def _runner(out: object):  # type: ignore[no-untyped-def]
    def run(argv: list[str], env: Mapping[str, str] | None = None) -> None:
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)  # type: ignore[call-overload]
        if proc.returncode != 0:
            raise StackError(f"{' '.join(argv[:4])} ... failed with exit {proc.returncode}")

    return run


@contextlib.contextmanager
def _mounted(root: Path) -> Iterator[None]:
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
    try:
        subprocess.run(["mount", "--bind", "/dev", str(root / "dev")], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", "-l", str(root / "dev")], check=False)
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)


def unmount_below(path: Path) -> None:
    resolved = str(path.resolve())
    mounts = Path("/proc/mounts").read_text().splitlines()
    targets = [m.split()[1] for m in mounts if m.split()[1].startswith(resolved + "/")]
    for target in sorted(targets, reverse=True):
        subprocess.run(["umount", "-l", target], check=False)


def render_conf(values: Mapping[str, str], target: Path, source: Path = ASTERISK_CONF) -> None:
    """Render every asterisk-conf/*.conf into `target`, failing on an unknown placeholder."""
    defaults = load_defaults(source)
    merged = {**defaults, **values}
    target.mkdir(parents=True, exist_ok=True)
    for conf in sorted(source.glob("*.conf")):
        text = conf.read_text()

        def sub(match: re.Match[str], name: str = conf.name) -> str:
            key = match.group(1)
            if key not in merged:
                raise StackError(f"{name}: placeholder @{key}@ has no value in defaults.env")
            return merged[key]

        (target / conf.name).write_text(_PLACEHOLDER.sub(sub, text))


def load_defaults(source: Path = ASTERISK_CONF) -> dict[str, str]:
    values = {}
    for line in (source / "defaults.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


@dataclass
class AsteriskInstance:
    """One running Asterisk with its own configuration inside the shared root."""

    root: AsteriskRoot
    name: str  # directory name under <root>/srv/
    values: dict[str, str]  # placeholder values (ports, passwords)
    state: Path  # host-side directory for the pid file and the console log

    @property
    def home(self) -> Path:
        return self.root.path / "srv" / self.name

    def _inside(self, sub: str) -> str:
        return f"/srv/{self.name}/{sub}"

    @property
    def conf_inside(self) -> str:
        return self._inside("etc/asterisk.conf")

    @property
    def spool(self) -> Path:
        return self.home / "spool"

    @property
    def recordings(self) -> Path:
        return self.spool / "recording"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def pidfile(self) -> Path:
        return self.state / "asterisk.pid"

    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.values['ARI_PORT']}"

    def __post_init__(self) -> None:
        self.values = {**load_defaults(), **self.values}

    def prepare(self) -> None:
        values = {
            **self.values,
            "ETC_DIR": self._inside("etc"),
            "SPOOL_DIR": self._inside("spool"),
            "RUN_DIR": self._inside("run"),
            "LOG_DIR": self._inside("log"),
            "DB_DIR": self._inside("lib"),
            "CACHE_DIR": self._inside("cache"),
        }
        for sub in ("etc", "spool/recording", "spool/tmp", "run", "log", "lib", "cache"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        render_conf(values, self.home / "etc")
        uid, gid = _asterisk_ids(self.root.path)
        for dirpath, _dirs, _files in os.walk(self.home):
            os.chown(dirpath, uid, gid)
            for f in _files:
                os.chown(os.path.join(dirpath, f), uid, gid)
        # the instance's own: etc holds the ARI and agent passwords, spool calls being
        # recorded, log the numbers that called (Asterisk writes them 0644 within)
        self.home.chmod(0o750)
        (self.home / "etc").chmod(0o750)
        # callrec's account, a member of Asterisk's group, reads and deletes the recordings
        self.recordings.chmod(0o770)
        self.state.mkdir(parents=True, exist_ok=True)

    def running(self) -> bool:
        return read_pid(self.pidfile) is not None

    def start(self, timeout: float = 60) -> None:
        if self.running():
            return
        self.prepare()
        self.root.sync_hosts()
        # A private mount namespace gives the chrooted Asterisk a /proc that disappears
        # with it: nothing is left mounted when the instance stops or is killed.
        script = (
            f'mount -t proc proc "{self.root.path}/proc" && '
            f'exec chroot "{self.root.path}" /usr/sbin/asterisk -f -U asterisk -G asterisk '
            f'-C "{self.conf_inside}"'
        )
        spawn(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            log=self.state / "asterisk-console.log",
            pidfile=self.pidfile,
        )
        try:
            wait_until(self._booted, timeout, "Asterisk (core waitfullybooted)", interval=0.2)
            wait_until(self.ari_ping, timeout, "ARI ping", interval=0.2)
        except TimeoutError as exc:
            tail = _tail(self.state / "asterisk-console.log")
            self.stop()
            raise StackError(f"{exc}\n--- asterisk console ---\n{tail}") from exc

    def _booted(self) -> bool:
        pid = read_pid(self.pidfile)
        if pid is None or not alive(pid):
            raise StackError("Asterisk exited during start-up:\n" + _tail(
                self.state / "asterisk-console.log"))
        if not (self.home / "run" / "asterisk.ctl").exists():
            return False
        out = self.cli("core waitfullybooted", timeout=10, check=False)
        return "fully booted" in out.lower()

    def ari_ping(self) -> bool:
        url = self.ari_url() + "/ari/asterisk/ping"
        req = urllib.request.Request(url)  # noqa: S310 - fixed http URL on loopback
        token = f"{self.values['ARI_USER']}:{self.values['ARI_PASSWORD']}"
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - fixed loopback URL
            return bool(resp.status == 200)

    def cli(self, command: str, timeout: float = 20, check: bool = True) -> str:
        proc = subprocess.run(
            ["chroot", str(self.root.path), "/usr/sbin/asterisk", "-C", self.conf_inside,
             "-rx", command],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if check and proc.returncode != 0:
            raise StackError(f"asterisk -rx {command!r}: {proc.stderr or proc.stdout}")
        return proc.stdout

    def stop(self) -> None:
        if self.running():
            with contextlib.suppress(subprocess.TimeoutExpired, StackError):
                self.cli("core stop now", timeout=10, check=False)
        stop(self.pidfile, timeout=15)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


def _host_account(root: Path) -> tuple[int, int]:
    """(uid, gid) of this machine's account for the chrooted Asterisk, made if missing with
    an id free both here and in the root (a system account: no home, no login)."""
    try:
        pw = pwd.getpwnam(HOST_ACCOUNT)
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        pass
    taken = {pw.pw_uid for pw in pwd.getpwall()} | {g.gr_gid for g in grp.getgrall()}
    for table in ("etc/passwd", "etc/group"):
        for line in (root / table).read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2].isdigit():
                taken.add(int(fields[2]))
    free = next((i for i in range(999, 199, -1) if i not in taken), None)
    if free is None:
        raise StackError("no system id from 200 to 999 is free for the Asterisk account")
    try:
        grp.getgrnam(HOST_ACCOUNT)
    except KeyError:
        subprocess.run(["groupadd", "--system", "--gid", str(free), HOST_ACCOUNT], check=True)
    subprocess.run(
        ["useradd", "--system", "--uid", str(free), "--gid", HOST_ACCOUNT, "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
         "--comment", "Asterisk of the callrec local stack", HOST_ACCOUNT],
        check=True,
    )
    pw = pwd.getpwnam(HOST_ACCOUNT)
    return pw.pw_uid, pw.pw_gid


def _set_ids(table: Path, name: str, columns: Mapping[int, int]) -> None:
    """Set numeric columns of `name`'s line in a passwd or group file."""
    lines = table.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == name:
            for column, value in columns.items():
                fields[column] = str(value)
            lines[i] = ":".join(fields)
    tmp = table.with_name(table.name + ".callrec")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.chmod(table.stat().st_mode & 0o7777)
    os.replace(tmp, table)


def _asterisk_ids(root: Path) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == "asterisk":
            return int(parts[2]), int(parts[3])
    raise StackError(f"no asterisk user in {root}/etc/passwd: the root is incomplete")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
