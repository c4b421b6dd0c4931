"""Admin changes to prompts and routing, as files: the same files and checks as the CLI.

Prompts: the sources under CALLREC_PROMPTS_DIR (`<language>/<name>.txt`, or a studio
recording that wins over the text), built into the versioned cache by
`callrec.prompts.build.build_prompts`; the catalog picks the new version up for the next call.
Only prompts that already have a source are edited: a path is always one the server listed.
Routing: the text is checked with the routing loader's own parser before it replaces the file
atomically, then the live `RoutingProvider` reloads it (no restart)."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import soundfile

from callrec.prompts.audio import SOURCE_RATES
from callrec.prompts.build import MAX_TEXT_CHARS, BuildReport, build_prompts
from callrec.prompts.errors import PromptError
from callrec.prompts.index import read_index
from callrec.prompts.sources import STUDIO_SUFFIXES, PromptSource, find_source, find_sources
from callrec.routing.errors import RoutingError
from callrec.routing.loader import RoutingProvider, parse_routing
from callrec.web.errors import FormInvalid, UploadRejected

MAX_UPLOAD_BYTES = 8 * 1024 * 1024
MAX_STUDIO_SECONDS = 60.0
MAX_ROUTING_BYTES = 256 * 1024


@dataclass(frozen=True)
class PromptView:
    name: str
    language: str
    source: str  # "text" or "studio"
    text: str | None  # the .txt content, also when a studio recording overrides it
    studio_file: str | None
    live_version: str | None
    live_file: str | None  # served under /prompts/
    live_source: str | None
    built_at: str | None
    duration_ms: int | None
    stale: bool  # the source changed after the live version was built


def list_prompts(prompts_dir: Path, cache_dir: Path) -> tuple[list[PromptView], list[str]]:
    """Every prompt source with its live version, and any problem with the sources."""
    sources, source_problems = find_sources(prompts_dir)
    problems = [p.message for p in source_problems]
    try:
        prompts = read_index(cache_dir).prompts
    except PromptError as exc:  # a damaged index is shown, not fatal to the page
        problems.append(exc.message)
        prompts = {}
    views = []
    for src in sources:
        text_path = src.path.parent / f"{src.name}.txt"
        text = text_path.read_text(encoding="utf-8", errors="replace") if text_path.is_file() \
            else None
        entry = prompts.get(f"{src.name}/{src.language}")
        stale = entry is None or entry.source != src.kind or (
            src.path.stat().st_mtime > _built_epoch(entry.built_at)
        )
        views.append(PromptView(
            src.name, src.language, src.kind, text,
            src.path.name if src.kind == "studio" else None,
            entry.version if entry else None, entry.files.get("wav") if entry else None,
            entry.source if entry else None, entry.built_at if entry else None,
            entry.duration_ms if entry else None, stale,
        ))
    return views, problems


def _built_epoch(built_at: str) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(built_at).timestamp() + 1  # second resolution
    except ValueError:
        return 0.0


def existing_source(prompts_dir: Path, language: str, name: str) -> PromptSource:
    """A prompt that has a source already; FormInvalid otherwise (nothing is created)."""
    src = find_source(prompts_dir, name, language)
    if src is None:
        raise FormInvalid("prompt", "no such prompt")
    return src


def clean_prompt_text(text: str) -> str:
    cleaned = text.replace("\r\n", "\n").strip()
    if not cleaned:
        raise FormInvalid("text", "the text is empty")
    if len(cleaned) > MAX_TEXT_CHARS:
        raise FormInvalid("text", f"at most {MAX_TEXT_CHARS} characters")
    if any(ord(c) < 32 and c != "\n" for c in cleaned):
        raise FormInvalid("text", "control characters are not allowed")
    return cleaned + "\n"


def save_text(prompts_dir: Path, language: str, name: str, text: str) -> PromptSource:
    src = existing_source(prompts_dir, language, name)
    body = clean_prompt_text(text)
    _write_atomically(src.path.parent / f"{src.name}.txt", body.encode("utf-8"))
    return src


def detect_audio(data: bytes) -> str:
    """The file type from the content (never from the name or the browser's word)."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return ".wav"
    if data[:4] == b"fLaC":
        return ".flac"
    if data[:4] == b"OggS":
        return ".ogg"
    raise UploadRejected("not a WAV, FLAC or Ogg audio file")


def check_audio(data: bytes) -> float:
    """Decode the whole upload, a block at a time; return its duration in seconds or reject
    it. What the header claims is judged before anything is decoded (8 MB of compressed
    silence can claim hours at 192 kHz on 8 channels: gigabytes once decoded)."""
    too_long = UploadRejected(f"a prompt may last at most {MAX_STUDIO_SECONDS:.0f} s")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as f:
            rate, channels = f.samplerate, f.channels
            if not SOURCE_RATES[0] <= rate <= SOURCE_RATES[1] or not 1 <= channels <= 2:
                raise UploadRejected(
                    f"a prompt is mono or stereo at {SOURCE_RATES[0]}-{SOURCE_RATES[1]} Hz "
                    f"(this one: {channels} channels at {rate} Hz)")
            if f.frames > rate * MAX_STUDIO_SECONDS:
                raise too_long
            frames = 0
            for block in f.blocks(blocksize=rate, dtype="float32"):
                frames += len(block)
                if frames > rate * MAX_STUDIO_SECONDS:  # a header that understated it
                    raise too_long
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise UploadRejected(f"the audio cannot be decoded ({exc})") from None
    if frames == 0:
        raise UploadRejected("the recording holds no audio")
    return float(frames) / float(rate)


def save_studio(prompts_dir: Path, language: str, name: str, data: bytes) -> Path:
    """Store a studio recording for an existing prompt (it then wins over the text)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadRejected(f"the file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    src = existing_source(prompts_dir, language, name)
    suffix = detect_audio(data)
    check_audio(data)
    target = src.path.parent / f"{src.name}{suffix}"
    _write_atomically(target, data)
    for other in STUDIO_SUFFIXES:  # one studio recording per prompt
        if other != suffix:
            (src.path.parent / f"{src.name}{other}").unlink(missing_ok=True)
    return target


def remove_studio(prompts_dir: Path, language: str, name: str) -> None:
    """Go back to the text prompt (refused if there is no text to go back to)."""
    src = existing_source(prompts_dir, language, name)
    if not (src.path.parent / f"{src.name}.txt").is_file():
        raise FormInvalid("prompt", "there is no text version to go back to")
    for suffix in STUDIO_SUFFIXES:
        (src.path.parent / f"{src.name}{suffix}").unlink(missing_ok=True)


async def rebuild(prompts_dir: Path, cache_dir: Path) -> BuildReport:
    return await asyncio.to_thread(build_prompts, prompts_dir, cache_dir)


def read_routing(path: Path) -> str:
    return path.read_text(encoding="utf-8")


async def apply_routing(provider: RoutingProvider, text: str) -> str:
    """Check `text` exactly as `callrec config check` does, replace the file, reload the
    live routing; returns the new version. RoutingError lists every problem."""
    raw = text.replace("\r\n", "\n").encode("utf-8")
    if len(raw) > MAX_ROUTING_BYTES:
        raise RoutingError([f"{provider.path}: the file is over {MAX_ROUTING_BYTES} bytes"])
    routing = await asyncio.to_thread(
        parse_routing, raw, provider.path, prompts_dir=provider.prompts_dir
    )
    await asyncio.to_thread(_write_atomically, provider.path, raw)
    if not await asyncio.to_thread(provider.reload):
        raise RoutingError([f"{provider.path}: saved but not taken into use; see the log"])
    return routing.version


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o640
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
