"""Where prompts live, for the commands (which run without the service's full settings).

CALLREC_PROMPTS_DIR (default `prompts`), CALLREC_PROMPT_CACHE_DIR (default
`<CALLREC_STATE_DIR>/prompt-cache`, else `.stack/state/prompt-cache`) and CALLREC_PUBLIC_URL
(default http://127.0.0.1:8080): the same defaults as callrec.settings where it has them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptPaths:
    prompts_dir: Path
    cache_dir: Path
    public_url: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PromptPaths:
        env = os.environ if env is None else env
        state = env.get("CALLREC_STATE_DIR")
        default_cache = Path(state) / "prompt-cache" if state else Path(".stack/state/prompt-cache")
        return cls(
            prompts_dir=Path(env.get("CALLREC_PROMPTS_DIR", "prompts")),
            cache_dir=Path(env.get("CALLREC_PROMPT_CACHE_DIR", str(default_cache))),
            public_url=env.get("CALLREC_PUBLIC_URL", "http://127.0.0.1:8080").rstrip("/"),
        )
