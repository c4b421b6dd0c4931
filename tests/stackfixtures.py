"""The real local stack for integration tests: Asterisk 22 + PostgreSQL + the callrec
service, on free ports, built by the same devstack code as `make up`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from devstack.paths import PROMPTS
from devstack.stack import Stack, StackConfig

# The clinic's notices are some 20 s of speech, and every test call waits for its notice to
# end: the test stacks speak one sentence instead (built, served, played and kept out of the
# recording the same way).
SHORT_NOTICES = {"fi": "Puhelut tallennetaan.", "sv": "Samtalen spelas in.",
                 "en": "Calls are recorded."}


def _seed_prompts(stack: Stack) -> None:
    """The repository's prompts with short notices (the stack seeds only a missing folder)."""
    shutil.copytree(PROMPTS, stack.prompts_dir)
    for language, text in SHORT_NOTICES.items():
        notice = stack.prompts_dir / language / "notice.txt"
        assert notice.exists(), notice
        notice.write_text(text + "\n", encoding="utf-8")


def start_stack(with_service: bool = True) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix="callrec-stack-"))
    directory.chmod(0o755)
    stack = Stack(StackConfig.ephemeral(directory))
    _seed_prompts(stack)
    try:
        stack.up(with_service=with_service, log=directory / "setup.log")
        yield stack
    finally:
        stack.destroy()
