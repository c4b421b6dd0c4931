"""GET /prompts/{file}: the versioned prompt audio Asterisk fetches (no authentication:
prompts hold no personal data). A name never reaches the filesystem unless the index lists
it; a version's content never changes, so responses are cacheable forever."""

from __future__ import annotations

import asyncio

from aiohttp import web

from callrec.prompts.catalog import PromptCatalog

CATALOG_KEY: web.AppKey[PromptCatalog] = web.AppKey("prompt_catalog", PromptCatalog)
_CACHE_CONTROL = "public, max-age=31536000, immutable"


def add_routes(app: web.Application, catalog: PromptCatalog) -> None:
    """Serve the catalog's files under /prompts/."""
    app[CATALOG_KEY] = catalog
    app.router.add_get("/prompts/{file}", _serve_prompt)


async def _serve_prompt(request: web.Request) -> web.StreamResponse:
    catalog = request.app[CATALOG_KEY]
    found = catalog.file(request.match_info["file"])
    if found is None:
        raise web.HTTPNotFound(text="no such prompt\n")
    etag = f'"{found.path.name}"'
    headers = {"Cache-Control": _CACHE_CONTROL, "ETag": etag}
    if etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]:
        return web.Response(status=304, headers=headers)
    try:
        body = await asyncio.to_thread(found.path.read_bytes)
    except FileNotFoundError:
        raise web.HTTPNotFound(text="prompt file missing from the cache\n") from None
    return web.Response(body=body, content_type=found.content_type, headers=headers)
