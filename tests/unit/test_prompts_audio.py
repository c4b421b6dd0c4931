"""Audio conversion: mono mixdown, band-limited resampling, trimming, level, 16-bit PCM."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callrec.prompts import audio


def tone(freqs: list[float], rate: int, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return sum(amplitude * np.sin(2 * np.pi * f * t) for f in freqs)  # type: ignore[return-value]


def band_share(samples: np.ndarray, rate: int, freq: float) -> float:
    """Share of the signal's energy within +-20 Hz of `freq` (FFT of the whole signal)."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / rate)
    near = np.abs(bins - freq) <= 20
    return float(spectrum[near].sum() / spectrum.sum())


def pcm_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0


def test_stereo_44k1_tone_keeps_its_frequency(tmp_path: Path) -> None:
    rate = 44100
    silence = np.zeros(rate // 2)
    left = np.concatenate([silence, tone([1000.0], rate, 2.0), silence])
    right = np.concatenate([silence, tone([1000.0], rate, 2.0, amplitude=0.1), silence])
    path = tmp_path / "studio.wav"
    sf.write(str(path), np.stack([left, right], axis=1), rate, subtype="PCM_24")

    data, src_rate = audio.read_audio(path)
    assert data.shape[1] == 2 and src_rate == 44100
    out = audio.convert(data, src_rate)
    for fmt, target in audio.OUTPUT_RATES.items():
        samples = pcm_to_float(out[fmt])
        assert band_share(samples, target, 1000.0) > 0.99, fmt
        assert band_share(samples, target, 1500.0) < 0.001, fmt
        # leading and trailing silence gone, 50 ms margin kept on each side
        assert len(samples) / target == pytest.approx(2.1, abs=0.03), fmt


def test_resampling_is_band_limited() -> None:
    """A 5 kHz component cannot exist at 8 kHz; naive decimation would fold it to 3 kHz."""
    rate = 44100
    mixed = tone([1000.0, 5000.0], rate, 2.0, amplitude=0.3)
    samples = pcm_to_float(audio.convert(mixed, rate)["wav"])
    assert band_share(samples, 8000, 1000.0) > 0.99
    assert band_share(samples, 8000, 3000.0) < 0.001


def test_level_normalised_to_rms_target() -> None:
    quiet = tone([440.0], 16000, 1.0, amplitude=0.01)
    samples = pcm_to_float(audio.convert(quiet, 16000)["wav"])
    rms_db = 20 * np.log10(np.sqrt(np.mean(samples**2)))
    assert rms_db == pytest.approx(audio.TARGET_RMS_DBFS, abs=0.3)


def test_peak_ceiling_wins_for_spiky_audio() -> None:
    rate = 8000
    clicks = np.zeros(rate)
    clicks[::400] = 0.5  # high crest factor: RMS -20 dBFS would clip the peaks
    samples = pcm_to_float(audio.convert(clicks, rate)["wav"])
    peak_db = 20 * np.log10(np.max(np.abs(samples)))
    assert peak_db == pytest.approx(audio.PEAK_CEILING_DBFS, abs=0.1)


def test_silence_is_rejected() -> None:
    with pytest.raises(audio.AudioError, match="silent"):
        audio.convert(np.zeros(16000), 16000)


@pytest.mark.parametrize("take", [
    np.full(80000, 0.01),  # an audio interface's DC offset, nothing else
    np.random.default_rng(5).standard_normal(80000) * 10 ** (-55 / 20),  # a muted mic's hiss
    np.full(80000, 0.3) + np.random.default_rng(6).standard_normal(80000) * 1e-4,
])
def test_an_empty_take_is_not_turned_into_a_notice(take: np.ndarray) -> None:
    """Raised to the level target, each once became the notice: the caller heard nothing
    (or hiss) and was recorded all the same."""
    with pytest.raises(audio.AudioError, match=r"silent|too quiet"):
        audio.convert(take, 16000)


def test_a_quiet_voice_with_an_offset_is_kept() -> None:
    quiet = tone([440.0], 16000, 2.0, amplitude=0.02) + 0.05  # -37 dBFS on an offset
    out = audio.convert(quiet, 16000)
    samples = pcm_to_float(out["wav16"])
    assert abs(float(np.mean(samples))) < 1e-3, "the offset is gone"
    assert band_share(samples, 16000, 440.0) > 0.9


def test_over_sixty_seconds_is_rejected() -> None:
    with pytest.raises(audio.AudioError, match="over the 60 s limit"):
        audio.convert(tone([440.0], 8000, 61.0), 8000)


def test_corrupt_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(audio.AudioError, match="unreadable or corrupt"):
        audio.read_audio(path)


def test_flac_and_ogg_are_read(tmp_path: Path) -> None:
    signal = tone([700.0], 48000, 1.0)
    for name, fmt, subtype in (("a.flac", "FLAC", "PCM_16"), ("a.ogg", "OGG", "VORBIS")):
        path = tmp_path / name
        sf.write(str(path), signal, 48000, format=fmt, subtype=subtype)
        data, rate = audio.read_audio(path)
        samples = pcm_to_float(audio.convert(data, rate)["wav"])
        assert band_share(samples, 8000, 700.0) > 0.98, name


def test_wav_bytes_is_what_asterisk_reads() -> None:
    pcm = audio.to_pcm16(tone([440.0], 8000, 0.5))
    blob = audio.wav_bytes(pcm, 8000)
    assert len(blob) == 44 + len(pcm)  # canonical header, nothing else
    with wave.open(io.BytesIO(blob)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)


def test_conversion_is_deterministic() -> None:
    signal = tone([300.0, 900.0], 22050, 1.5)
    assert audio.convert(signal, 22050) == audio.convert(signal.copy(), 22050)


def test_float_audio_beyond_full_scale_is_scaled_not_silenced(tmp_path: Path) -> None:
    # Samples of 1e200 once overflowed the level maths: the prompt built "fine" and silent.
    path = tmp_path / "loud.wav"
    t = np.arange(8000) / 8000
    sf.write(str(path), 1e200 * np.sin(2 * np.pi * 440 * t), 8000, subtype="DOUBLE")
    data, rate = audio.read_audio(path)
    assert float(np.max(np.abs(data))) == pytest.approx(1.0)
    pcm = np.frombuffer(audio.convert(data, rate)["wav"], dtype="<i2")
    assert int(np.max(np.abs(pcm))) > 1000, "not silent"


@pytest.mark.parametrize("rate", [4000, 999_983])
def test_a_sample_rate_no_recording_has_is_refused_before_reading(
    tmp_path: Path, rate: int
) -> None:
    # 0.5 s claimed at ~1 MHz took 7.7 s and 1 GB to resample
    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(rate // 100), rate, subtype="PCM_16")
    with pytest.raises(audio.AudioError, match="sample rate"):
        audio.read_audio(path)
