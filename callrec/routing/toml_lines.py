"""Line numbers of keys, tables and array elements in a TOML text.

tomllib returns plain values without positions, so validation messages would have no line.
`locate_lines` walks the text of a document that tomllib has already accepted and records
where each value starts, keyed by its path in the parsed data: table keys are strings, array
elements (arrays of tables included) are integer indices. For example, in

    [[service]]
    number = "0103808000"
    hours = [{ days = "mon-fri", open = "08:00", close = "16:00" }]

the path ("service", 0) is the header's line, ("service", 0, "number") the next one, and
("service", 0, "hours", 0, "open") the line of that inline value.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import TypeAlias

TomlPath: TypeAlias = tuple[str | int, ...]

_BARE_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def locate_lines(text: str) -> dict[TomlPath, int]:
    """Map each path of the document to the 1-based line where it is defined."""
    return _Scanner(text).run()


def line_of(lines: Mapping[TomlPath, int], path: TomlPath) -> int:
    """The line of `path`, or of its nearest located ancestor (1 if none)."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return 1


class _Scanner:
    """A lenient reader for text that is known to be valid TOML."""

    def __init__(self, text: str) -> None:
        self.text = text.replace("\r\n", "\n")
        self.pos = 0
        self.line = 1
        self.lines: dict[TomlPath, int] = {}
        self.table: TomlPath = ()
        # number of elements seen so far for each array of tables, by its resolved path
        self.aot_counts: dict[TomlPath, int] = {}

    def run(self) -> dict[TomlPath, int]:
        text = self.text
        while True:
            self._skip_blank(newlines=True)
            if self.pos >= len(text):
                return self.lines
            if text.startswith("[[", self.pos):
                self._array_table_header()
            elif text[self.pos] == "[":
                self._table_header()
            else:
                self._key_value(self.table)

    # -- statements ---------------------------------------------------------------------------

    def _array_table_header(self) -> None:
        line = self.line
        self.pos += 2
        keys = self._keys()
        self._skip_blank()
        self.pos += 2  # "]]"
        parent = self._resolve(keys[:-1])
        array = (*parent, keys[-1])
        index = self.aot_counts.get(array, 0)
        self.aot_counts[array] = index + 1
        self.lines.setdefault(array, line)
        self.table = (*array, index)
        self.lines[self.table] = line

    def _table_header(self) -> None:
        line = self.line
        self.pos += 1
        keys = self._keys()
        self._skip_blank()
        self.pos += 1  # "]"
        self.table = self._resolve(keys)
        self.lines.setdefault(self.table, line)

    def _resolve(self, keys: list[str]) -> TomlPath:
        """Turn header keys into a concrete path: arrays of tables mean their last element."""
        out: list[str | int] = []
        for key in keys:
            out.append(key)
            count = self.aot_counts.get(tuple(out))
            if count:
                out.append(count - 1)
        return tuple(out)

    def _key_value(self, base: TomlPath) -> None:
        line = self.line
        keys = self._keys()
        path = base
        for key in keys:
            path = (*path, key)
            self.lines.setdefault(path, line)
        self._skip_blank()
        self.pos += 1  # "="
        self._skip_blank()
        self._value(path)

    # -- values -------------------------------------------------------------------------------

    def _value(self, path: TomlPath) -> None:
        text = self.text
        if text.startswith('"""', self.pos):
            self._multiline_string('"""', escapes=True)
        elif text.startswith("'''", self.pos):
            self._multiline_string("'''", escapes=False)
        elif text[self.pos] == '"':
            self._string('"', escapes=True)
        elif text[self.pos] == "'":
            self._string("'", escapes=False)
        elif text[self.pos] == "[":
            self._array(path)
        elif text[self.pos] == "{":
            self._inline_table(path)
        else:
            # numbers, booleans, dates and times (a datetime may hold a space)
            while self.pos < len(text) and text[self.pos] not in ",]}#\n":
                self.pos += 1

    def _array(self, path: TomlPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self.text[self.pos] == "]":
                self.pos += 1
                return
            self.lines[(*path, index)] = self.line
            self._value((*path, index))
            self._skip_blank(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1
            index += 1

    def _inline_table(self, path: TomlPath) -> None:
        self.pos += 1
        while True:
            self._skip_blank(newlines=True)
            if self.text[self.pos] == "}":
                self.pos += 1
                return
            self._key_value(path)
            self._skip_blank(newlines=True)
            if self.text[self.pos] == ",":
                self.pos += 1

    def _string(self, quote: str, *, escapes: bool) -> str:
        text = self.text
        start = self.pos
        self.pos += 1
        while text[self.pos] != quote:
            if escapes and text[self.pos] == "\\":
                self.pos += 1
            self.pos += 1
        self.pos += 1
        return text[start : self.pos]

    def _multiline_string(self, delimiter: str, *, escapes: bool) -> None:
        text = self.text
        self.pos += 3
        while not text.startswith(delimiter, self.pos):
            if escapes and text[self.pos] == "\\":
                self.pos += 1
            if text[self.pos] == "\n":
                self.line += 1
            self.pos += 1
        self.pos += 3
        # up to two quotes right before the closing delimiter belong to the string
        extra = 0
        while extra < 2 and self.pos < len(text) and text[self.pos] == delimiter[0]:
            self.pos += 1
            extra += 1

    # -- keys and blanks ----------------------------------------------------------------------

    def _keys(self) -> list[str]:
        keys: list[str] = []
        while True:
            self._skip_blank()
            char = self.text[self.pos]
            if char in "\"'":
                quoted = self._string(char, escapes=char == '"')
                keys.append(str(tomllib.loads(f"k = {quoted}")["k"]))
            else:
                start = self.pos
                while self.text[self.pos] in _BARE_KEY_CHARS:
                    self.pos += 1
                keys.append(self.text[start : self.pos])
            self._skip_blank()
            if self.text[self.pos] != ".":
                return keys
            self.pos += 1

    def _skip_blank(self, *, newlines: bool = False) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in " \t":
                self.pos += 1
            elif char == "#":
                while self.pos < len(text) and text[self.pos] != "\n":
                    self.pos += 1
            elif char == "\n" and newlines:
                self.line += 1
                self.pos += 1
            else:
                return
