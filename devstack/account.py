"""The host account the local stack's callrec service and `callrec` commands run as.

Docker's image runs callrec as its own user; the local stack does the same with a system
account of the host (no login, no home), made once. It belongs to the group of the stack's
Asterisk account, whose recording spool callrec reads and clears. Nothing runs as root but
what must: building the Asterisk root, starting Asterisk (which drops to its own account),
PostgreSQL's cluster (its own `postgres` account)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devstack.errors import StackError

SERVICE_ACCOUNT = "callrec"


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """`env` with this account's home and name: root's would have libpq look for a
        client key under /root (a permission error taken for an unreachable database)."""
        return {**env, "HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def command(self, argv: Sequence[str], nice: int | None = None) -> list[str]:
        """`argv` run as this account with no capability and no way to gain one (util-linux
        `setpriv`), in a session of its own (the caller's `start_new_session`); `nice`, when
        given, is set before the switch: only root may raise a priority, and the service
        needs nothing else of root's."""
        switch = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
                  "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
        if not nice:
            return [*switch, *argv]
        # the session's scheduling group too (autogroup: what weighs against Asterisk's);
        # the value is the shell's $0, never part of the script's text
        niced = ["sh", "-c", '{ echo "$0" > /proc/self/autogroup; } 2>/dev/null; '
                 'exec nice -n "$0" "$@"', str(nice)]
        return [*niced, *switch, *argv]

    def own(self, *paths: Path) -> None:
        """Give each directory, with everything below it, to this account: once, for a tree
        made by root (a stack from before the account, or made just now)."""
        for top in paths:
            if not top.exists() or os.lstat(top).st_uid == self.uid:
                continue
            device = os.lstat(top).st_dev
            for dirpath, dirs, files in os.walk(top):
                # never into another filesystem mounted below (a test's tmpfs)
                dirs[:] = [d for d in dirs if os.lstat(os.path.join(dirpath, d)).st_dev == device]
                for name in (dirpath, *(os.path.join(dirpath, f) for f in files)):
                    os.lchown(name, self.uid, self.gid)


def closed_directory(path: Path) -> Path | None:
    """The first directory from / to `path` (itself included) that other accounts cannot
    enter (no o+x), or None: a clone in root's 0700 home is one the account cannot run."""
    resolved = path.resolve()
    for directory in (*reversed(resolved.parents), resolved):
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return directory
    return None


def service_account(member_of: str) -> Account:
    """The service's account, made if missing (a system account: no home, no login) and
    added to the group `member_of` if it is not in it yet."""
    try:
        pw = pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        _run(["useradd", "--system", "--user-group", "--no-create-home",
              "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
              "--groups", member_of, "--comment", "callrec service of the local stack",
              SERVICE_ACCOUNT])
        pw = pwd.getpwnam(SERVICE_ACCOUNT)
    if SERVICE_ACCOUNT not in grp.getgrnam(member_of).gr_mem:
        _run(["usermod", "--append", "--groups", member_of, SERVICE_ACCOUNT])
    return Account(SERVICE_ACCOUNT, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _run(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"{' '.join(argv)} failed: {proc.stderr.strip() or proc.stdout}")
