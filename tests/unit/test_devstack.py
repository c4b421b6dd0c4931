"""The local stack's own logic: port checks, root building never using a half-built root,
configuration rendering."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from devstack import asterisk as ast
from devstack.errors import StackError
from devstack.ports import free_block, require_free
from devstack.sipp import sip_display, sip_uri_user


def test_port_in_use_is_named_with_the_setting_to_change() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with pytest.raises(StackError) as err:
            require_free(port, "the callrec web console", "CALLREC_WEB_PORT")
    assert str(port) in str(err.value)
    assert "CALLREC_WEB_PORT=<port>" in str(err.value)


def test_free_block_is_free() -> None:
    base = free_block(5)
    for port in range(base, base + 5):
        require_free(port, "x", "X")
        require_free(port, "x", "X", udp=True)


@pytest.fixture(autouse=True)
def _no_host_account(monkeypatch: pytest.MonkeyPatch) -> None:
    # the fake roots here have no asterisk user; giving one its account is tested below
    monkeypatch.setattr(ast.AsteriskRoot, "_take_own_ids", lambda self: None)
    monkeypatch.setattr(ast.AsteriskRoot, "_owns_its_ids", lambda self: True)


def test_the_roots_asterisk_user_takes_the_hosts_account_and_its_files_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # id 101 in the root was the host's postgres: Asterisk could signal the database server
    monkeypatch.undo()
    root = ast.AsteriskRoot(tmp_path / "root")
    (root.path / "etc").mkdir(parents=True)
    (root.path / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "asterisk:x:101:101:Asterisk PBX daemon:/var/lib/asterisk:/usr/sbin/nologin\n")
    (root.path / "etc/group").write_text("root:x:0:\naudio:x:29:asterisk\nasterisk:x:101:\n")
    spool = root.path / "var/spool/asterisk"
    spool.mkdir(parents=True)
    (spool / "recording.wav").write_text("x")
    (root.path / "etc/hosts").write_text("127.0.0.1 localhost\n")
    for path in (spool, spool / "recording.wav"):
        os.chown(path, 101, 101)
    os.symlink("recording.wav", spool / "link")
    os.lchown(spool / "link", 101, 0)
    monkeypatch.setattr(ast, "_host_account", lambda path: (54321, 54322))
    monkeypatch.setattr(ast.AsteriskRoot, "_owns_its_ids",
                        lambda self: ast._asterisk_ids(self.path) == (54321, 54322))
    root._take_own_ids()
    assert ast._asterisk_ids(root.path) == (54321, 54322)
    assert "asterisk:x:54322:" in (root.path / "etc/group").read_text().splitlines()
    assert "audio:x:29:asterisk" in (root.path / "etc/group").read_text().splitlines()
    for path in (spool, spool / "recording.wav"):
        assert (path.stat().st_uid, path.stat().st_gid) == (54321, 54322)
    link = os.lstat(spool / "link")
    assert (link.st_uid, link.st_gid) == (54321, 0)  # its own owner, not its target's
    hosts = (root.path / "etc/hosts").stat()
    assert (hosts.st_uid, hosts.st_gid) == (0, 0)
    root._take_own_ids()  # done: nothing to do
    assert ast._asterisk_ids(root.path) == (54321, 54322)


def _fake_build(fail: bool):  # type: ignore[no-untyped-def]
    def build(self: ast.AsteriskRoot, target: Path, out: object) -> None:
        (target / "usr/sbin").mkdir(parents=True)
        (target / "usr/sbin/asterisk").write_text("binary")
        if fail:
            raise StackError("network lost during apt")
        (target / ast._READY_MARK).write_text("ok")

    return build


def test_interrupted_build_leaves_no_usable_root_and_is_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ast.AsteriskRoot, "_preflight", lambda self: None)
    root = ast.AsteriskRoot(tmp_path / "asterisk-root")
    monkeypatch.setattr(ast.AsteriskRoot, "_build", _fake_build(fail=True))
    with pytest.raises(StackError, match="network lost"):
        root.ensure()
    assert not root.ready
    assert not root.path.exists()  # the half-built tree stays in .partial, never used
    assert (tmp_path / "asterisk-root.partial").exists()

    monkeypatch.setattr(ast.AsteriskRoot, "_build", _fake_build(fail=False))
    root.ensure()
    assert root.ready
    assert not (tmp_path / "asterisk-root.partial").exists()


def test_root_without_ready_mark_is_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ast.AsteriskRoot, "_preflight", lambda self: None)
    stale = tmp_path / "asterisk-root"
    (stale / "usr/sbin").mkdir(parents=True)
    (stale / "usr/sbin/asterisk").write_text("from an interrupted older layout")
    (stale / "leftover").write_text("x")
    monkeypatch.setattr(ast.AsteriskRoot, "_build", _fake_build(fail=False))
    root = ast.AsteriskRoot(stale)
    root.ensure()
    assert root.ready and not (stale / "leftover").exists()


def test_not_root_points_to_docker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ast.os, "geteuid", lambda: 1000)
    with pytest.raises(StackError, match="docker compose up"):
        ast.AsteriskRoot(tmp_path / "r").ensure()


def test_missing_debootstrap_points_to_docker(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setattr(ast.os, "geteuid", lambda: 0)
    monkeypatch.setattr(ast.shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="debootstrap is not installed"):
        ast.AsteriskRoot(tmp_path / "r").ensure()


def test_rendering_fails_on_unknown_placeholder(tmp_path: Path) -> None:
    src = tmp_path / "conf"
    src.mkdir()
    (src / "defaults.env").write_text("SIP_PORT=5060\n")
    (src / "pjsip.conf").write_text("bind = 0.0.0.0:@SIP_PORT@\nx = @NOT_DEFINED@\n")
    with pytest.raises(StackError, match="@NOT_DEFINED@"):
        ast.render_conf({}, tmp_path / "out", source=src)


def test_every_placeholder_of_the_real_config_has_a_default(tmp_path: Path) -> None:
    ast.render_conf({}, tmp_path)
    for conf in tmp_path.glob("*.conf"):
        assert not ast._PLACEHOLDER.search(conf.read_text()), conf.name


def test_mirror_comes_from_apt_sources_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CALLREC_DEBIAN_MIRROR", "http://mirror.invalid/debian")
    assert ast.debian_mirror() == "http://mirror.invalid/debian"


@pytest.mark.parametrize(
    ("number", "expected"),
    [("0401234567", "0401234567"), ("'; DROP TABLE calls; --", "';%20DROP%20TABLE%20calls;%20--"),
     ("<x>", "%3Cx%3E"), ("😀", "%F0%9F%98%80"), ("", "")],
)
def test_caller_number_is_escaped_for_the_sip_uri(number: str, expected: str) -> None:
    assert sip_uri_user(number) == expected


def test_display_name_quotes_are_escaped() -> None:
    assert sip_display('say "hi" \\') == '"say \\"hi\\" \\\\" '
    assert sip_display("") == ""


def test_free_block_does_not_hand_out_a_block_twice_before_it_is_bound() -> None:
    # nothing binds the blocks here, as when twenty SIPp processes start in a row
    bases = [free_block(4, start=41000, end=41100, step=4) for _ in range(20)]
    starts = sorted(bases)
    assert all(b - a >= 4 for a, b in itertools.pairwise(starts))


def test_sipp_port_blocks_hold_the_sip_audio_and_video_ports() -> None:
    from devstack import sipp

    # SIP at the base, audio at base + 2, video at base + 4 (seen with `ss` on SIPp 3.6.1)
    assert sipp.SIPP_BLOCK > 4
    bases = sorted(sipp._ports() for _ in range(20))
    assert all(b - a >= sipp.SIPP_BLOCK for a, b in itertools.pairwise(bases))


def test_a_stack_others_cannot_reach_gets_its_cluster_where_postgres_can() -> None:
    """A clone in root's home (0700): `make up` stopped after building the Asterisk root,
    asking for `chmod o+x` on the home, which would open the stack to every user."""
    from devstack.stack import cluster_home

    # pytest's own base directory is 0700: a directory of the test's with its parents open
    base = Path(tempfile.mkdtemp(prefix="callrec-devstack-", dir="/tmp"))
    try:
        base.chmod(0o755)
        closed = base / "home"
        (closed / "clone" / ".stack").mkdir(parents=True)
        closed.chmod(0o700)
        home = cluster_home(closed / "clone" / ".stack")
        assert home is not None and home.startswith("/var/lib/callrec-devstack/")
        assert home == cluster_home(closed / "clone" / ".stack"), "the same each time"
        open_dir = base / "open" / ".stack"
        open_dir.mkdir(parents=True)
        assert cluster_home(open_dir) is None
    finally:
        shutil.rmtree(base)


def test_ports_set_in_the_environment_move_a_saved_stack(tmp_path: Path) -> None:
    """README: `CALLREC_SIP_PORT=5070 make up`. The saved profile won over it after the
    first run, and the error for a port in use pointed at the setting that was ignored."""
    from devstack.stack import StackConfig

    cfg = StackConfig.demo_profile(tmp_path)
    cfg.save()
    saved = StackConfig.load(tmp_path)
    assert saved is not None and saved.sip_port == 5060
    moved = saved.with_ports_from({"CALLREC_SIP_PORT": "5070", "CALLREC_AGENT2_PORT": "6072"})
    assert (moved.sip_port, moved.web_port) == (5070, 8080)
    assert moved.agent_ports == {"agent1": 5071, "agent2": 6072, "agent3": 5073}
    with pytest.raises(StackError, match="CALLREC_WEB_PORT"):
        saved.with_ports_from({"CALLREC_WEB_PORT": "eighty"})


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mount needs root")
def test_removing_a_stack_never_leaves_its_filesystem(tmp_path: Path) -> None:
    """A root build cut short by a signal left the host's /dev bind-mounted inside it, and
    `make clean-stack` ran a plain `rm -rf` through it."""
    from devstack.stack import remove_tree

    host = tmp_path / "host-dev"
    host.mkdir()
    (host / "null").write_text("precious")
    stack = tmp_path / "stack"
    (stack / "root" / "dev").mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(host), str(stack / "root" / "dev")], check=True)
    try:
        remove_tree(stack)
    finally:
        subprocess.run(["umount", "-l", str(stack / "root" / "dev")], check=False,
                       capture_output=True)
    assert (host / "null").read_text() == "precious"
    assert not stack.exists()


def test_a_pid_file_naming_another_process_now_is_stale(tmp_path: Path) -> None:
    """After a reboot the pid in a pid file may be another process's: `make up` took it for
    the stack's, `make down` signalled its whole process group."""
    from devstack.proc import read_pid, spawn, stop

    pidfile = tmp_path / "x.pid"
    pid = spawn(["sleep", "30"], log=tmp_path / "x.log", pidfile=pidfile)
    try:
        assert read_pid(pidfile) == pid
        with subprocess.Popen(["sleep", "30"]) as other:
            try:
                # the number now another's, the start time the earlier process's
                pidfile.write_text(f"{other.pid} {pidfile.read_text().split()[1]}0\n")
                assert read_pid(pidfile) is None
                stop(pidfile)
                assert other.poll() is None, "the other process was signalled"
            finally:
                other.kill()
                other.wait()
        pidfile.write_text(f"{pid}\n")  # a file of the old form: trusted as before
        assert read_pid(pidfile) == pid
    finally:
        pidfile.write_text(f"{pid}\n")
        stop(pidfile)


