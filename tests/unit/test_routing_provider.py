"""RoutingProvider: reload on request, on file change and on SIGHUP; invalid files are ignored."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from callrec.routing.errors import RoutingError
from callrec.routing.loader import RoutingProvider
from tests.polling import eventually

CONFIG = """\
[[agent]]
id = "agent1"
endpoint = "PJSIP/agent1"
name = "Aino Agentti"

[[agent]]
id = "agent2"
endpoint = "PJSIP/agent2"
name = "Bertil Agent"

[[service]]
number = "0103808000"
name = "Ajanvaraus"
language = "fi"
agents = ["agent1"]
"""


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    root = tmp_path / "prompts" / "fi"
    root.mkdir(parents=True)
    (root / "notice.txt").write_text("Puhelu tallennetaan.\n", encoding="utf-8")
    (root / "closed.txt").write_text("Soita myöhemmin.\n", encoding="utf-8")
    return root.parent


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def rewrite(path: Path, text: str) -> None:
    """Replace the file the way editors do (new inode), so a same-second edit is still seen."""
    tmp = path.with_suffix(".new")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def remove(path: Path) -> None:
    path.unlink()


async def until(check: Callable[[], bool]) -> None:
    async def probe() -> bool:
        return check()

    await eventually(probe, timeout=10, interval=0.05)


def agents_of(provider: RoutingProvider) -> tuple[str, ...]:
    return provider.current().services["0103808000"].agents


def test_reload_swaps_on_valid_and_keeps_on_invalid(config: Path, prompts_dir: Path) -> None:
    provider = RoutingProvider(config, prompts_dir=prompts_dir)
    first = provider.current()
    assert agents_of(provider) == ("agent1",)

    rewrite(config, CONFIG.replace('agents = ["agent1"]', 'agents = ["agent2"]'))
    assert provider.reload() is True
    second = provider.current()
    assert agents_of(provider) == ("agent2",)
    assert second.version != first.version
    # a call that started before keeps its snapshot
    assert first.services["0103808000"].agents == ("agent1",)

    rewrite(config, CONFIG.replace('agents = ["agent1"]', 'agents = ["agent7"]'))
    assert provider.reload() is False
    assert provider.current() is second
    assert provider.rejected == 1


def test_current_raises_when_the_first_load_fails(tmp_path: Path, prompts_dir: Path) -> None:
    provider = RoutingProvider(tmp_path / "absent.toml", prompts_dir=prompts_dir)
    with pytest.raises(RoutingError):
        provider.current()


async def test_start_fails_on_invalid_file(config: Path, prompts_dir: Path) -> None:
    rewrite(config, CONFIG + "bogus = 1\n")
    provider = RoutingProvider(config, prompts_dir=prompts_dir, handle_sighup=False)
    with pytest.raises(RoutingError, match="unknown key 'bogus'"):
        await provider.start()
    await provider.close()


async def test_file_watch_picks_up_changes(config: Path, prompts_dir: Path) -> None:
    async with RoutingProvider(
        config, prompts_dir=prompts_dir, poll_interval=0.05, handle_sighup=False
    ) as provider:
        assert agents_of(provider) == ("agent1",)
        rewrite(config, CONFIG.replace('agents = ["agent1"]', 'agents = ["agent2"]'))
        await until(lambda: agents_of(provider) == ("agent2",))

        # an invalid edit is rejected once; the routing in force stays
        rewrite(config, CONFIG.replace('agents = ["agent1"]', 'agents = ["agent1", "ghost"]'))
        await until(lambda: provider.rejected == 1)
        assert agents_of(provider) == ("agent2",)

        # the file disappearing (mid-deploy) keeps the routing too
        remove(config)
        await asyncio.sleep(0.3)
        assert agents_of(provider) == ("agent2",)

        rewrite(config, CONFIG)
        await until(lambda: agents_of(provider) == ("agent1",))
        assert provider.rejected == 1


async def test_touch_without_change_does_not_reload(config: Path, prompts_dir: Path) -> None:
    async with RoutingProvider(
        config, prompts_dir=prompts_dir, poll_interval=0.05, handle_sighup=False
    ) as provider:
        before = provider.reloads
        rewrite(config, CONFIG)
        await asyncio.sleep(0.4)
        assert provider.reloads == before


async def test_sighup_reloads(config: Path, prompts_dir: Path) -> None:
    # from the default disposition, whatever this process inherited (`nohup` passes SIG_IGN)
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        # a long poll interval: only the signal can explain a reload within the test
        async with RoutingProvider(config, prompts_dir=prompts_dir,
                                   poll_interval=3600) as provider:
            assert signal.getsignal(signal.SIGHUP) != signal.SIG_DFL
            rewrite(config,
                    CONFIG.replace('agents = ["agent1"]', 'agents = ["agent2", "agent1"]'))
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: agents_of(provider) == ("agent2", "agent1"))
        # close() put back what was there (a later SIGHUP would end the process again)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, inherited)


async def test_close_cancels_the_watcher(config: Path, prompts_dir: Path) -> None:
    provider = RoutingProvider(config, prompts_dir=prompts_dir, handle_sighup=False)
    await provider.start()
    task = provider._task
    assert task is not None and not task.done()
    await provider.close()
    assert task.cancelled()


async def test_change_between_first_load_and_start_is_seen(config: Path, prompts_dir: Path) -> None:
    provider = RoutingProvider(
        config, prompts_dir=prompts_dir, poll_interval=0.05, handle_sighup=False
    )
    assert agents_of(provider) == ("agent1",)  # the service reads it once before start()
    rewrite(config, CONFIG.replace('agents = ["agent1"]', 'agents = ["agent2"]'))
    async with provider:
        await until(lambda: agents_of(provider) == ("agent2",))


async def test_close_puts_back_the_sighup_handler_it_found(
    config: Path, prompts_dir: Path
) -> None:
    """The service ignores SIGHUP until the provider runs and after: a reload asked for
    during its start or shutdown must not end it (asyncio's removal sets the default)."""
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        async with RoutingProvider(config, prompts_dir=prompts_dir, poll_interval=3600):
            assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_IGN, signal.SIG_DFL)
        assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


async def test_a_rejected_file_is_read_again_until_what_it_lacked_is_there(
    config: Path, prompts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file rejected for something outside it (a prompt not added yet) is applied once
    that is fixed, without an edit of its own; the same rejection is not reported again."""
    monkeypatch.setattr("callrec.routing.loader.RETRY_REJECTED_EVERY", 0.2)
    async with RoutingProvider(
        config, prompts_dir=prompts_dir, poll_interval=0.05, handle_sighup=False
    ) as provider:
        rewrite(config, CONFIG.replace('language = "fi"', 'language = "sv"'))
        await until(lambda: provider.rejected == 1)
        await asyncio.sleep(0.7)  # several retries, all with the same problems
        assert provider.rejected == 1
        assert provider.current().services["0103808000"].language == "fi"
        (prompts_dir / "sv").mkdir()
        for name in ("notice", "closed"):
            (prompts_dir / "sv" / f"{name}.txt").write_text("Samtalet spelas in.\n")
        await until(lambda: provider.current().services["0103808000"].language == "sv")
        assert provider.rejected == 1
