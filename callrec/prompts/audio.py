"""Turning any source audio into what Asterisk plays without transcoding.

Steps: read (soundfile: WAV, FLAC, OGG; any rate; mono or stereo) -> mix down to mono ->
trim leading and trailing silence -> band-limited resampling (polyphase FIR,
scipy.signal.resample_poly) to 8 kHz (Asterisk `wav`) and 16 kHz (`wav16`) -> level
normalisation -> 16-bit PCM.

Level target: the RMS of the speech (frames within 40 dB of the loudest frame) is brought to
-20 dBFS, unless that would push the sample peak above -1 dBFS, in which case the gain is
lowered so the peak is exactly -1 dBFS. Quantisation is plain rounding (no random dither), so
the same source always gives the same bytes.
"""

from __future__ import annotations

import io
import math
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf

Samples = npt.NDArray[np.float64]

TARGET_RMS_DBFS = -20.0
PEAK_CEILING_DBFS = -1.0
MAX_DURATION_S = 60.0
# What a source file may claim before it is read at all: resampling a rate of millions of Hz
# or reading hours of audio would take the machine's memory first.
SOURCE_RATES = (8000, 192000)
MAX_SOURCE_S = 600.0
OUTPUT_RATES = {"wav": 8000, "wav16": 16000}
_FRAME_S = 0.010
_SILENCE_BELOW_LOUDEST_DB = 40.0  # a frame this far under the loudest one counts as silence
_ABSOLUTE_SILENCE_DBFS = -60.0  # and anything under this is silence however quiet the rest is
_KEEP_PADDING_S = 0.050  # margin left around the speech so soft onsets are not clipped
# The loudest 10 ms of a recorded voice, once any DC offset is taken out, is far above this;
# an empty take (a muted microphone's hiss, an interface's offset) is under it, and brought
# up to the level target it would have been played as the notice: a caller hearing nothing
# and recorded all the same.
MIN_SPEECH_PEAK_DBFS = -45.0


class AudioError(Exception):
    """The audio cannot be used; the caller names the file."""


def read_audio(path: Path) -> tuple[Samples, int]:
    """Samples as float64 in [-1, 1], shape (frames,) or (frames, channels), and the rate."""
    try:
        info = sf.info(str(path))
        if not SOURCE_RATES[0] <= info.samplerate <= SOURCE_RATES[1]:
            raise AudioError(f"a sample rate of {info.samplerate} Hz (a prompt is recorded at "
                             f"{SOURCE_RATES[0]}-{SOURCE_RATES[1]} Hz)")
        if info.frames > info.samplerate * MAX_SOURCE_S:
            raise AudioError(f"the file lasts {info.frames / info.samplerate:.0f} s, over the "
                             f"{MAX_SOURCE_S:.0f} s a source may have")
        data, rate = sf.read(str(path), dtype="float64", always_2d=False)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioError(f"unreadable or corrupt audio ({exc})") from exc
    if data.size == 0:
        raise AudioError("no audio in the file")
    if not np.all(np.isfinite(data)):
        raise AudioError("audio holds invalid sample values")
    peak = float(np.max(np.abs(data)))
    if peak > 1.0:
        # a floating-point file beyond full scale (1e200 once made the level maths overflow
        # into a silent prompt): scaled into range; the level is set later anyway
        data = data / peak
    return data, int(rate)


def to_mono(data: Samples) -> Samples:
    """Average the channels (equal weight: a stereo studio mix stays balanced)."""
    if data.ndim == 1:
        return data
    return np.asarray(data.mean(axis=1), dtype=np.float64)