def test_a_part_that_exits_while_starting_is_reported_at_once() -> None:
    """`wait_until` took the StackError of an exited process for 'not ready yet' and said
    so only after its whole timeout, and then as a TimeoutError traceback."""
    from devstack.errors import NotReady
    from devstack.proc import wait_until

    def exited() -> bool:
        raise StackError("callrec service exited during start-up")

    with pytest.raises(StackError, match="exited"):
        wait_until(exited, timeout=3600, what="callrec service")
    with pytest.raises(NotReady, match="not ready after"):
        wait_until(lambda: False, timeout=0.2, what="callrec service", interval=0.05)


@pytest.mark.parametrize("keep", [False, True])
def test_sipp_work_directories_go_with_the_process_unless_kept(keep: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALLREC_KEEP_SIPP"}
    if keep:
        env["CALLREC_KEEP_SIPP"] = "1"
    script = ("from devstack.sipp import new_workdir\n"
              "a, b = new_workdir(), new_workdir()\n"
              "(a / 'stats.csv').write_text('x')\n"
              "assert a.parent == b.parent and a != b\n"
              "print(a.parent)\n")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=30,
                         cwd=Path(__file__).resolve().parents[2])
    own = Path(out.stdout.strip())
    assert own.name.startswith("callrec-sipp-")
    try:
        assert own.exists() is keep
        if keep:
            assert [p.name for p in own.glob("*/stats.csv")] == ["stats.csv"]
    finally:
        shutil.rmtree(own, ignore_errors=True)


