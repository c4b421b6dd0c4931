"""`callrec config check` and `callrec reload`."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from callrec.cli import main

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "config" / "demo.toml"


def test_config_check_accepts_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CALLREC_PROMPT_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert main(["config", "check", str(DEMO), "--prompts-dir", str(REPO / "prompts")]) == 0
    out, err = capsys.readouterr()
    assert "OK (2 services, 3 agents" in out
    # valid, but nothing is built yet: calls would have no notice
    warnings = err.splitlines()
    assert len(warnings) == 4
    assert warnings[0].startswith("warning: prompt closed/fi is not built in ")


def test_config_check_lists_errors_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    text = DEMO.read_text(encoding="utf-8").replace('strategy = "ring_all"', 'strategy = "all"')
    bad.write_text(text.replace('"agent3"]', '"agent4"]', 1), encoding="utf-8")
    status = main(["config", "check", str(bad), "--prompts-dir", str(REPO / "prompts")])
    err = capsys.readouterr().err.splitlines()
    assert status == 1
    assert err[0].startswith(f"{bad}:") and "agent 'agent4' is not defined" in err[0]
    assert "bad strategy 'all'" in err[1]
    assert err[2] == f"{bad}: 2 problems"


def test_reload_signals_the_process_in_the_pid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "signal.signal(signal.SIGHUP, lambda *a: sys.exit(42))\n"
            "print('ready', flush=True)\n"
            "time.sleep(60)\n",
            "callrec.cli",  # its command line names callrec, as the service's does
        ],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
            pid_file = tmp_path / "callrec.pid"
            pid_file.write_text(f"{child.pid}\n", encoding="ascii")
            monkeypatch.setenv("CALLREC_PID_FILE", str(pid_file))
            monkeypatch.setenv("CALLREC_CONFIG", str(DEMO))
            monkeypatch.setenv("CALLREC_PROMPTS_DIR", str(REPO / "prompts"))
            assert main(["reload"]) == 0
            assert child.wait(timeout=10) == 42
            assert f"sent SIGHUP to callrec (pid {child.pid})" in capsys.readouterr().out
        finally:
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                child.wait()


def test_reload_refuses_an_invalid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text(encoding="utf-8") + "\nsurprise = 1\n", encoding="utf-8")
    pid_file = tmp_path / "callrec.pid"
    pid_file.write_text("999999999\n", encoding="ascii")  # never signalled: the check fails first
    monkeypatch.setenv("CALLREC_PID_FILE", str(pid_file))
    monkeypatch.setenv("CALLREC_PROMPTS_DIR", str(REPO / "prompts"))
    assert main(["reload", "--config", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'surprise'" in err
    assert "not reloaded" in err


def test_reload_without_pid_file_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CALLREC_PID_FILE", raising=False)
    monkeypatch.delenv("CALLREC_CONFIG", raising=False)
    assert main(["reload"]) == 1
    assert "CALLREC_PID_FILE is not set" in capsys.readouterr().err


def test_reload_with_a_stale_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    pid_file = tmp_path / "callrec.pid"
    pid_file.write_text(done.stdout, encoding="ascii")  # that process has exited
    monkeypatch.delenv("CALLREC_CONFIG", raising=False)
    assert main(["reload", "--pid-file", str(pid_file)]) == 1
    assert "is the service running?" in capsys.readouterr().err


def test_reload_does_not_signal_a_process_that_is_not_callrec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A stale pid file whose number now belongs to another process: SIGHUP would end it."""
    with subprocess.Popen(["sleep", "60"]) as other:
        try:
            pid_file = tmp_path / "callrec.pid"
            pid_file.write_text(f"{other.pid}\n", encoding="ascii")
            monkeypatch.delenv("CALLREC_CONFIG", raising=False)
            assert main(["reload", "--pid-file", str(pid_file)]) == 1
            err = capsys.readouterr().err
            assert "was not checked first" in err  # no routing file to check: said so
            assert f"process {other.pid} is not callrec ('sleep 60')" in err
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()
