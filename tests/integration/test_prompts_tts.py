"""Prompt builds with the real synthesiser (pyttsx3 + espeak-ng) and the `callrec prompts`
commands, run as an admin would run them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from callrec.prompts.build import build_prompts
from callrec.prompts.catalog import PromptCatalog
from callrec.prompts.index import read_index

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    """A copy of the shipped prompts (fi, sv, en notice and closed), free to edit."""
    root = tmp_path / "prompts"
    shutil.copytree(REPO / "prompts", root)
    return root


def read_wav(path: Path) -> tuple[np.ndarray, int, int, int]:
    with wave.open(str(path)) as w:
        frames = w.readframes(w.getnframes())
        return (
            np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0,
            w.getframerate(),
            w.getnchannels(),
            w.getsampwidth(),
        )


def test_shipped_prompts_render_in_every_language(prompts: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    report = build_prompts(prompts, cache)
    assert report.ok, [r.error for r in report.results] + list(report.problems)
    keys = {(r.name, r.language) for r in report.results}
    assert keys == {(n, lang) for n in ("notice", "closed") for lang in ("fi", "sv", "en")}
    index = read_index(cache)
    voices = {entry.language: entry.voice for entry in index.prompts.values()}
    assert voices == {"fi": "urj/fi", "sv": "gmq/sv", "en": "gmw/en"}
    for entry in index.prompts.values():
        text = " ".join((prompts / entry.source_path).read_text(encoding="utf-8").split())
        for fmt, target in (("wav", 8000), ("wav16", 16000)):
            samples, rate, channels, width = read_wav(cache / entry.files[fmt])
            assert (rate, channels, width) == (target, 1, 2), entry.files[fmt]
            seconds = len(samples) / rate
            # speech at 145-150 words per minute: roughly 10-18 characters a second
            assert 8 <= len(text) / seconds <= 25, (entry.key, seconds, len(text))
            rms_db = 20 * np.log10(np.sqrt(np.mean(samples**2)))
            assert rms_db > -30, (entry.key, rms_db)  # speech, not silence
            assert np.max(np.abs(samples)) <= 10 ** (-1 / 20) + 1e-4  # the -1 dBFS ceiling
        # speech fills the prompt: most 100 ms windows hold sound
        samples, rate, *_ = read_wav(cache / entry.files["wav"])
        windows = samples[: len(samples) // 800 * 800].reshape(-1, 800)
        voiced = np.sqrt(np.mean(windows**2, axis=1)) > 10 ** (-45 / 20)
        assert voiced.mean() > 0.6, entry.key


def test_tts_versions_are_stable_across_rebuilds(prompts: Path, tmp_path: Path) -> None:
    first = build_prompts(prompts, tmp_path / "a")
    forced = build_prompts(prompts, tmp_path / "a", force=True)
    fresh = build_prompts(prompts, tmp_path / "b")
    versions = [
        {(r.name, r.language): r.version for r in rep.results} for rep in (first, forced, fresh)
    ]
    assert versions[0] == versions[1] == versions[2]
    assert all(r.status == "unchanged" for r in forced.results)


def test_changed_text_gets_a_new_version_and_the_catalog_follows(
    prompts: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build_prompts(prompts, cache)
    catalog = PromptCatalog(prompts, cache, "http://127.0.0.1:8080")
    before = catalog.resolve("notice", "fi")
    (prompts / "fi" / "notice.txt").write_text(
        "Tämä puhelu tallennetaan laadun varmistamiseksi.\n", encoding="utf-8"
    )
    result = {(r.name, r.language): r for r in build_prompts(prompts, cache).results}
    assert result[("notice", "fi")].status == "built"
    assert result[("notice", "sv")].status == "unchanged"
    after = catalog.resolve("notice", "fi")
    assert after.version != before.version
    assert after.duration_ms < before.duration_ms
    assert after.media.endswith(f"/prompts/notice-fi-{after.version}.wav")


def test_rate_setting_changes_the_speech(prompts: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    build_prompts(prompts, cache)
    normal = read_index(cache).prompts["closed/en"].duration_ms
    settings = prompts / "prompts.toml"
    settings.write_text(
        settings.read_text(encoding="utf-8") + "\n[tts.en.closed]\nrate = 100\n", encoding="utf-8"
    )
    [slow] = [r for r in build_prompts(prompts, cache).results if r.status == "built"]
    assert (slow.name, slow.language) == ("closed", "en")
    assert read_index(cache).prompts["closed/en"].duration_ms > normal * 1.3


def test_language_without_a_voice_is_an_error_naming_the_file(
    prompts: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    build_prompts(prompts, cache)
    source = prompts / "xx" / "notice.txt"
    source.parent.mkdir()
    source.write_text("Hello.\n", encoding="utf-8")
    report = build_prompts(prompts, cache)
    [failed] = [r for r in report.results if r.status == "failed"]
    assert failed.error == f"{source}: no text-to-speech voice for language 'xx'"
    assert failed.version is None
    assert sum(r.status == "unchanged" for r in report.results) == 6


def test_broken_prompt_after_a_good_build_keeps_the_old_version(
    prompts: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    live = {(r.name, r.language): r.version for r in build_prompts(prompts, cache).results}
    studio = prompts / "fi" / "notice.wav"
    studio.write_bytes(b"this is not audio")  # a studio file wins over the text
    report = build_prompts(prompts, cache)
    [failed] = [r for r in report.results if r.status == "failed"]
    assert failed.error is not None and failed.error.startswith(f"{studio}: unreadable")
    assert failed.version == live[("notice", "fi")]
    catalog = PromptCatalog(prompts, cache, "http://127.0.0.1:8080")
    assert catalog.resolve("notice", "fi").version == live[("notice", "fi")]


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callrec.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        check=False,
        timeout=120,
    )


def test_cli_build_and_list(prompts: Path, tmp_path: Path) -> None:
    env = {
        "CALLREC_PROMPTS_DIR": str(prompts),
        "CALLREC_PROMPT_CACHE_DIR": str(tmp_path / "cache"),
    }
    built = run_cli("prompts", "build", env=env)
    assert built.returncode == 0, built.stderr
    assert built.stdout.count("built ") == 6

    (prompts / "sv" / "closed.txt").write_text("", encoding="utf-8")
    broken = run_cli("prompts", "build", env=env)
    assert broken.returncode == 1
    assert f"{prompts / 'sv' / 'closed.txt'}: the text is empty" in broken.stderr
    assert "stays live" in broken.stderr

    listing = run_cli("prompts", "list", env=env)
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "LANG", "SOURCE", "VERSION", "DURATION", "STATE"]
    rows = {tuple(line.split()[:2]): line for line in lines[1:]}
    assert len(rows) == 6
    assert rows[("notice", "fi")].split()[2:4] == [
        "fi/notice.txt",
        read_index(tmp_path / "cache").prompts["notice/fi"].version,
    ]
    assert rows[("notice", "fi")].rstrip().endswith("live")
    assert "source changed: run build" in rows[("closed", "sv")]