def test_a_directory_closed_to_other_accounts_is_found_on_the_way() -> None:
    from devstack.account import closed_directory

    top = Path(tempfile.mkdtemp(prefix="callrec-closed-"))
    try:
        top.chmod(0o755)
        inner = top / "home" / "clone"
        inner.mkdir(parents=True)
        assert closed_directory(inner) is None
        (top / "home").chmod(0o700)
        assert closed_directory(inner) == top / "home"
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")
def test_a_command_as_an_account_has_no_privilege_and_the_priority_set_before() -> None:
    import pwd

    from devstack.account import Account

    nobody = pwd.getpwnam("nobody")
    account = Account(nobody.pw_name, nobody.pw_uid, nobody.pw_gid, nobody.pw_dir)
    probe = "cat /proc/self/status; echo nice $(nice); cat /proc/self/autogroup || true"
    argv = account.command(["/bin/sh", "-c", probe], nice=-5)
    assert "-5" not in argv[2], "the value is an argument, never script text"
    out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True,
                         env=account.environment(os.environ), start_new_session=True).stdout
    status = dict(ln.split(":", 1) for ln in out.splitlines() if ":" in ln)
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert "nice -5" in out.splitlines()
    if Path("/proc/self/autogroup").exists():
        assert out.rstrip().endswith("nice -5"), "the session's group too"
