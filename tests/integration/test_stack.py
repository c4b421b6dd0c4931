"""The foundation: the local stack comes up from nothing and is a real PBX."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from devstack.sipp import Caller
from devstack.stack import Stack

pytestmark = pytest.mark.stack


def _auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def test_ari_answers_and_database_is_migrated(bare_stack: Stack) -> None:
    auth = _auth(bare_stack.ari_user, bare_stack.ari_password)
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.get(f"{bare_stack.ari_url}/ari/asterisk/info") as resp,
    ):
        assert resp.status == 200
        info = await resp.json()
    assert info["system"]["version"].startswith("22.")
    conn = await asyncpg.connect(bare_stack.app_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM calls") == 0
    finally:
        await conn.close()
    owner = await asyncpg.connect(bare_stack.owner_dsn)
    try:
        versions = await owner.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert versions[0]["version"] == "0001"
    finally:
        await owner.close()


async def test_wrong_ari_password_is_refused(bare_stack: Stack) -> None:
    auth = _auth(bare_stack.ari_user, "not-the-password")
    async with (
        aiohttp.ClientSession(headers=auth) as http,
        http.get(f"{bare_stack.ari_url}/ari/asterisk/ping") as resp,
    ):
        assert resp.status == 401


async def test_call_to_service_number_reaches_the_stasis_app(bare_stack: Stack) -> None:
    auth = _auth(bare_stack.ari_user, bare_stack.ari_password)
    url = f"{bare_stack.ari_url}/ari/events?app=callrec&subscribeAll=false"
    async with aiohttp.ClientSession(headers=auth) as http, http.ws_connect(url) as ws:
        caller = Caller(sip_port=bare_stack.sip_port, service_number="0103808000",
                        caller_number="0401234567", talk_seconds=2).start()
        try:
            start = None
            async with asyncio.timeout(20):
                while start is None:
                    msg = await ws.receive()
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    event = json.loads(msg.data)
                    if event["type"] == "StasisStart":
                        start = event
            assert start["args"] == ["0103808000"]
            assert start["channel"]["caller"]["number"] == "0401234567"
            assert start["channel"]["dialplan"]["exten"] == "0103808000"
            channel = start["channel"]["id"]
            async with http.delete(f"{bare_stack.ari_url}/ari/channels/{channel}") as resp:
                assert resp.status == 204
        finally:
            await asyncio.to_thread(caller.wait, 30)
            caller.stop()


def test_fallback_reaches_agent1_when_callrec_is_not_connected(bare_stack: Stack) -> None:
    from devstack.sipp import Agent

    agent = Agent(name="agent1", port=bare_stack.agent_ports["agent1"], answer_after=0.2,
                  talk_seconds=1.0).start()
    try:
        caller = Caller(sip_port=bare_stack.sip_port, service_number="0103808000",
                        caller_number="0401112222", talk_seconds=30).start()
        assert caller.wait(60) == 0, caller.output()
        invites = agent.invites()
        assert len(invites) == 1, agent.messages()
        assert "0401112222" in invites[0]  # the caller's number reaches the agent's phone
    finally:
        agent.stop()


def test_down_leaves_no_process_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    from tests.stackfixtures import start_stack

    gen = start_stack(with_service=False)
    stack = next(gen)
    try:
        asterisk_pid = stack.asterisk.pidfile.read_text().split()[0]
        stack.down()
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        assert not any(line.split()[0] == asterisk_pid for line in ps.splitlines()[1:])
        assert stack.cfg.name not in ps  # no asterisk of this instance
        assert str(stack.pg.data) not in ps  # no postgres of this cluster
        mounts = Path("/proc/mounts").read_text()
        assert str(stack.root.path) not in mounts
    finally:
        gen.close()  # the stack's directory and cluster go, whatever failed above


def test_asterisk_runs_as_an_account_of_its_own_on_this_machine(bare_stack: Stack) -> None:
    # The package gave the root's asterisk user id 101, on Debian 12 with PostgreSQL the
    # host's postgres: the chrooted Asterisk could signal and trace the database server.
    import os
    import pwd

    from devstack.asterisk import HOST_ACCOUNT
    from devstack.proc import read_pid

    pid = read_pid(bare_stack.asterisk.pidfile)
    assert pid is not None
    # the pid file names the `unshare` wrapper; Asterisk is its exec'd child or itself
    pids = [pid, *(int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    uids = set()
    for p in pids:
        status = Path(f"/proc/{p}/status").read_text().splitlines()
        if "asterisk" in Path(f"/proc/{p}/comm").read_text():
            uids.add(int(next(ln for ln in status if ln.startswith("Uid:")).split()[1]))
    account = pwd.getpwnam(HOST_ACCOUNT)
    assert uids == {account.pw_uid}
    assert account.pw_shell == "/usr/sbin/nologin"
    spool = bare_stack.asterisk.recordings
    assert (os.stat(spool).st_uid, os.stat(spool).st_gid) == (account.pw_uid, account.pw_gid)
    # no host account but its own shares the id
    assert [pw.pw_name for pw in pwd.getpwall() if pw.pw_uid == account.pw_uid] == [HOST_ACCOUNT]


def test_the_service_runs_as_an_account_of_its_own_without_privileges(stack: Stack) -> None:
    import grp
    import os
    import pwd

    from devstack.account import SERVICE_ACCOUNT
    from devstack.asterisk import HOST_ACCOUNT
    from devstack.proc import read_pid
    from devstack.stack import SERVICE_NICE

    pid = read_pid(stack.service_pidfile)
    assert pid is not None
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines())
    account = pwd.getpwnam(SERVICE_ACCOUNT)
    assert status["Uid"].split() == [str(account.pw_uid)] * 4
    assert status["Gid"].split() == [str(account.pw_gid)] * 4
    # a member of Asterisk's group: it reads and deletes the recordings in Asterisk's spool
    assert status["Groups"].split() == sorted(
        [str(account.pw_gid), str(grp.getgrnam(HOST_ACCOUNT).gr_gid)], key=int)
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    # the priority root gave it before the switch, its threads' and its session group's
    assert os.getpriority(os.PRIO_PROCESS, pid) == SERVICE_NICE
    group = Path(f"/proc/{pid}/autogroup")
    if group.exists():  # a kernel with autogroup scheduling
        assert group.read_text().split()[-1] == str(SERVICE_NICE)
    lines = [json.loads(ln) for ln in stack.service_log.read_text().splitlines()
             if ln.startswith("{") and "cpu priority" in ln]
    assert lines and {ln["level"] for ln in lines} == {"info"}
    for path in (stack.archive_dir, stack.state_dir, stack.config_path, stack.prompts_dir):
        assert path.stat().st_uid == account.pw_uid, path
    # and it works as that account: the database, the archive and Asterisk's spool reached
    with urllib.request.urlopen(stack.web_url + "/healthz", timeout=5) as resp:  # noqa: S310
        assert resp.status == 200, resp.read()


def test_the_stack_command_and_a_build_by_root_leave_the_prompts_the_services(
        stack: Stack) -> None:
    import os

    from devstack.paths import REPO, venv_python

    # `.stack/callrec`, from any directory, as the service's account
    out = subprocess.run([str(stack.cfg.dir / "callrec"), "prompts", "list"], cwd="/",
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert "notice" in out
    # an admin's build as root by hand leaves files of root's in the service's cache
    # (the lock among them: made then, or taken over here) ...
    subprocess.run([str(venv_python()), "-m", "callrec.cli", "prompts", "build"], cwd=REPO,
                   env={**os.environ, **stack.env}, capture_output=True, timeout=120, check=True)
    lock = stack.state_dir / "prompt-cache" / ".build.lock"
    os.chown(lock, 0, 0)
    # ... and the service's account still builds (it reads the lock, never writes it)
    stack.callrec("prompts", "build")


def test_a_test_stack_has_no_password_of_the_demo_profile(bare_stack: Stack) -> None:
    # the demo profile's are public (asterisk-conf/defaults.env, README)
    demo = {line.split("=", 1)[1] for line in
            (Path(__file__).resolve().parents[2] / "asterisk-conf" / "defaults.env")
            .read_text().splitlines() if "PASSWORD=" in line}
    assert len(demo) == 4
    for conf in (bare_stack.asterisk.home / "etc").iterdir():
        text = conf.read_text()
        assert not [p for p in demo if p in text], conf.name
    pjsip = (bare_stack.asterisk.home / "etc" / "pjsip.conf").read_text()
    for agent, password in bare_stack.cfg.agent_passwords.items():
        assert f"password = {password}" in pjsip, agent
