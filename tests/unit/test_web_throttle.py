"""The per-address login brake and the mapping of layer messages to form fields."""

from __future__ import annotations

from callrec.web.pages import field_errors
from callrec.web.throttle import LoginThrottle


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_after_the_limit_and_forgets_after_the_window() -> None:
    clock = Clock()
    t = LoginThrottle(limit=3, window=60, clock=clock)
    for _ in range(2):
        assert t.attempt("10.0.0.1") is not None
    assert t.retry_after("10.0.0.1") == 0
    stamp = t.attempt("10.0.0.1")
    assert stamp is not None
    assert 59 <= t.retry_after("10.0.0.1") <= 61
    assert t.attempt("10.0.0.1") is None  # braked: not checked, not counted
    t.succeeded("10.0.0.1", stamp)  # the third one turned out right
    assert t.retry_after("10.0.0.1") == 0
    assert t.retry_after("10.0.0.2") == 0  # other addresses unaffected
    clock.now += 61
    assert t.retry_after("10.0.0.1") == 0


def test_throttle_memory_is_bounded() -> None:
    t = LoginThrottle(limit=1, window=60, max_addresses=100, clock=Clock())
    for i in range(1000):
        t.attempt(f"10.0.{i // 256}.{i % 256}")
    assert len(t._failures) == 100
    assert t.retry_after("10.0.3.231") > 0  # the newest are kept


def test_field_errors_pick_the_field_a_message_is_about() -> None:
    fields = ("number", "verified_by", "method", "received")
    assert field_errors("a", "a phone number has 3-20 digits", fields) == {
        "a-number": "a phone number has 3-20 digits"}
    assert "a-verified_by" in field_errors("a", "bob is not an active account", fields)
    assert "a-received" in field_errors("a", "not a date (YYYY-MM-DD): 'x'", fields)
    assert field_errors("a", "something else", fields) == {"a": "something else"}
    # a word about a field the form does not have falls back to the form
    assert field_errors("h", "the range is empty", ("reason",)) == {"h": "the range is empty"}


def test_redirect_targets_stay_on_this_site() -> None:
    from callrec.web.console import local_path

    assert local_path("/calls?number=1") == "/calls?number=1"
    for hostile in ("//evil.example/x", "https://evil.example", "/\\evil.example", "", None,
                    "/\t/evil.example", "/\n/evil.example", "/\x7f/x",
                    "calls"):
        assert local_path(hostile) == "/"
