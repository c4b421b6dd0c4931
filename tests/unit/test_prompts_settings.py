"""prompts.toml: voice and rate per language and per prompt; errors name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callrec.prompts.build import build_prompts
from callrec.prompts.errors import PromptSourceError
from callrec.prompts.paths import PromptPaths
from callrec.prompts.speech_settings import Speech, load_speech_settings
from callrec.prompts.tts import DEFAULT_RATE

REPO = Path(__file__).resolve().parents[2]


def settings_file(tmp_path: Path, text: str) -> Path:
    (tmp_path / "prompts.toml").write_text(text, encoding="utf-8")
    return tmp_path


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_speech_settings(tmp_path).for_prompt("notice", "fi") == Speech(None, DEFAULT_RATE)


def test_levels_override_each_other(tmp_path: Path) -> None:
    settings = load_speech_settings(
        settings_file(
            tmp_path,
            '[tts]\nrate = 160\n[tts.fi]\nvoice = "fi"\nrate = 140\n'
            '[tts.fi.notice]\nrate = 120\n[tts.en]\nvoice = "en-us"\n',
        )
    )
    assert settings.for_prompt("notice", "fi") == Speech("fi", 120)
    assert settings.for_prompt("closed", "fi") == Speech("fi", 140)
    assert settings.for_prompt("closed", "en") == Speech("en-us", 160)
    assert settings.for_prompt("closed", "sv") == Speech(None, 160)


def test_shipped_settings_are_valid() -> None:
    settings = load_speech_settings(REPO / "prompts")
    assert settings.for_prompt("notice", "fi").voice == "fi"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[tts]\nrate = 20\n", "rate must be a whole number 80..450"),
        ("[tts]\nspeed = 150\n", "unknown key 'speed' in [tts]"),
        ("[voices]\n", "unknown key 'voices'"),
        ("[tts.Finnish]\nrate = 150\n", "[tts.Finnish]: not a language code"),
        ('[tts.fi]\nvoice = "fi; rm"\n', "voice must be an espeak-ng voice name"),
        ("[tts\n", "prompts.toml:1: "),
    ],
)
def test_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(PromptSourceError) as caught:
        load_speech_settings(settings_file(tmp_path, text))
    assert caught.value.message.startswith(str(tmp_path / "prompts.toml"))
    assert message in caught.value.message


def test_broken_settings_stop_text_prompts_but_not_studio_ones(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    (prompts / "fi").mkdir(parents=True)
    (prompts / "fi" / "notice.txt").write_text("Puhelu tallennetaan.", encoding="utf-8")
    t = np.arange(8000) / 8000
    sf.write(str(prompts / "fi" / "closed.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
    (prompts / "prompts.toml").write_text("[tts]\nrate = 1000\n", encoding="utf-8")
    report = build_prompts(prompts, tmp_path / "cache")
    assert not report.ok
    assert any("rate must be" in problem for problem in report.problems)
    status = {r.name: (r.status, r.error) for r in report.results}
    assert status["closed"] == ("built", None)
    assert status["notice"][0] == "failed"
    assert f"{prompts / 'prompts.toml'} is invalid" in str(status["notice"][1])


def test_prompt_paths_from_the_environment() -> None:
    assert PromptPaths.from_env({}) == PromptPaths(
        Path("prompts"), Path(".stack/state/prompt-cache"), "http://127.0.0.1:8080"
    )
    env = {"CALLREC_STATE_DIR": "/srv/state", "CALLREC_PUBLIC_URL": "http://10.0.0.5:8080/"}
    assert PromptPaths.from_env(env) == PromptPaths(
        Path("prompts"), Path("/srv/state/prompt-cache"), "http://10.0.0.5:8080"
    )
    env["CALLREC_PROMPT_CACHE_DIR"] = "/var/cache/prompts"
    assert PromptPaths.from_env(env).cache_dir == Path("/var/cache/prompts")
