"""Where things live on the developer's machine."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ASTERISK_CONF = REPO / "asterisk-conf"
PROMPTS = REPO / "prompts"


def stack_dir() -> Path:
    return Path(os.environ.get("CALLREC_STACK_DIR", REPO / ".stack")).resolve()


def venv_python() -> Path:
    venv = REPO / ".venv" / "bin" / "python"
    return venv if venv.exists() else Path(os.environ.get("PYTHON", "python3"))
