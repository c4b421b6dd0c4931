"""The prompt cache's index: which version of each prompt is live, and every file built.

`<cache_dir>/index.json`, replaced atomically:

    {"format": 1,
     "prompts": {"notice/fi": {name, language, version, duration_ms, source, source_path,
                               fingerprint, voice, built_at, files: {"wav": ..., "wav16": ...}}},
     "files": {"notice-fi-<version>.wav": {name, language, version, format}}}

`files` keeps every version ever built, so a call that resolved a prompt just before a
rebuild can still fetch it; only `prompts` says what is live.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from callrec.prompts.errors import PromptError

INDEX_FILE = "index.json"
FORMAT = 1
# what a cache file may be called; the HTTP route only serves names of this shape
FILE_RE = re.compile(
    r"(?P<name>[a-z0-9][a-z0-9_]{0,63})-(?P<language>[a-z]{2,3})-"
    r"(?P<version>[0-9a-f]{12})\.(?P<format>wav|wav16)"
)


@dataclass(frozen=True)
class Entry:
    name: str
    language: str
    version: str
    duration_ms: int
    source: str  # "text" or "studio"
    source_path: str  # relative to the prompts directory
    fingerprint: str  # of the source and its settings; equal means nothing to rebuild
    voice: str | None
    built_at: str
    files: dict[str, str]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.language}"


@dataclass
class Index:
    prompts: dict[str, Entry] = field(default_factory=dict)
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        data = {
            "format": FORMAT,
            "prompts": {key: vars(entry) for key, entry in sorted(self.prompts.items())},
            "files": dict(sorted(self.files.items())),
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def file_name(name: str, language: str, version: str, fmt: str) -> str:
    return f"{name}-{language}-{version}.{fmt}"


def read_index(cache_dir: Path) -> Index:
    """The index, empty if none was built yet; PromptError if it is damaged."""
    path = cache_dir / INDEX_FILE
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Index()
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"{path}: cannot read the prompt index: {exc}") from exc
    try:
        data: dict[str, Any] = json.loads(raw)
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        prompts = {key: Entry(**value) for key, value in data["prompts"].items()}
        files = {
            str(key): {str(k): str(v) for k, v in value.items()}
            for key, value in data["files"].items()
            if FILE_RE.fullmatch(key)
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PromptError(
            f"{path}: damaged prompt index ({exc}); run `callrec prompts build`"
        ) from exc
    return Index(prompts=prompts, files=files)


def write_index(cache_dir: Path, index: Index) -> None:
    path = cache_dir / INDEX_FILE
    write_atomically(path, index.to_json().encode("utf-8"))


def write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name, fsync, then rename: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
