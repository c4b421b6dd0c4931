"""`callrec serve`: the long-running service (wired in create_service)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `serve` (not yet wired)."""