def trim_silence(samples: Samples, rate: int) -> Samples:
    """Cut silence at both ends, keeping a short margin; raise AudioError if all silent or
    too quiet to hold a voice (measured without the DC offset, which `convert` removes)."""
    frame = max(1, round(rate * _FRAME_S))
    count = len(samples) // frame
    if count == 0:
        raise AudioError("the audio is too short")
    frames = samples[: count * frame].reshape(count, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loudest = float(rms.max())
    if loudest <= 10 ** (_ABSOLUTE_SILENCE_DBFS / 20):
        raise AudioError("the audio is silent")
    if loudest < 10 ** (MIN_SPEECH_PEAK_DBFS / 20):
        raise AudioError(f"the audio is too quiet to be a recorded voice (its loudest moment "
                         f"is {20 * math.log10(loudest):.0f} dBFS; a voice reaches "
                         f"{MIN_SPEECH_PEAK_DBFS:.0f} dBFS or more): a muted microphone?")
    threshold = max(
        loudest * 10 ** (-_SILENCE_BELOW_LOUDEST_DB / 20), 10 ** (_ABSOLUTE_SILENCE_DBFS / 20)
    )
    active = np.nonzero(rms >= threshold)[0]
    pad = round(rate * _KEEP_PADDING_S)
    start = max(0, int(active[0]) * frame - pad)
    end = min(len(samples), (int(active[-1]) + 1) * frame + pad)
    return samples[start:end]


def resample(samples: Samples, src_rate: int, dst_rate: int) -> Samples:
    """Polyphase resampling with scipy's anti-aliasing FIR (Kaiser window)."""
    if src_rate == dst_rate:
        return samples
    # imported here: scipy.signal takes 0.6 s to import, which every start of the service
    # and every `callrec` command paid, though only a prompt build resamples
    from scipy.signal import resample_poly

    ratio = Fraction(dst_rate, src_rate)
    return np.asarray(resample_poly(samples, ratio.numerator, ratio.denominator), dtype=np.float64)


def speech_rms(samples: Samples, rate: int) -> float:
    """RMS over the frames within 40 dB of the loudest frame (pauses do not count)."""
    frame = max(1, round(rate * _FRAME_S))
    count = max(1, len(samples) // frame)
    frames = np.resize(samples, count * frame).reshape(count, frame)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    loud = rms >= rms.max() * 10 ** (-_SILENCE_BELOW_LOUDEST_DB / 20)
    return float(np.sqrt(np.mean(frames[loud] ** 2)))


def normalise(samples: Samples, rate: int) -> Samples:
    """Apply the documented level target (see the module docstring)."""
    rms = speech_rms(samples, rate)
    peak = float(np.max(np.abs(samples)))
    if rms <= 0 or peak <= 0:
        raise AudioError("the audio is silent")
    gain = min(10 ** (TARGET_RMS_DBFS / 20) / rms, 10 ** (PEAK_CEILING_DBFS / 20) / peak)
    if not math.isfinite(gain) or gain <= 0:
        raise AudioError("the audio's level cannot be set")
    return samples * gain


def to_pcm16(samples: Samples) -> bytes:
    clipped = np.clip(np.round(samples * 32767.0), -32768, 32767)
    return clipped.astype("<i2").tobytes()


def convert(data: Samples, rate: int) -> dict[str, bytes]:
    """Source samples -> 16-bit mono PCM per Asterisk format name (`wav`, `wav16`)."""
    mono = to_mono(data)
    # an audio interface's DC offset is no sound: it would pass for a level, and be raised
    # to the target as such
    mono = trim_silence(mono - float(np.mean(mono)), rate)
    duration = len(mono) / rate
    if duration > MAX_DURATION_S:
        raise AudioError(
            f"the prompt lasts {duration:.1f} s, over the {MAX_DURATION_S:.0f} s limit"
        )
    out: dict[str, bytes] = {}
    for fmt, target in OUTPUT_RATES.items():
        out[fmt] = to_pcm16(normalise(resample(mono, rate, target), target))
    return out


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """A canonical 44-byte-header 16-bit mono WAV (what Asterisk's format_wav reads)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return buffer.getvalue()


def duration_ms(pcm: bytes, rate: int) -> int:
    return math.floor(len(pcm) / 2 * 1000 / rate)
