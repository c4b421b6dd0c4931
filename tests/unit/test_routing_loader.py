"""The routing file: parsing, every kind of validation error with its line, opening hours."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from callrec.routing.errors import RoutingError
from callrec.routing.loader import load_routing
from callrec.routing.model import Strategy
from callrec.routing.toml_lines import line_of, locate_lines

REPO = Path(__file__).resolve().parents[2]

AGENTS = """\
[[agent]]
id = "agent1"
endpoint = "PJSIP/agent1"
name = "Aino Agentti"

[[agent]]
id = "agent2"
endpoint = "PJSIP/agent2"
name = "Bertil Agent"
"""  # lines 1-9

SERVICE = """\
[[service]]
number = "0103808000"
name = "Ajanvaraus"
language = "fi"
agents = ["agent1", "agent2"]
"""  # lines 11-15 when appended after AGENTS and a blank line


@pytest.fixture
def prompts_dir(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    for language in ("fi", "sv"):
        (root / language).mkdir(parents=True)
        (root / language / "notice.txt").write_text("Puhelu tallennetaan.\n", encoding="utf-8")
        (root / language / "closed.txt").write_text("Soita myöhemmin.\n", encoding="utf-8")
    return root


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(tmp_path: Path, prompts_dir: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(RoutingError) as caught:
        load_routing(path, prompts_dir=prompts_dir)
    prefix = f"{path}:"
    assert all(p.startswith(prefix) for p in caught.value.problems), caught.value.problems
    return [p[len(prefix) :] for p in caught.value.problems]


def test_demo_configuration_is_valid() -> None:
    routing = load_routing(REPO / "config" / "demo.toml", prompts_dir=REPO / "prompts")
    fi = routing.services["0103808000"]
    assert (fi.name, fi.language, fi.strategy) == ("Ajanvaraus", "fi", Strategy.IN_ORDER)
    assert fi.agents == ("agent1", "agent2", "agent3")
    assert (fi.ring_timeout, fi.max_wait, fi.hours) == (15.0, 60.0, ())
    sv = routing.services["0103808001"]
    assert (sv.language, sv.strategy) == ("sv", Strategy.RING_ALL)
    assert routing.agents["agent1"].endpoint == "PJSIP/agent1"
    assert routing.agents["agent1"].name == "Aino Agentti"
    assert {a.name for a in routing.agents.values()} == {
        "Aino Agentti",
        "Bertil Agent",
        "Cecilia Agent",
    }
    assert len(routing.version) == 16


def test_snapshot_cannot_be_mutated(tmp_path: Path, prompts_dir: Path) -> None:
    routing = load_routing(write(tmp_path, AGENTS + "\n" + SERVICE), prompts_dir=prompts_dir)
    with pytest.raises(TypeError):
        routing.services["x"] = routing.services["0103808000"]  # type: ignore[index]


def test_defaults_and_overrides(tmp_path: Path, prompts_dir: Path) -> None:
    text = (
        '[defaults]\nring_timeout = 20\nstrategy = "round_robin"\n\n'
        + AGENTS
        + "\n"
        + SERVICE
        + "max_wait = 30.5\n"
    )
    service = load_routing(write(tmp_path, text), prompts_dir=prompts_dir).services["0103808000"]
    assert service.ring_timeout == 20.0
    assert service.strategy is Strategy.ROUND_ROBIN
    assert service.max_wait == 30.5
    assert (service.notice_prompt, service.closed_prompt) == ("notice", "closed")


def test_unknown_keys_are_reported_with_their_lines(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + "ring_timout = 15\n\n[extra]\nx = 1\n"
    found = problems(tmp_path, prompts_dir, text)
    assert len(found) == 2
    assert found[0].startswith("16: unknown key 'ring_timout' in [[service]]")
    assert found[1].startswith("18: unknown key 'extra' in top level")


def test_unknown_key_in_agent(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS.replace('name = "Bertil Agent"', 'name = "Bertil Agent"\nphone = "123"')
    found = problems(tmp_path, prompts_dir, text + "\n" + SERVICE)
    assert found[0].startswith("10: unknown key 'phone' in [[agent]]")


def test_missing_prompt(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + 'notice = "welcome"\n'
    found = problems(tmp_path, prompts_dir, text)
    assert found == [
        f"16: notice prompt 'welcome' has no source for language 'fi' "
        f"(expected {prompts_dir}/fi/welcome.txt, .wav, .flac or .ogg)"
    ]


def test_missing_prompt_in_the_language_of_the_service(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE.replace('"fi"', '"en"')
    found = problems(tmp_path, prompts_dir, text)
    # defaults apply at the service's header line
    assert [f.split(":")[0] for f in found] == ["11", "11"]
    assert "notice prompt 'notice' has no source for language 'en'" in found[0]
    assert "closed prompt 'closed' has no source for language 'en'" in found[1]


def test_studio_recording_counts_as_a_prompt(tmp_path: Path, prompts_dir: Path) -> None:
    (prompts_dir / "fi" / "welcome.flac").write_bytes(b"not checked here")
    text = AGENTS + "\n" + SERVICE + 'notice = "welcome"\n'
    routing = load_routing(write(tmp_path, text), prompts_dir=prompts_dir)
    assert routing.services["0103808000"].notice_prompt == "welcome"


def test_agent_referenced_but_not_defined(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE.replace('["agent1", "agent2"]', '[\n  "agent1",\n  "agent9",\n]')
    found = problems(tmp_path, prompts_dir, text)
    assert found == ["17: agent 'agent9' is not defined in any [[agent]]"]


def test_duplicate_numbers_name_both_lines(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + "\n" + SERVICE.replace("Ajanvaraus", "Toinen")
    found = problems(tmp_path, prompts_dir, text)
    assert found == ["18: duplicate service number '0103808000' (first defined at line 12)"]


def test_duplicate_agent_ids(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS.replace('id = "agent2"', 'id = "agent1"') + "\n" + SERVICE
    found = problems(tmp_path, prompts_dir, text)
    assert found[0] == "7: duplicate agent id 'agent1' (first defined at line 2)"


def test_number_must_be_a_string(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE.replace('"0103808000"', "103808000")
    found = problems(tmp_path, prompts_dir, text)
    assert found[0].startswith("12: number must be a quoted string")


@pytest.mark.parametrize(
    ("hours", "line", "message"),
    [
        ('{ days = "mon-fri", open = "8:00", close = "16:00" }', 18, "bad open time '8:00'"),
        ('{ days = "mon-fri", open = "08:00", close = "25:00" }', 18, "bad close time '25:00'"),
        ('{ days = "mon-fri", open = "08:00", close = "08:00" }', 18, "close 08:00 equals open"),
        ('{ days = "mon-fri", open = "24:00", close = "08:00" }', 18, "open cannot be 24:00"),
        ('{ days = "monday", open = "08:00", close = "16:00" }', 18, "bad days 'monday'"),
        ('{ days = "fri-mon", open = "08:00", close = "16:00" }', 18, "runs backwards"),
        ('{ days = "mon", open = "08:00", close = "16:00", lunch = 1 }', 18, "unknown key 'lunch'"),
    ],
)
def test_bad_opening_hours(
    tmp_path: Path, prompts_dir: Path, hours: str, line: int, message: str
) -> None:
    text = (
        AGENTS
        + "\n"
        + SERVICE
        + 'hours = [\n  { days = "sat", open = "09:00", close = "12:00" },\n  '
        + hours
        + ",\n]\n"
    )
    found = problems(tmp_path, prompts_dir, text)
    assert len(found) == 1, found
    assert found[0].startswith(f"{line}: "), found
    assert message in found[0]


def test_bad_strategy_timeouts_language_and_timezone(tmp_path: Path, prompts_dir: Path) -> None:
    text = (
        AGENTS
        + "\n"
        + SERVICE.replace('"fi"', '"Finnish"')
        + 'strategy = "random"\nring_timeout = 0\nmax_wait = -5\ntimezone = "Mars/Olympus"\n'
    )
    found = problems(tmp_path, prompts_dir, text)
    assert found == [
        "14: bad language 'Finnish' (a lower-case code such as fi)",
        "16: bad strategy 'random' (known: in_order, ring_all, round_robin, longest_idle)",
        "17: ring_timeout must be at least 1 second, not 0",
        "18: max_wait must be at least 1 second, not -5",
        "19: unknown timezone 'Mars/Olympus' (e.g. \"Europe/Helsinki\")",
    ]


def test_timeout_must_be_a_number(tmp_path: Path, prompts_dir: Path) -> None:
    text = '[defaults]\nring_timeout = "15"\n\n' + AGENTS + "\n" + SERVICE
    found = problems(tmp_path, prompts_dir, text)
    assert found == ["2: ring_timeout must be a number of seconds, not '15'"]


def test_missing_keys(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + '\n[[service]]\nnumber = "0103808000"\n'
    found = problems(tmp_path, prompts_dir, text)
    assert found == [
        "11: missing key 'name'",
        "11: missing key 'language'",
        "11: missing key 'agents'",
    ]


def test_toml_syntax_error_has_a_line(tmp_path: Path, prompts_dir: Path) -> None:
    found = problems(tmp_path, prompts_dir, AGENTS + "\n[[service]]\nnumber = \n")
    assert len(found) == 1
    assert found[0].startswith("12: ")


def test_toml_duplicate_key_has_a_line(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + 'name = "Again"\n'
    found = problems(tmp_path, prompts_dir, text)
    assert found[0].startswith("16: Cannot overwrite a value")


def test_unreadable_file(tmp_path: Path, prompts_dir: Path) -> None:
    with pytest.raises(RoutingError) as caught:
        load_routing(tmp_path / "missing.toml", prompts_dir=prompts_dir)
    assert caught.value.problems[0].startswith(f"{tmp_path / 'missing.toml'}: cannot read")


def test_not_utf8(tmp_path: Path, prompts_dir: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_bytes(b"# ok\n# \xff\n")
    with pytest.raises(RoutingError) as caught:
        load_routing(path, prompts_dir=prompts_dir)
    assert caught.value.problems == (f"{path}:2: not valid UTF-8",)


def test_all_problems_at_once_in_line_order(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE.replace('"agent2"]', '"nobody"]') + 'strategy = "x"\n'
    found = problems(tmp_path, prompts_dir, text)
    assert [f.split(":")[0] for f in found] == ["15", "16"]


def test_opening_hours(tmp_path: Path, prompts_dir: Path) -> None:
    text = (
        AGENTS
        + "\n"
        + SERVICE
        + 'hours = [{ days = "mon-wed, fri", open = "08:00", close = "16:00" },'
        + ' { days = "sat", open = "22:00", close = "06:00" },'
        + ' { days = "sun", open = 10:00:00, close = "24:00" }]\n'
        + 'timezone = "Europe/Stockholm"\n'
    )
    service = load_routing(write(tmp_path, text), prompts_dir=prompts_dir).services["0103808000"]
    assert service.timezone == "Europe/Stockholm"
    hours = [(i.weekday, i.opens, i.closes) for i in service.hours]
    assert hours == [
        (0, dt.time(8), dt.time(16)),
        (1, dt.time(8), dt.time(16)),
        (2, dt.time(8), dt.time(16)),
        (4, dt.time(8), dt.time(16)),
        (5, dt.time(22), dt.time(6)),  # past midnight, into Sunday
        (6, dt.time(10), dt.time.max),
    ]


def test_locate_lines_handles_multiline_values() -> None:
    text = textwrap.dedent(
        '''\
        # comment
        [[service]]
        notes = """
        line with = sign
        [not a table]
        """
        agents = [
          "a",  # first
          "b",
        ]
        "quoted.key" = 1
        [[service]]
        number = "2"
        [service.sub]
        x = 1979-05-27 07:32:00
        '''
    )
    lines = locate_lines(text)
    assert lines[("service", 0)] == 2
    assert lines[("service", 0, "notes")] == 3
    assert lines[("service", 0, "agents", 1)] == 9
    assert lines[("service", 0, "quoted.key")] == 11
    assert lines[("service", 1, "number")] == 13
    assert lines[("service", 1, "sub", "x")] == 15
    assert ("not a table",) not in lines
    assert line_of(lines, ("service", 1, "sub", "missing", 3)) == 14
    assert line_of(lines, ("nowhere",)) == 1


def test_bad_default_is_reported_once(tmp_path: Path, prompts_dir: Path) -> None:
    text = (
        "[defaults]\nmax_wait = 0\n\n"
        + AGENTS
        + "\n"
        + SERVICE
        + "\n"
        + SERVICE.replace("0103808000", "0103808001")
    )
    assert problems(tmp_path, prompts_dir, text) == ["2: max_wait must be at least 1 second, not 0"]


def test_prompt_names_are_checked_before_any_lookup(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + 'closed = "../fi/notice"\n'
    assert problems(tmp_path, prompts_dir, text) == [
        "16: closed must be a prompt name (a-z, 0-9 and _), not '../fi/notice'"
    ]


def test_an_empty_service_array_is_no_service(tmp_path: Path, prompts_dir: Path) -> None:
    assert problems(tmp_path, prompts_dir, "service = []\n" + AGENTS) == [
        "1: no [[service]] defined"]


@pytest.mark.parametrize("bad", ["Aja\\u0000nvaraus", "Aja\\nvaraus", "Aja\\u007fnvaraus"])
def test_names_with_control_characters_are_refused(
    tmp_path: Path, prompts_dir: Path, bad: str
) -> None:
    """A NUL would be refused by PostgreSQL in every row of the service's calls."""
    text = AGENTS.replace('"Aino Agentti"', f'"{bad}"') + "\n" + SERVICE
    assert problems(tmp_path, prompts_dir, text) == [
        "4: name must not contain control characters"]
    text = AGENTS + "\n" + SERVICE.replace('"Ajanvaraus"', f'"{bad}"')
    assert problems(tmp_path, prompts_dir, text) == [
        "13: name must not contain control characters"]


