"""Text-to-speech settings: voice and speaking rate per language or per prompt.

They are read from `prompts/prompts.toml` (optional):

    [tts]
    rate = 150              # words per minute for every language (espeak-ng: 80..450)

    [tts.fi]
    voice = "fi"            # an espeak-ng voice (`espeak-ng --voices`); default: the language's
    rate = 145

    [tts.fi.notice]         # one prompt in one language
    rate = 135
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrec.prompts.errors import PromptSourceError
from callrec.prompts.sources import LANGUAGE_RE, NAME_RE
from callrec.prompts.tts import DEFAULT_RATE

SETTINGS_FILE = "prompts.toml"
_MIN_RATE, _MAX_RATE = 80, 450
_SCALARS = frozenset({"rate", "voice"})
_TOML_POSITION_RE = re.compile(r"^(?P<msg>.*?)\s*\(at line (?P<line>\d+), column \d+\)$")


@dataclass(frozen=True)
class Speech:
    voice: str | None  # None: the language's default voice
    rate: int


@dataclass(frozen=True)
class SpeechSettings:
    rate: int = DEFAULT_RATE
    languages: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def for_prompt(self, name: str, language: str) -> Speech:
        lang = self.languages.get(language, {})
        prompt = lang.get(name, {}) if isinstance(lang.get(name), dict) else {}
        voice = prompt.get("voice", lang.get("voice"))
        rate = prompt.get("rate", lang.get("rate", self.rate))
        return Speech(voice=voice, rate=int(rate))


def load_speech_settings(prompts_dir: Path) -> SpeechSettings:
    """Read and check prompts.toml; a missing file means the defaults."""
    path = prompts_dir / SETTINGS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return SpeechSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptSourceError(f"{path}: cannot read: {exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_POSITION_RE.match(str(exc))
        where = f"{path}:{match['line']}: {match['msg']}" if match else f"{path}: {exc}"
        raise PromptSourceError(where) from exc
    problems: list[str] = []
    for key in data:
        if key != "tts":
            problems.append(f"unknown key {key!r} (only [tts])")
    tts = data.get("tts", {})
    if not isinstance(tts, dict):
        problems.append("tts must be a table")
        tts = {}
    languages: dict[str, dict[str, Any]] = {}
    for key, value in tts.items():
        if isinstance(value, dict):
            if not LANGUAGE_RE.fullmatch(key):
                problems.append(f"[tts.{key}]: not a language code")
                continue
            languages[key] = value
            _check_level(value, f"tts.{key}", problems, allow_prompts=True)
        else:
            _check_scalar(key, value, "tts", problems)
    if problems:
        raise PromptSourceError("; ".join(f"{path}: {problem}" for problem in problems))
    return SpeechSettings(rate=int(tts.get("rate", DEFAULT_RATE)), languages=languages)


def _check_level(
    table: Mapping[str, Any], where: str, problems: list[str], *, allow_prompts: bool
) -> None:
    for key, value in table.items():
        if isinstance(value, dict) and allow_prompts:
            if not NAME_RE.fullmatch(key):
                problems.append(f"[{where}.{key}]: not a prompt name")
            _check_level(value, f"{where}.{key}", problems, allow_prompts=False)
        else:
            _check_scalar(key, value, where, problems)


def _check_scalar(key: str, value: Any, where: str, problems: list[str]) -> None:
    if key not in _SCALARS:
        problems.append(f"unknown key {key!r} in [{where}] (known: rate, voice)")
    elif key == "rate" and (
        isinstance(value, bool) or not isinstance(value, int) or not _MIN_RATE <= value <= _MAX_RATE
    ):
        problems.append(f"[{where}] rate must be a whole number {_MIN_RATE}..{_MAX_RATE}")
    elif key == "voice" and (not isinstance(value, str) or not re.fullmatch(r"[\w/-]+", value)):
        problems.append(f'[{where}] voice must be an espeak-ng voice name such as "fi"')
