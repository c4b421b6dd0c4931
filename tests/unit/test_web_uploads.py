"""A studio upload is judged by what its header claims before it is decoded, and decoded a
block at a time: a few megabytes of compressed silence can claim gigabytes of samples."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from callrec.web import config
from callrec.web.errors import UploadRejected


def _flac(seconds: float, rate: int = 8000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    frames = np.zeros((int(seconds * rate), channels), dtype=np.int16)
    frames[::rate] = 1000  # a click a second: not all silence
    soundfile.write(out, frames, rate, format="FLAC")
    return out.getvalue()


def test_a_prompt_of_the_right_length_is_measured() -> None:
    assert config.check_audio(_flac(5.0)) == pytest.approx(5.0)


@pytest.mark.parametrize(("data", "message"), [
    (_flac(1000.0), "at most 60 s"),  # ~100 kB of FLAC claiming 1,000 s
    (_flac(1.0, rate=192000, channels=8), "mono or stereo"),
    (_flac(1.0, rate=4000), "8000-192000 Hz"),
])
def test_what_the_header_claims_is_refused_before_decoding(
    data: bytes, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    real = soundfile.SoundFile.blocks

    def counting(self: soundfile.SoundFile, *args: object, **kwargs: object) -> object:
        decoded.append(1)
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(soundfile.SoundFile, "blocks", counting)
    with pytest.raises(UploadRejected, match=message):
        config.check_audio(data)
    assert decoded == [], "decoded before it was refused"
