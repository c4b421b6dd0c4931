"""`callrec prompts build`: render or convert every prompt source into versioned audio.

A prompt's version is the first 12 hex digits of the SHA-256 of its 8 kHz PCM (the audio
Asterisk plays), so an unchanged source keeps its version. A source that fails (corrupt
audio, empty text, over 60 s, no voice for its language) is reported naming the file, and the
version built before stays live.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog

from callrec.prompts import audio
from callrec.prompts.errors import PromptError, PromptSourceError
from callrec.prompts.index import Entry, Index, file_name, read_index, write_atomically, write_index
from callrec.prompts.sources import PromptSource, find_source, find_sources
from callrec.prompts.speech_settings import SpeechSettings, load_speech_settings
from callrec.prompts.tts import synthesize

log = structlog.get_logger(__name__)

# bump when the conversion changes, so every prompt is rebuilt once
PIPELINE = "1:trim40dB:rms-20:peak-1:resample_poly"
MAX_TEXT_CHARS = 2000


@dataclass(frozen=True)
class BuildResult:
    name: str
    language: str
    status: str  # "built" (new version live), "unchanged", "failed"
    version: str | None  # the live version after the build (None if there is none)
    error: str | None = None


@dataclass(frozen=True)
class BuildReport:
    results: tuple[BuildResult, ...]
    problems: tuple[str, ...]  # files that are not prompts, broken settings

    @property
    def ok(self) -> bool:
        return not self.problems and all(r.status != "failed" for r in self.results)


def fingerprint(source: PromptSource, settings: SpeechSettings) -> str:
    """What the built audio depends on: the source bytes, the voice settings, the pipeline."""
    digest = hashlib.sha256()
    digest.update(f"{PIPELINE}\0{source.kind}\0".encode())
    if source.kind == "text":
        speech = settings.for_prompt(source.name, source.language)
        digest.update(f"{speech.voice}\0{speech.rate}\0".encode())
    digest.update(source.path.read_bytes())
    return digest.hexdigest()


def build_prompts(prompts_dir: Path, cache_dir: Path, *, force: bool = False) -> BuildReport:
    """Build every prompt under `prompts_dir` into `cache_dir`, updating the index."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _build_lock(cache_dir):
        index = read_index(cache_dir)
        sources, source_problems = find_sources(prompts_dir)
        problems = [exc.message for exc in source_problems]
        try:
            settings = load_speech_settings(prompts_dir)
        except PromptSourceError as exc:
            # without valid settings no text prompt can be rendered as the admin meant
            problems.append(exc.message)
            settings = None
        results = []
        for source in sources:
            results.append(_build_one(source, prompts_dir, cache_dir, index, settings, force))
        present = {f"{s.name}/{s.language}" for s in sources}
        for key in sorted(set(index.prompts) - present):
            entry = index.prompts[key]
            if not _source_gone(prompts_dir, entry.name, entry.language):
                # there but not usable this time (two studio files, a wrong or unmounted
                # prompts directory: reported above): the version built before stays live,
                # else every call of the service would go without its notice, unrecorded
                log.error("prompt.source_unusable_live_version_kept", name=entry.name,
                          language=entry.language, live_version=entry.version)
                continue
            index.prompts.pop(key)
            log.warning("prompt.source_removed", name=entry.name, language=entry.language)
        write_index(cache_dir, index)
    return BuildReport(results=tuple(results), problems=tuple(problems))


def _source_gone(prompts_dir: Path, name: str, language: str) -> bool:
    """The prompt's source was removed (not: could not be read or taken this time)."""
    if not prompts_dir.is_dir():
        return False
    try:
        return find_source(prompts_dir, name, language) is None
    except PromptSourceError:
        return False


