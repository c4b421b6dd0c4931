"""Every text the console's templates show has its Finnish translation (Finnish is the
default language), and templates compile."""

from __future__ import annotations

import re

from callrec.web import i18n
from callrec.web.console import HERE, template_environment
from callrec.web.pages import PURPOSES

_CALL = re.compile(r"""\bt\(\s*(["'])(.+?)\1\s*\)""")


def _texts() -> set[str]:
    found: set[str] = set()
    for path in (HERE / "templates").glob("*.html"):
        found |= {m.group(2) for m in _CALL.finditer(path.read_text())}
    return found


def test_every_template_text_is_translated() -> None:
    texts = _texts() | set(PURPOSES) | {"admin", "reviewer", "privacy", "processor",
                                        "access", "erasure"}
    assert len(texts) > 100
    missing = sorted(t for t in texts if t not in i18n.FI)
    assert not missing, missing


def test_every_value_a_page_shows_is_translated() -> None:
    """End reasons, phases, case statuses, prompt sources and strategies were shown as the
    code's English words on the Finnish pages."""
    from callrec.routing.model import Strategy
    from callrec.web.access import END_REASONS

    shown = {*END_REASONS, "notice", "ringing", "connecting", "open", "answered", "erasing",
             "erased", "partially_refused", "refused", "text", "studio",
             *(s.value for s in Strategy)}
    missing = sorted(v for v in shown if v not in i18n.FI)
    assert not missing, missing


def test_templates_compile() -> None:
    env = template_environment()
    for path in (HERE / "templates").glob("*.html"):
        env.get_template(path.name)


def test_translate_falls_back_to_english() -> None:
    assert i18n.translate("Calls", "fi") == "Puhelut"
    assert i18n.translate("Calls", "en") == "Calls"
    assert i18n.translate("not a key", "fi") == "not a key"
