"""locate_lines against generated TOML documents whose lines are known by construction."""

from __future__ import annotations

import tomllib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from callrec.routing.toml_lines import TomlPath, locate_lines

bare_keys = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
quoted_keys = st.sampled_from(['"a.b"', '"x y"', "'lit'", '"é"'])
plain_values = st.sampled_from(
    [
        '"text"',
        "'literal # not a comment'",
        '"with \\" quote"',
        "15",
        "-2.5",
        "true",
        "1979-05-27 07:32:00",
        "07:30:00",
        '"[not = a table]"',
    ]
)
multiline_values = st.sampled_from(
    [
        '"""\nline one\n[fake]\nkey = 1\n"""',
        "'''\nraw = text\n'''",
        '"""one "quoted" line"""',
        '"""ends with quotes""""',
    ]
)


def unquote(key: str) -> str:
    return str(tomllib.loads(f"k = {key}")["k"]) if key[0] in "\"'" else key


@st.composite
def documents(draw: st.DrawFn) -> tuple[str, dict[TomlPath, int]]:
    lines: list[str] = []
    expected: dict[TomlPath, int] = {}

    def emit(text: str) -> int:
        line = len(lines) + 1
        lines.extend(text.split("\n"))
        return line

    def key_values(base: TomlPath) -> None:
        used: set[str] = set()
        for _ in range(draw(st.integers(0, 4))):
            raw = draw(st.one_of(bare_keys, quoted_keys))
            key = unquote(raw)
            if key in used:
                continue
            used.add(key)
            kind = draw(st.sampled_from(["plain", "multiline", "array", "inline"]))
            if kind == "plain":
                line = emit(f"{raw} = {draw(plain_values)}  # comment")
                expected[(*base, key)] = line
            elif kind == "multiline":
                expected[(*base, key)] = emit(f"{raw} = {draw(multiline_values)}")
            elif kind == "array":
                count = draw(st.integers(0, 3))
                start = emit(f"{raw} = [")
                expected[(*base, key)] = start
                for index in range(count):
                    expected[(*base, key, index)] = emit(f"  {draw(plain_values)},  # item")
                emit("]")
            else:
                line = emit(f'{raw} = {{ days = "mon", open = "08:00" }}')
                expected[(*base, key)] = line
                expected[(*base, key, "days")] = line
                expected[(*base, key, "open")] = line
            if draw(st.booleans()):
                emit("")

    key_values(())
    aot_index = 0
    for number in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            line = emit(f"[[service]]  # {number}")
            expected[("service", aot_index)] = line
            key_values(("service", aot_index))
            aot_index += 1
        else:
            line = emit(f"[table{number}]")
            expected[(f"table{number}",)] = line
            key_values((f"table{number}",))
    return "\n".join(lines) + "\n", expected


def lookup(data: Any, path: TomlPath) -> Any:
    for part in path:
        data = data[part]
    return data


@settings(max_examples=200, deadline=None)
@given(documents())
def test_lines_match_construction(doc: tuple[str, dict[TomlPath, int]]) -> None:
    text, expected = doc
    data = tomllib.loads(text)  # the generator only makes valid TOML
    found = locate_lines(text)
    for path, line in expected.items():
        assert found.get(path) == line, (path, text)
    for path in found:
        lookup(data, path)  # every located path exists in the parsed data


def test_windows_line_endings() -> None:
    text = '[[service]]\r\nnumber = "1"\r\n\r\n[[service]]\r\nnumber = "2"\r\n'
    found = locate_lines(text)
    assert found[("service", 1, "number")] == 5
