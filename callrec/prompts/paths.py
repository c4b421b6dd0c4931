"""Where prompts live, for the commands (which run without the service's full settings).

CALLREC_PROMPTS_DIR (default `prompts`), CALLREC_PROMPT_CACHE_DIR (default `prompt-cache`
in callrec.settings' state directory) and CALLREC_PUBLIC_URL (default http://127.0.0.1:8080):
the same defaults as callrec.settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from callrec.settings import default_state_dir


@dataclass(frozen=True)
class PromptPaths:
    prompts_dir: Path
    cache_dir: Path
    public_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PromptPaths:
        env = os.environ if env is None else env
        default_cache = default_state_dir(env) / "prompt-cache"
        return cls(
            prompts_dir=Path(env.get("CALLREC_PROMPTS_DIR", "prompts")),
            cache_dir=Path(env.get("CALLREC_PROMPT_CACHE_DIR", str(default_cache))),
            public_url=env.get("CALLREC_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/"),
        )
