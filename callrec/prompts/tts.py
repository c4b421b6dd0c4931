"""Text to speech: pyttsx3 driving espeak-ng, one child process per rendering.

Why a child process: espeak-ng keeps synthesis state across utterances in one process (the
same text rendered twice in a row differs in a few samples), so only a fresh process gives
the same audio for the same text, which content-addressed versions need. It also keeps
libespeak-ng's process-wide state and pyttsx3's prints out of the service, and a stuck
synthesis can be killed with a timeout (pyttsx3's runAndWait never returns if nothing
reaches the end of an utterance).

pyttsx3 2.99's espeak driver initialises libespeak-ng in asynchronous retrieval mode: its
runAndWait returns as soon as synthesis starts, before the WAV is written (long texts were
lost), and its end-of-loop stop() cancels whatever libespeak-ng still has queued (settings
were lost now and again). The child therefore sets voice and rate on libespeak-ng itself and
lets them settle before the utterance, then waits for the driver's finished-utterance
notification, which comes after the file is written.
(Synchronous mode is no way out: the driver writes the file on MSG_TERMINATED, an event
libespeak-ng only sends in asynchronous mode.)

espeak-ng renders 16-bit mono at 22 050 Hz.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callrec.prompts.errors import PromptError

TTS_SAMPLE_RATE = 22050
DEFAULT_RATE = 150  # words per minute; espeak-ng's own default of 175 is fast on a phone line
_TIMEOUT = 120.0


class TtsError(PromptError):
    """Rendering failed (no voice for the language, synthesiser error)."""


@dataclass(frozen=True)
class TtsResult:
    voice: str  # the espeak-ng voice that spoke, e.g. "urj/fi"
    sample_rate: int


def synthesize(
    text: str, language: str, dest: Path, *, voice: str | None = None, rate: int = DEFAULT_RATE
) -> TtsResult:
    """Render `text` in `language` (or with the named espeak-ng `voice`) to a WAV at `dest`."""
    request = {"text": text, "language": language, "voice": voice, "rate": rate, "dest": str(dest)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "callrec.prompts.tts"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
            env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        )
    except subprocess.TimeoutExpired as exc:
        raise TtsError(f"text to speech did not finish in {_TIMEOUT:.0f} s") from exc
    try:
        reply = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        detail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise TtsError(f"text to speech failed: {detail[0]}") from None
    if not reply.get("ok"):
        raise TtsError(str(reply.get("error", "text to speech failed")))
    return TtsResult(voice=str(reply["voice"]), sample_rate=int(reply["sample_rate"]))


def pick_voice(voices: list[Any], language: str, wanted: str | None) -> str | None:
    """The id of the espeak-ng voice to use, or None if there is none for the language.

    `voices` are pyttsx3 Voice objects (id like "urj/fi", languages like ["fi"])."""
    ids = [str(v.id).lower() for v in voices if not str(v.id).startswith("mb/")]
    if wanted:
        wanted = wanted.lower()
        for voice_id in ids:
            if wanted in (voice_id, voice_id.rsplit("/", 1)[-1]):
                return voice_id
        return None
    for voice_id in ids:
        if voice_id.rsplit("/", 1)[-1] == language:
            return voice_id
    for v in voices:
        if language in [str(code).lower() for code in (v.languages or [])]:
            return str(v.id).lower()
    return None


def _render(request: dict[str, Any]) -> dict[str, Any]:
    # only in the child: these load libespeak-ng into the process
    import pyttsx3
    from pyttsx3.drivers import _espeak

    engine = pyttsx3.init("espeak")
    language = str(request["language"])
    voice = pick_voice(engine.getProperty("voices"), language, request.get("voice"))
    if voice is None:
        if request.get("voice"):
            return {"ok": False, "error": f"no espeak-ng voice named {request['voice']!r}"}
        return {"ok": False, "error": f"no text-to-speech voice for language {language!r}"}
    rate = int(request["rate"])
    dest = Path(request["dest"])

    # Voice and rate are set on libespeak-ng directly and allowed to settle before the
    # utterance. Through engine.setProperty they would only run inside runAndWait, in the
    # same step as pyttsx3's end-of-loop stop(), which cancels libespeak-ng's queue if it is
    # still busy: the rate change was then lost now and again (rendered at the driver's
    # default 200 wpm) and the next utterance was reported as stopped.
    if _espeak.SetVoiceByName(voice.encode()) != 0:
        return {"ok": False, "error": f"espeak-ng did not accept voice {voice!r}"}
    _espeak.SetParameter(_espeak.RATE, rate, 0)
    _espeak.Synchronize()
    if _current_rate(_espeak.dll) != rate:
        return {"ok": False, "error": f"espeak-ng did not accept rate {rate}"}

    finished = threading.Event()
    outcome: dict[str, Any] = {}

    def on_finished(name: str | None = None, completed: bool = False, **_: Any) -> None:
        outcome["completed"] = completed
        finished.set()

    def on_error(name: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
        outcome["error"] = exception
        finished.set()

    engine.connect("finished-utterance", on_finished)
    engine.connect("error", on_error)
    with contextlib.redirect_stdout(sys.stderr):  # the driver prints "Audio saved to ..."
        engine.save_to_file(str(request["text"]), str(dest))
        engine.runAndWait()
        # runAndWait returns once synthesis has *started*; the driver writes the file when
        # the utterance ends and then announces finished-utterance
        if not finished.wait(_TIMEOUT - 10):
            return {"ok": False, "error": "espeak-ng did not finish the utterance"}
    if outcome.get("error") is not None:
        return {"ok": False, "error": f"espeak-ng failed: {outcome['error']}"}
    if not outcome.get("completed"):
        return {"ok": False, "error": "espeak-ng stopped before the end of the text"}
    used = engine.getProperty("voice")
    if used != voice or _current_rate(_espeak.dll) != rate:
        return {"ok": False, "error": f"espeak-ng changed voice or rate while speaking ({used})"}
    if not dest.is_file() or dest.stat().st_size <= 44:
        return {"ok": False, "error": "espeak-ng produced no audio"}
    return {"ok": True, "voice": voice, "sample_rate": TTS_SAMPLE_RATE}


def _current_rate(dll: Any) -> int:
    """espeak_GetParameter(RATE, current=1); pyttsx3's binding omits the second argument."""
    import ctypes

    get = ctypes.CDLL(dll._name).espeak_GetParameter
    get.argtypes = [ctypes.c_int, ctypes.c_int]
    get.restype = ctypes.c_int
    return int(get(1, 1))  # espeakRATE = 1


def _main() -> int:
    try:
        reply = _render(json.loads(sys.stdin.read()))
    except Exception as exc:  # the parent needs a reason, whatever went wrong
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(reply))
    return 0 if reply["ok"] else 1


if __name__ == "__main__":
    sys.exit(_main())
