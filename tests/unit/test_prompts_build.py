"""Building prompts from studio recordings (no speech synthesis here): versions, the index,
bad input keeping the previous version live, and the catalog picking up rebuilds."""

from __future__ import annotations

import json
import os
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from callrec.prompts.build import build_prompts
from callrec.prompts.catalog import PromptCatalog
from callrec.prompts.errors import PromptMissing
from callrec.prompts.index import read_index


def write_tone(path: Path, freq: float, seconds: float = 1.0, rate: int = 44100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(rate * seconds)) / rate
    sf.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), rate, subtype="PCM_16")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    prompts, cache = tmp_path / "prompts", tmp_path / "cache"
    write_tone(prompts / "fi" / "notice.wav", 440.0)
    return prompts, cache


def catalog(dirs: tuple[Path, Path]) -> PromptCatalog:
    return PromptCatalog(dirs[0], dirs[1], "http://callrec.example:8080/")


def test_build_writes_versioned_files_and_index(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    report = build_prompts(prompts, cache)
    assert report.ok
    [result] = report.results
    assert (result.name, result.language, result.status) == ("notice", "fi", "built")
    version = result.version
    assert version is not None and len(version) == 12
    for fmt, rate in (("wav", 8000), ("wav16", 16000)):
        with wave.open(str(cache / f"notice-fi-{version}.{fmt}")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (rate, 1, 2)
    index = json.loads((cache / "index.json").read_text(encoding="utf-8"))
    entry = index["prompts"]["notice/fi"]
    assert entry["version"] == version and entry["source"] == "studio"
    assert entry["source_path"] == "fi/notice.wav"
    assert 1000 <= entry["duration_ms"] <= 1150

    ref = catalog(dirs).resolve("notice", "fi")
    assert ref.version == version
    assert ref.media == f"sound:http://callrec.example:8080/prompts/notice-fi-{version}.wav"
    assert ref.duration_ms == entry["duration_ms"]


def test_unchanged_source_keeps_its_version(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    first = build_prompts(prompts, cache).results[0].version
    again = build_prompts(prompts, cache).results[0]
    forced = build_prompts(prompts, cache, force=True).results[0]
    assert (again.status, again.version) == ("unchanged", first)
    assert (forced.status, forced.version) == ("unchanged", first)
    # a copy of the same audio elsewhere gives the same version too
    other = build_prompts(prompts, cache.parent / "other-cache").results[0].version
    assert other == first


def test_new_audio_gives_a_new_version_and_the_catalog_follows(
    dirs: tuple[Path, Path],
) -> None:
    prompts, cache = dirs
    cat = catalog(dirs)
    old = build_prompts(prompts, cache).results[0].version
    assert cat.resolve("notice", "fi").version == old
    write_tone(prompts / "fi" / "notice.wav", 660.0)
    new = build_prompts(prompts, cache).results[0]
    assert new.status == "built" and new.version != old
    assert cat.resolve("notice", "fi").version == new.version  # same catalog object
    # the old version can still be served to a call that resolved it before the rebuild
    found = cat.file(f"notice-fi-{old}.wav")
    assert found is not None and found.path.is_file()


@pytest.mark.parametrize(
    ("make_bad", "message"),
    [
        (lambda p: p.write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage"), "unreadable or corrupt"),
        (lambda p: write_tone(p, 440.0, seconds=61.0, rate=8000), "over the 60 s limit"),
        (lambda p: sf.write(str(p), np.zeros(8000), 8000), "silent"),
    ],
    ids=["corrupt", "too-long", "silent"],
)
def test_bad_studio_file_keeps_previous_version(
    dirs: tuple[Path, Path], make_bad: object, message: str
) -> None:
    prompts, cache = dirs
    live = build_prompts(prompts, cache).results[0].version
    source = prompts / "fi" / "notice.wav"
    make_bad(source)  # type: ignore[operator]
    report = build_prompts(prompts, cache)
    [result] = report.results
    assert not report.ok
    assert result.status == "failed" and result.version == live
    assert result.error is not None
    assert result.error.startswith(f"{source}: ") and message in result.error
    assert read_index(cache).prompts["notice/fi"].version == live
    assert catalog(dirs).resolve("notice", "fi").version == live


def test_empty_text_is_an_error_naming_the_file(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    empty = prompts / "sv" / "notice.txt"
    empty.parent.mkdir()
    empty.write_text("  \n\n", encoding="utf-8")
    report = build_prompts(prompts, cache)
    failed = [r for r in report.results if r.status == "failed"]
    assert [(r.language, r.error) for r in failed] == [("sv", f"{empty}: the text is empty")]
    assert [r.status for r in report.results if r.language == "fi"] == ["built"]
    with pytest.raises(PromptMissing):
        catalog(dirs).resolve("notice", "sv")


def test_studio_recording_wins_over_text(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    # an empty text would fail if it were used
    (prompts / "fi" / "notice.txt").write_text("", encoding="utf-8")
    [result] = build_prompts(prompts, cache).results
    assert result.status == "built"
    assert read_index(cache).prompts["notice/fi"].source == "studio"


def test_two_studio_recordings_of_one_prompt_are_refused(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    write_tone(prompts / "fi" / "notice.flac", 440.0)
    report = build_prompts(prompts, cache)
    assert not report.ok
    assert any("several studio recordings for notice/fi" in p for p in report.problems)


def test_misnamed_files_are_reported(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    (prompts / "fi" / "Notice Final.wav").write_bytes(b"")
    (prompts / "fi" / "notes.mp3").write_bytes(b"")
    (prompts / "Finnish").mkdir()
    report = build_prompts(prompts, cache)
    assert len(report.problems) == 3
    assert [r.status for r in report.results] == ["built"]


def test_a_file_name_in_no_encoding_is_reported_in_a_message_that_can_be_sent(
    dirs: tuple[Path, Path],
) -> None:
    """Its raw name in a problem once made every view of the prompts page fail (a str
    with surrogates cannot be encoded for the response)."""
    prompts, cache = dirs
    (prompts / "fi" / os.fsdecode(b"caf\xe9.wav")).write_bytes(b"")
    report = build_prompts(prompts, cache)
    (problem,) = report.problems
    assert "caf\\udce9.wav" in problem
    problem.encode("utf-8")  # raises for a surrogate
    assert [r.status for r in report.results] == ["built"]


def test_a_language_folder_that_cannot_be_read_is_a_problem_of_its_own(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
) -> None:
    prompts, cache = dirs
    write_tone(prompts / "sv" / "notice.wav", 660.0)
    real = Path.iterdir

    def iterdir(path: Path) -> Any:
        if path == prompts / "sv":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    report = build_prompts(prompts, cache)
    assert list(report.problems) == [f"{prompts / 'sv'}: cannot read the folder: Permission denied"]
    assert [(r.name, r.language, r.status) for r in report.results] == [
        ("notice", "fi", "built")]


def test_missing_prompt_raises() -> None:
    cat = PromptCatalog(Path("/nonexistent"), Path("/nonexistent/cache"), "http://x")
    with pytest.raises(PromptMissing, match="no built prompt 'notice' for language 'fi'"):
        cat.resolve("notice", "fi")


def test_damaged_index_keeps_what_the_catalog_had(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    version = build_prompts(prompts, cache).results[0].version
    cat = catalog(dirs)
    assert cat.resolve("notice", "fi").version == version
    (cache / "index.json").write_text("{not json", encoding="utf-8")
    assert cat.resolve("notice", "fi").version == version


def test_removed_source_leaves_the_index(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    version = build_prompts(prompts, cache).results[0].version
    (prompts / "fi" / "notice.wav").unlink()
    build_prompts(prompts, cache)
    with pytest.raises(PromptMissing):
        catalog(dirs).resolve("notice", "fi")
    # the audio itself stays: calls rows name that version as proof of the notice
    assert (cache / f"notice-fi-{version}.wav").is_file()


def test_a_source_that_cannot_be_taken_keeps_its_live_version(dirs: tuple[Path, Path]) -> None:
    # Once taken for removed: the live notice left the index and every call of the service
    # went without it, unrecorded.
    prompts, cache = dirs
    version = build_prompts(prompts, cache).results[0].version
    write_tone(prompts / "fi" / "notice.flac", 660.0)  # a second studio file: refused
    report = build_prompts(prompts, cache)
    assert any("several studio recordings" in p for p in report.problems)
    assert catalog(dirs).resolve("notice", "fi").version == version


def test_a_wrong_prompts_directory_removes_nothing(dirs: tuple[Path, Path]) -> None:
    prompts, cache = dirs
    version = build_prompts(prompts, cache).results[0].version
    report = build_prompts(prompts.with_name("prompts-typo"), cache)  # or not mounted
    assert any("prompts directory does not exist" in p for p in report.problems)
    assert catalog(dirs).resolve("notice", "fi").version == version


def test_services_whose_notice_cannot_be_played_are_named(dirs: tuple[Path, Path]) -> None:
    # a routing edit can name a notice whose source exists but was never built: every call
    # of that service reached agents unrecorded, with nothing but a log line per call
    from callrec.calls.plan import services_without_notice
    from callrec.routing.loader import load_routing

    prompts, cache = dirs
    write_tone(prompts / "sv" / "notice.wav", 660.0)
    routing_file = prompts.parent / "routing.toml"
    routing_file.write_text(
        '[[agent]]\nid = "agent1"\nendpoint = "PJSIP/agent1"\nname = "Aino"\n\n'
        '[[service]]\nnumber = "0103808000"\nname = "Ajanvaraus"\nlanguage = "fi"\n'
        'agents = ["agent1"]\nclosed = "notice"\n\n'
        '[[service]]\nnumber = "0103808001"\nname = "Tidsbokning"\nlanguage = "sv"\n'
        'agents = ["agent1"]\nclosed = "notice"\n', encoding="utf-8")
    routing = load_routing(routing_file, prompts_dir=prompts)
    assert services_without_notice(routing, catalog(dirs)) == ["0103808000", "0103808001"]
    build_prompts(prompts, cache)
    assert services_without_notice(routing, catalog(dirs)) == []
