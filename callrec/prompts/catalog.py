"""Which version of a prompt to play, and the URL Asterisk fetches it from.

The catalog reads the cache's index and reads it again whenever the file changes, so a
`callrec prompts build` takes effect for the next call without a restart.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import structlog

from callrec.prompts.errors import PromptError, PromptMissing
from callrec.prompts.index import FILE_RE, INDEX_FILE, Index, read_index
from callrec.prompts.index import file_name as file_name_of

log = structlog.get_logger(__name__)

# what Asterisk is told about each served format: res_http_media_cache picks the format from
# Content-Type first. format_wav registers audio/wav for 8 kHz `wav` only; `wav16` has no MIME
# type, so it is served as octet-stream and Asterisk falls back to the URL's extension.
CONTENT_TYPES = {"wav": "audio/wav", "wav16": "application/octet-stream"}


@dataclass(frozen=True)
class PromptRef:
    name: str
    language: str
    version: str
    media: str  # pass to AriClient.play, e.g. sound:http://host:8080/prompts/notice-fi-<v>.wav
    duration_ms: int


@dataclass(frozen=True)
class PromptFile:
    path: Path
    content_type: str
    version: str


class PromptCatalog:
    """Live prompt versions from `<cache_dir>/index.json` (see callrec.prompts.index)."""

    def __init__(self, prompts_dir: Path, cache_dir: Path, public_url: str) -> None:
        self.prompts_dir = Path(prompts_dir)
        self.cache_dir = Path(cache_dir)
        self.public_url = public_url.rstrip("/")
        self._index = Index()
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def resolve(self, name: str, language: str) -> PromptRef:
        """The live version of a prompt; PromptMissing if it was never built."""
        entry = self._current().prompts.get(f"{name}/{language}")
        if entry is None or "wav" not in entry.files:
            raise PromptMissing(
                f"no built prompt {name!r} for language {language!r}; "
                "add its source and run `callrec prompts build`"
            )
        return PromptRef(
            name=entry.name,
            language=entry.language,
            version=entry.version,
            media=f"sound:{self.public_url}/prompts/{entry.files['wav']}",
            duration_ms=entry.duration_ms,
        )

    def refs(self) -> list[PromptRef]:
        """Every live prompt."""
        index = self._current()
        return [self.resolve(entry.name, entry.language) for entry in index.prompts.values()]

    def file(self, file_name: str) -> PromptFile | None:
        """A built file by its served name (any version ever built), or None."""
        match = FILE_RE.fullmatch(file_name)
        if match is None:
            return None
        info = self._current().files.get(file_name)
        if info is None:
            return None
        # the path is rebuilt from the index entry, not taken from the request
        stored = file_name_of(info["name"], info["language"], info["version"], info["format"])
        if stored != match.group(0):
            return None
        return PromptFile(
            path=self.cache_dir / stored,
            content_type=CONTENT_TYPES[info["format"]],
            version=info["version"],
        )

    def _current(self) -> Index:
        path = self.cache_dir / INDEX_FILE
        try:
            st = path.stat()
            stamp: tuple[int, int, int] | None = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        with self._lock:
            if stamp != self._stamp:
                try:
                    index = read_index(self.cache_dir)
                except PromptError as exc:
                    # keep serving what was live; the damaged index is retried when it changes
                    log.error("prompts.index_unreadable", error=exc.message)
                else:
                    if self._stamp is not None:
                        log.info("prompts.index_reloaded", prompts=len(index.prompts))
                    self._index = index
                self._stamp = stamp
            return self._index
