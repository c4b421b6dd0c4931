"""Reading Asterisk's queue of events for the ARI application (`bench.taskqueue`)."""

from __future__ import annotations

import pytest

from bench.taskqueue import AppQueue, QueueStats, parse

pytestmark = pytest.mark.timeout(10)


def _row(*cols: object) -> str:
    # as Asterisk 22 pads its columns (the name to the longest name)
    name, *numbers = cols
    return f"{name:<70}" + "".join(f"{n:>11}" for n in numbers)


LISTING = "\n".join([
    "",
    _row("Processor", "Processed", "In Queue", "Max Depth", "Low water", "High water",
         "Low time(us)", "High time(us)"),
    _row("stasis/m:devicestate:all-00000009", 27, 0, 6, 450, 500, 0, 5),
    _row("stasis/m:ari:application/callrecx-00000050", 99, 0, 99, 450, 500, 0, 1),
    _row("stasis/m:ari:application/callrec-00000047", 80, 2, 16, 450, 500, 0, 546),
    _row("stasis/m:cdr:aggregator-0000000b", 1, 0, 1, 4500, 5000, 0, 2),
    "75 taskprocessors",
])


def test_the_applications_own_row_is_read() -> None:
    assert parse(LISTING, "callrec") == QueueStats(
        "stasis/m:ari:application/callrec-00000047", 80, 16
    )
    assert parse(LISTING, "callrecx") == QueueStats(
        "stasis/m:ari:application/callrecx-00000050", 99, 99
    )


def test_no_row_without_a_connected_application() -> None:
    assert parse(LISTING, "other") is None
    assert parse("", "callrec") is None
    assert parse("stasis/m:ari:application/callrec-1 x 0 0 450 500 0 0", "callrec") is None


def test_reset_names_the_listed_queue() -> None:
    sent: list[str] = []

    def cli(command: str) -> str:
        sent.append(command)
        return LISTING

    queue = AppQueue(cli, "callrec")
    queue.reset()
    assert sent == [
        "core show taskprocessors",
        "core reset taskprocessor stasis/m:ari:application/callrec-00000047",
    ]
    sent.clear()
    AppQueue(cli, "other").reset()
    assert sent == ["core show taskprocessors"], "nothing to reset"
