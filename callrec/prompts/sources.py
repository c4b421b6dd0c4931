"""Where prompts come from: `prompts/<language>/<name>.txt` (text to speech) or a studio
recording `prompts/<language>/<name>.wav|.flac|.ogg`, which wins over the text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from callrec.prompts.errors import PromptSourceError

NAME_RE = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
LANGUAGE_RE = re.compile(r"[a-z]{2,3}")
STUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
TEXT_SUFFIX = ".txt"


@dataclass(frozen=True)
class PromptSource:
    name: str
    language: str
    path: Path
    kind: str  # "studio" or "text"

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.language)


def find_source(prompts_dir: Path, name: str, language: str) -> PromptSource | None:
    """The source of one prompt, or None; both arguments must be valid names."""
    if not NAME_RE.fullmatch(name) or not LANGUAGE_RE.fullmatch(language):
        return None
    folder = prompts_dir / language
    try:
        return _find(folder, name, language)
    except OSError as exc:  # a folder callrec may not read: say which, not a traceback
        raise PromptSourceError(
            f"{folder}: cannot look for prompt {name}/{language}: {exc.strerror or exc}"
        ) from exc


def _find(folder: Path, name: str, language: str) -> PromptSource | None:
    studio = [folder / f"{name}{suffix}" for suffix in STUDIO_SUFFIXES]
    present = [path for path in studio if path.is_file()]
    if len(present) > 1:
        names = ", ".join(str(path) for path in present)
        raise PromptSourceError(
            f"{present[0]}: several studio recordings for {name}/{language} ({names}); keep one"
        )
    if present:
        return PromptSource(name, language, present[0], "studio")
    text = folder / f"{name}{TEXT_SUFFIX}"
    if text.is_file():
        return PromptSource(name, language, text, "text")
    return None


def find_sources(prompts_dir: Path) -> tuple[list[PromptSource], list[PromptSourceError]]:
    """Every prompt source under `prompts_dir`, and the problems found while looking.

    Files whose names do not follow the layout are reported, not guessed at."""
    sources: list[PromptSource] = []
    problems: list[PromptSourceError] = []
    if not prompts_dir.is_dir():
        problems.append(PromptSourceError(f"{prompts_dir}: prompts directory does not exist"))
        return sources, problems
    for folder in sorted(prompts_dir.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        if not LANGUAGE_RE.fullmatch(folder.name):
            problems.append(PromptSourceError(
                f"{_shown(folder)}: not a language code (two or three letters a-z)"))
            continue
        names: set[str] = set()
        try:
            files = sorted(folder.iterdir())
        except OSError as exc:  # one language callrec may not read: say so, build the rest
            problems.append(PromptSourceError(
                f"{_shown(folder)}: cannot read the folder: {exc.strerror or exc}"))
            continue
        for file in files:
            if file.name.startswith("."):
                continue  # editor and VCS leftovers
            if file.suffix not in (*STUDIO_SUFFIXES, TEXT_SUFFIX) or not file.is_file():
                problems.append(PromptSourceError(
                    f"{_shown(file)}: not a prompt (.txt, .wav, .flac or .ogg)"))
            elif not NAME_RE.fullmatch(file.stem):
                problems.append(PromptSourceError(
                    f"{_shown(file)}: prompt names use a-z, 0-9 and _ only"))
            else:
                names.add(file.stem)
        for name in sorted(names):
            try:
                source = find_source(prompts_dir, name, folder.name)
            except PromptSourceError as exc:
                problems.append(exc)
            else:
                if source is not None:
                    sources.append(source)
    return sources, problems


def _shown(path: Path) -> str:
    """A path for a message: a name in no encoding (bytes that are not UTF-8) shown escaped,
    or the page that shows the message could not be sent at all."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")
