"""`callrec prompts build` and `callrec prompts list`.

They need no database, only the directories (see callrec.prompts.paths).
"""

from __future__ import annotations

import argparse
import logging
import sys

from callrec.logs import configure_logging
from callrec.prompts.build import build_prompts, fingerprint
from callrec.prompts.errors import PromptError
from callrec.prompts.index import read_index
from callrec.prompts.paths import PromptPaths
from callrec.prompts.sources import find_sources
from callrec.prompts.speech_settings import load_speech_settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `prompts build` and `prompts list`."""
    prompts = sub.add_parser("prompts", help="recording notice and other announcements")
    prompts_sub = prompts.add_subparsers(
        dest="prompts_command", metavar="SUBCOMMAND", required=True
    )
    build = prompts_sub.add_parser(
        "build",
        help="render text prompts and convert studio recordings into versioned audio",
        description=(
            "Renders prompts/<language>/<name>.txt with espeak-ng, or converts a studio "
            "recording <name>.wav/.flac/.ogg (which wins over the text), into 16-bit mono "
            "8 kHz (wav) and 16 kHz (wav16), trimmed and normalised. Unchanged sources keep "
            "their version. A prompt that fails keeps its previous version live."
        ),
    )
    build.add_argument("--force", action="store_true", help="render every prompt again")
    build.set_defaults(func=_build)
    listing = prompts_sub.add_parser("list", help="show prompts, their live version and duration")
    listing.set_defaults(func=_list)


def _build(args: argparse.Namespace) -> int:
    configure_logging("console", level=logging.CRITICAL)  # the table below says it all
    paths = PromptPaths.from_env()
    report = build_prompts(paths.prompts_dir, paths.cache_dir, force=args.force)
    for problem in report.problems:
        print(f"problem   {problem}", file=sys.stderr)
    for result in report.results:
        if result.status == "failed":
            live = f"(version {result.version} stays live)" if result.version else "(none live)"
            print(f"FAILED    {result.name:<12} {result.language:<4} {live}", file=sys.stderr)
            print(f"          {result.error}", file=sys.stderr)
        else:
            print(f"{result.status:<9} {result.name:<12} {result.language:<4} {result.version}")
    print(f"cache: {paths.cache_dir}")
    return 0 if report.ok else 1


def _list(args: argparse.Namespace) -> int:
    paths = PromptPaths.from_env()
    index = read_index(paths.cache_dir)
    sources, source_problems = find_sources(paths.prompts_dir)
    problems = [problem.message for problem in source_problems]
    try:
        settings = load_speech_settings(paths.prompts_dir)
    except PromptError as exc:
        problems.append(exc.message)
        settings = None
    rows = [("NAME", "LANG", "SOURCE", "VERSION", "DURATION", "STATE")]
    seen: set[str] = set()
    for source in sources:
        key = f"{source.name}/{source.language}"
        seen.add(key)
        entry = index.prompts.get(key)
        relative = str(source.path.relative_to(paths.prompts_dir))
        if entry is None:
            rows.append((source.name, source.language, relative, "-", "-", "not built"))
            continue
        state = "live"
        if settings is not None and fingerprint(source, settings) != entry.fingerprint:
            state = "source changed: run build"
        rows.append(
            (
                source.name,
                source.language,
                relative,
                entry.version,
                f"{entry.duration_ms / 1000:.1f} s",
                state,
            )
        )
    for key, entry in sorted(index.prompts.items()):
        if key not in seen:
            rows.append(
                (
                    entry.name,
                    entry.language,
                    entry.source_path,
                    entry.version,
                    f"{entry.duration_ms / 1000:.1f} s",
                    "source gone",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0