def _build_one(
    source: PromptSource,
    prompts_dir: Path,
    cache_dir: Path,
    index: Index,
    settings: SpeechSettings | None,
    force: bool,
) -> BuildResult:
    key = f"{source.name}/{source.language}"
    previous = index.prompts.get(key)
    live = previous.version if previous else None
    try:
        if settings is None:
            if source.kind == "text":
                raise PromptSourceError(
                    f"{source.path}: not rendered: {prompts_dir / 'prompts.toml'} is invalid"
                )
            settings = SpeechSettings()
        source_print = fingerprint(source, settings)
        if (
            not force
            and previous is not None
            and previous.fingerprint == source_print
            and all((cache_dir / name).is_file() for name in previous.files.values())
        ):
            return BuildResult(source.name, source.language, "unchanged", live)
        entry = _convert(source, prompts_dir, cache_dir, settings, source_print)
    except PromptError as exc:
        log.error(
            "prompt.build_failed",
            name=source.name,
            language=source.language,
            error=exc.message,
            live_version=live,
        )
        return BuildResult(source.name, source.language, "failed", live, exc.message)
    except OSError as exc:
        message = f"{source.path}: {exc.strerror or exc}"
        log.error(
            "prompt.build_failed",
            name=source.name,
            language=source.language,
            error=message,
            live_version=live,
        )
        return BuildResult(source.name, source.language, "failed", live, message)
    index.prompts[key] = entry
    for fmt, name in entry.files.items():
        index.files[name] = {
            "name": entry.name,
            "language": entry.language,
            "version": entry.version,
            "format": fmt,
        }
    status = "unchanged" if entry.version == live else "built"
    if status == "built":
        log.info(
            "prompt.built",
            name=entry.name,
            language=entry.language,
            version=entry.version,
            previous_version=live,
            duration_ms=entry.duration_ms,
        )
    return BuildResult(source.name, source.language, status, entry.version)


def _convert(
    source: PromptSource,
    prompts_dir: Path,
    cache_dir: Path,
    settings: SpeechSettings,
    source_print: str,
) -> Entry:
    voice: str | None = None
    try:
        if source.kind == "text":
            text = _read_text(source.path)
            speech = settings.for_prompt(source.name, source.language)
            with tempfile.TemporaryDirectory(prefix="callrec-tts-") as tmp:
                rendered = Path(tmp) / "tts.wav"
                try:
                    result = synthesize(
                        text, source.language, rendered, voice=speech.voice, rate=speech.rate
                    )
                except PromptError as exc:
                    raise PromptSourceError(f"{source.path}: {exc.message}") from exc
                voice = result.voice
                data, rate = audio.read_audio(rendered)
        else:
            data, rate = audio.read_audio(source.path)
        pcm = audio.convert(data, rate)
    except audio.AudioError as exc:
        raise PromptSourceError(f"{source.path}: {exc}") from exc
    version = hashlib.sha256(pcm["wav"]).hexdigest()[:12]
    files: dict[str, str] = {}
    for fmt, data_pcm in pcm.items():
        name = file_name(source.name, source.language, version, fmt)
        target = cache_dir / name
        if not target.is_file():
            write_atomically(target, audio.wav_bytes(data_pcm, audio.OUTPUT_RATES[fmt]))
        files[fmt] = name
    return Entry(
        name=source.name,
        language=source.language,
        version=version,
        duration_ms=audio.duration_ms(pcm["wav"], audio.OUTPUT_RATES["wav"]),
        source=source.kind,
        source_path=str(source.path.relative_to(prompts_dir)),
        fingerprint=source_print,
        voice=voice,
        built_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        files=files,
    )


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptSourceError(f"{path}: not UTF-8 text") from exc
    text = " ".join(text.split())
    if not text:
        raise PromptSourceError(f"{path}: the text is empty")
    if len(text) > MAX_TEXT_CHARS:
        raise PromptSourceError(f"{path}: the text is over {MAX_TEXT_CHARS} characters")
    return text


@contextlib.contextmanager
def _build_lock(cache_dir: Path) -> Iterator[None]:
    """One build at a time per cache (a second one waits)."""
    # read-only: a lock file made by another account (the CLI run as root) still locks
    with open(os.open(cache_dir / ".build.lock", os.O_RDONLY | os.O_CREAT, 0o644), "rb") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
