"""Due dates, roles and the password policy: pure rules."""

from __future__ import annotations

import io
from datetime import date

import pytest

from callrec.privacy import passwords
from callrec.privacy.cases import _csv_cell
from callrec.privacy.deadlines import due_date, is_overdue, parse_date, received_date
from callrec.privacy.errors import Invalid
from callrec.privacy.progress import ProgressBar
from callrec.privacy.roles import Actor, Operation, Role, parse_roles, permits


def test_due_date_is_a_week_after_receipt() -> None:
    assert due_date(date(2026, 12, 28)) == date(2027, 1, 4)
    assert not is_overdue(date(2027, 1, 4), date(2027, 1, 4))
    assert is_overdue(date(2027, 1, 4), date(2027, 1, 5))


def test_received_dates() -> None:
    today = date(2026, 11, 28)
    assert received_date(None, today) == today
    assert received_date("2026-11-20", today) == date(2026, 11, 20)
    with pytest.raises(Invalid, match="future"):
        received_date("2026-11-29", today)
    for bad in ("2026-13-01", "28.11.2026", "2026-2-1", "", "2026-11-28T00:00"):
        with pytest.raises(Invalid):
            parse_date(bad)


def test_role_matrix() -> None:
    admin, reviewer = frozenset({Role.ADMIN}), frozenset({Role.REVIEWER})
    privacy, processor = frozenset({Role.PRIVACY}), frozenset({Role.PROCESSOR})
    assert permits(admin, False, Operation.USERS_MANAGE)
    assert not permits(privacy, False, Operation.USERS_MANAGE)
    assert not permits(admin, False, Operation.CALL_LISTEN)
    assert permits(reviewer, False, Operation.CALL_LISTEN)
    assert not permits(reviewer, False, Operation.DISCLOSE)
    assert permits(privacy, False, Operation.DISCLOSE)
    assert not permits(processor, False, Operation.CALL_LISTEN)
    assert permits(processor, True, Operation.CALL_LISTEN)
    assert not permits(processor, True, Operation.CALL_SEARCH)
    assert permits(processor, False, Operation.AUDIT_VERIFY)
    assert not permits(processor, False, Operation.RETENTION_RUN)
    system = Actor.system("retention")
    assert system.is_system and permits(system.roles, False, Operation.RETENTION_RUN)
    assert not permits(system.roles, False, Operation.CALL_LISTEN)
    for op in Operation:  # every operation has a rule, and nobody without roles passes
        assert not permits(frozenset(), True, op)


def test_role_parsing() -> None:
    assert parse_roles("admin, privacy") == {Role.ADMIN, Role.PRIVACY}
    for bad in ("", "root", "system", ","):
        with pytest.raises(ValueError):
            parse_roles(bad)


def test_password_policy_and_argon2id() -> None:
    for bad in ("short", "x" * 20, "alice-is-great-123", "a" * 1025):
        with pytest.raises(Invalid):
            passwords.check_policy(bad, "alice")
    passwords.check_policy("correct horse battery", "alice")
    hashed = passwords.hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert passwords.verify_password(hashed, "correct horse battery")
    assert not passwords.verify_password(hashed, "correct horse batterY")
    assert not passwords.verify_password(None, "correct horse battery")
    assert not passwords.verify_password("garbage", "x")


def test_a_login_password_past_the_policys_length_is_not_hashed_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hashed = passwords.hash_password("correct horse battery")
    seen: list[int] = []
    real = passwords._hasher.verify

    class Counting:
        def verify(self, stored: str, password: str) -> bool:
            seen.append(len(password))
            return real(stored, password)

    monkeypatch.setattr(passwords, "_hasher", Counting())
    assert not passwords.verify_password(hashed, "correct horse battery" * 500_000)
    assert not passwords.verify_password(None, "y" * 10_000_000)
    assert passwords.verify_password(hashed, "correct horse battery")
    assert seen == [passwords.MAX_LENGTH + 1, passwords.MAX_LENGTH + 1, 21]


def test_progress_bar_draws_on_one_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("purging", out, width=10)
    bar(0, 4)
    bar(4, 4)
    bar.close()
    text = out.getvalue()
    assert text.startswith("\rpurging [..........] 0/4")
    assert "\rpurging [##########] 4/4 100%" in text and text.endswith("\n")
    assert "\n" not in text[:-1]


def test_csv_cells_cannot_become_formulas() -> None:
    assert _csv_cell("+358401234567") == "+358401234567"
    assert _csv_cell("=HYPERLINK(\"http://x\")") == "'=HYPERLINK(\"http://x\")"
    assert _csv_cell("+1+cmd|' /C calc'!A0") == "'+1+cmd|' /C calc'!A0"
    assert _csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert _csv_cell("Agent Anna") == "Agent Anna" and _csv_cell(12) == 12
