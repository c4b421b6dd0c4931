"""Disclosure clips (§8: only the minimum necessary recording time), cut sample-exactly."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from callrec.privacy.errors import Invalid, Unavailable

_OFFSET = re.compile(r"^(?:(\d{1,2}):)?(\d{1,3}):([0-5]\d)(?:\.(\d{1,3}))?$")


def parse_offset(text: str) -> int:
    """'MM:SS', 'MM:SS.mmm' or 'H:MM:SS[.mmm]' into milliseconds; raise Invalid otherwise."""
    match = _OFFSET.match(text.strip())
    if not match:
        raise Invalid(f"not a time offset (MM:SS[.mmm]): {text[:40]!r}")
    hours, minutes, seconds, fraction = match.groups()
    if hours is not None and int(minutes) > 59:
        raise Invalid(f"minutes must be below 60 when hours are given: {text[:40]!r}")
    millis = int((fraction or "").ljust(3, "0"))
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + millis


def format_offset(ms: int) -> str:
    minutes, rest = divmod(ms, 60_000)
    return f"{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


@dataclass(frozen=True)
class ClipRange:
    from_ms: int
    to_ms: int
    start_sample: int
    end_sample: int  # exclusive
    sample_rate: int

    @property
    def duration_ms(self) -> int:
        return self.to_ms - self.from_ms


def clip_range(from_ms: int, to_ms: int, sample_rate: int, frames: int) -> ClipRange:
    """Validate a range against a recording of `frames` samples; raise Invalid if it is
    reversed, empty, outside the recording or not on a sample boundary."""
    if from_ms < 0 or to_ms < 0:
        raise Invalid("offsets cannot be negative")
    if to_ms == from_ms:
        raise Invalid("the range is empty")
    if to_ms < from_ms:
        raise Invalid("the range is reversed (--to is before --from)")
    start, start_rest = divmod(from_ms * sample_rate, 1000)
    end, end_rest = divmod(to_ms * sample_rate, 1000)
    if start_rest or end_rest:
        raise Invalid(f"offsets must fall on a sample boundary at {sample_rate} Hz")
    if end > frames:
        length_ms = frames * 1000 // sample_rate
        raise Invalid(
            f"the range ends after the recording ({format_offset(to_ms)} > "
            f"{format_offset(length_ms)})"
        )
    return ClipRange(from_ms, to_ms, start, end, sample_rate)


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int
    channels: int


def probe(path: Path) -> AudioInfo:
    try:
        info = soundfile.info(str(path))
    except (OSError, RuntimeError) as exc:
        raise Unavailable(f"recording file unreadable: {path.name}") from exc
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def cut_clip(source: Path, dest: Path, rng: ClipRange) -> None:
    """Write samples [start, end) of source to dest as 16-bit PCM WAV, unchanged."""
    try:
        with soundfile.SoundFile(str(source)) as src:
            if src.samplerate != rng.sample_rate:
                raise Invalid("the recording's sample rate changed while cutting")
            src.seek(rng.start_sample)
            frames = src.read(rng.end_sample - rng.start_sample, dtype="int16", always_2d=True)
            channels = src.channels
    except (OSError, RuntimeError) as exc:
        raise Unavailable(f"recording file unreadable: {source.name}") from exc
    if frames.shape[0] != rng.end_sample - rng.start_sample:
        raise Unavailable("the recording file is shorter than its header says")
    data = frames[:, 0] if channels == 1 else frames
    soundfile.write(str(dest), np.ascontiguousarray(data), rng.sample_rate, subtype="PCM_16",
                    format="WAV")