def test_a_prompt_folder_callrec_cannot_read_is_a_clear_problem(
    tmp_path: Path, prompts_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Path.is_file

    def is_file(path: Path) -> bool:
        if path.parent == prompts_dir / "fi":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    assert problems(tmp_path, prompts_dir, AGENTS + "\n" + SERVICE) == [
        f"11: {prompts_dir / 'fi'}: cannot look for prompt notice/fi: Permission denied",
        f"11: {prompts_dir / 'fi'}: cannot look for prompt closed/fi: Permission denied",
    ]


def test_defaults_every_service_overrides_are_checked_too(
    tmp_path: Path, prompts_dir: Path
) -> None:
    """Else a wrong default would pass until a new service inherits it."""
    text = (
        '[defaults]\nstrategy = "bogus"\ntimezone = "Mars/Olympus"\nring_timeout = 0.001\n'
        'notice = "../x"\n\n' + AGENTS + "\n"
        + SERVICE.replace('agents = [', 'strategy = "in_order"\ntimezone = "Europe/Helsinki"\n'
                          'ring_timeout = 10\nnotice = "notice"\nagents = [')
    )
    found = problems(tmp_path, prompts_dir, text)
    assert [p.split(":")[0] for p in found] == ["2", "3", "4", "5"]
    assert "bad strategy 'bogus'" in found[0] and "Mars/Olympus" in found[1]
    assert "ring_timeout must be at least 1 second, not 0.001" in found[2]
    assert "notice must be a prompt name" in found[3]


def test_empty_opening_hours_are_refused(tmp_path: Path, prompts_dir: Path) -> None:
    text = AGENTS + "\n" + SERVICE + "hours = []\n"
    assert problems(tmp_path, prompts_dir, text) == [
        "16: hours = [] would keep the service closed for good: leave hours out for a service "
        "that is always open"]
