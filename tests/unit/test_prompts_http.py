"""GET /prompts/{file}: serves built versions only, cacheable forever, no path from the URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from callrec.prompts.build import build_prompts
from callrec.prompts.catalog import PromptCatalog
from callrec.prompts.http import add_routes

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def built(tmp_path: Path) -> tuple[PromptCatalog, str]:
    prompts, cache = tmp_path / "prompts", tmp_path / "cache"
    (prompts / "fi").mkdir(parents=True)
    t = np.arange(8000) / 8000
    sf.write(str(prompts / "fi" / "notice.wav"), 0.3 * np.sin(2 * np.pi * 440 * t), 8000)
    version = build_prompts(prompts, cache).results[0].version
    assert version is not None
    # a file beside the cache that must never be reachable
    (tmp_path / "secret.txt").write_text("secret", encoding="utf-8")
    return PromptCatalog(prompts, cache, "http://127.0.0.1:8080"), version


@pytest.fixture
async def client(
    built: tuple[PromptCatalog, str],
) -> AsyncIterator[Client]:
    app = web.Application()
    add_routes(app, built[0])
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


async def test_serves_the_live_version(client: Client, built: tuple[PromptCatalog, str]) -> None:
    catalog, version = built
    ref = catalog.resolve("notice", "fi")
    path = ref.media.removeprefix("sound:http://127.0.0.1:8080")
    assert path == f"/prompts/notice-fi-{version}.wav"
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == "audio/wav"
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = response.headers["ETag"]
    body = await response.read()
    assert body == (catalog.cache_dir / f"notice-fi-{version}.wav").read_bytes()
    assert body[:4] == b"RIFF"

    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_wav16_is_served_for_asterisk_to_type_by_extension(
    client: Client, built: tuple[PromptCatalog, str]
) -> None:
    response = await client.get(f"/prompts/notice-fi-{built[1]}.wav16")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/octet-stream"


@pytest.mark.parametrize(
    "name",
    [
        "..%2Fsecret.txt",
        "..%2F..%2Fsecret.txt",
        "%2E%2E%2Fsecret.txt",
        "index.json",
        ".build.lock",
        "notice-fi-000000000000.wav",  # well-formed, never built
        "notice-fi-{v}.mp3",
        "NOTICE-fi-{v}.wav",
        "notice-fi-{v}.wav%00",
    ],
)
async def test_refuses_anything_else(
    client: Client,
    built: tuple[PromptCatalog, str],
    name: str,
) -> None:
    response = await client.get("/prompts/" + name.replace("{v}", built[1]))
    assert response.status == 404
    assert b"secret" not in await response.read()


async def test_dot_dot_path_does_not_escape(
    client: Client,
) -> None:
    response = await client.get("/prompts/../secret.txt")
    assert response.status == 404
    assert b"secret" not in await response.read()
