"""Reading request bodies whole, bounded, and with a 400 for anything malformed.

aiohttp's `StreamReader.read(n)` returns what has arrived so far, not n bytes: a body that
comes in several TCP segments would be cut short without a word (a studio recording saved
as its first 0.06 s, say)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from callrec.web.errors import WebError

#: What parsing a form can raise on a body the client got wrong: a multipart type without a
#: boundary (ValueError), bytes not in the declared charset (UnicodeDecodeError, a
#: ValueError), a charset Python does not know (LookupError).
_MALFORMED = (ValueError, LookupError)


async def read_body(request: web.Request, limit: int, too_large: WebError) -> bytes:
    """The whole body, or `too_large` once it passes `limit` bytes (told by Content-Length
    before anything is read, when the client sends one)."""
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form(request: web.Request) -> MultiDictProxy[Any]:
    """The urlencoded (or multipart) form of a page's POST."""
    try:
        return await request.post()
    except _MALFORMED:
        raise WebError("the form could not be read: wrong encoding or content type") from None


def require_multipart(request: web.Request) -> None:
    """aiohttp's multipart reader asserts its content type: tell the client instead."""
    if request.content_type != "multipart/form-data":
        raise WebError("the form must be sent as multipart/form-data")
