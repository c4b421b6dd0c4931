"""HTTP Range requests (RFC 9110 §14) on an archive file, so the browser's player can seek.

Only single byte ranges are honoured; a header this server does not understand (several
ranges, another unit, bad syntax) is ignored and the whole file sent, as the RFC allows."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import web

from callrec.web.errors import RangeNotSatisfiable

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def _position(digits: str) -> int:
    """A byte position; one past any file's size if longer than 18 digits (Python's int()
    refuses over 4,300, and no file is that large)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _BEYOND_ANY_FILE


_BEYOND_ANY_FILE = 10**18


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range asked for, None for the whole file; RangeNotSatisfiable if it lies
    wholly past the end (or the file is empty)."""
    if not header:
        return None
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix: the last N bytes
        count = _position(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable()
        return ByteRange(max(0, size - count), size - 1)
    start = _position(first)
    end = _position(last) if last else size - 1
    if last and end < start:
        return None  # syntactically invalid: ignore
    if start >= size:
        raise RangeNotSatisfiable()
    return ByteRange(start, min(end, size - 1))


async def send_file(
    request: web.Request,
    path: Path,
    *,
    content_type: str,
    download_name: str | None = None,
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Send `path` (a path the server chose, never one from the request), honouring Range."""
    handle: BinaryIO = await asyncio.to_thread(path.open, "rb")
    try:
        size = (await asyncio.to_thread(path.stat)).st_size
        headers = {
            "Accept-Ranges": "bytes",
            "Content-Type": content_type,
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            **(extra_headers or {}),
        }
        if download_name is not None:
            headers["Content-Disposition"] = f'attachment; filename="{download_name}"'
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable:
            headers["Content-Range"] = f"bytes */{size}"
            return web.Response(status=416, headers=headers)
        if wanted is None:
            wanted, status = ByteRange(0, size - 1), 200
        else:
            status = 206
            headers["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = max(0, wanted.length)
        await response.prepare(request)
        if request.method == "HEAD" or size == 0:
            return response
        await asyncio.to_thread(handle.seek, wanted.start)
        remaining = wanted.length
        while remaining > 0:
            data = await asyncio.to_thread(handle.read, min(CHUNK, remaining))
            if not data:
                break  # the file shrank under us: send what there was
            await response.write(data)
            remaining -= len(data)
        await response.write_eof()
        return response
    finally:
        await asyncio.to_thread(handle.close)
