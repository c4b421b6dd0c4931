"""Disclosure clips (§8): cut sample-exactly, registered, audited; bad ranges refused."""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from callrec.privacy.errors import Invalid, NotFound, Unavailable
from tests.dbfixtures import ScratchDatabase
from tests.integration.test_privacy_support import world, write_wav

pytestmark = pytest.mark.db


@pytest.mark.parametrize("start,end,from_ms,to_ms", [
    ("00:01.250", "00:03.007", 1250, 3007),
    ("00:00", "00:05", 0, 5000),  # the whole recording
    ("0:04.999", "0:05.000", 4999, 5000),  # one millisecond at the very end
])
async def test_clip_is_exact(
    db: ScratchDatabase, tmp_path: Path, start: str, end: str, from_ms: int, to_ms: int
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        await w.user("boss", "privacy")
        call = await w.call(seconds=5.0, freq=523.25)
        # a chirp, so that a clip taken one sample off would not match
        rel = next(iter(w.wav_files()))
        n = 40_000
        chirp = (np.sin(2 * np.pi * (200 + np.arange(n) / 20) * np.arange(n) / 8000) * 9000
                 ).astype(np.int16)
        sha = write_wav(w.root / rel, chirp)
        conn = await w.owner()
        try:
            await conn.execute("UPDATE recordings SET sha256 = $1 WHERE call_id = $2", sha, call)
        finally:
            await conn.close()

        out = tmp_path / "police.zip"
        d = await w.service.disclose(
            dpo, call_id=str(call), from_offset=start, to_offset=end,
            recipient="Helsinki police, case 5500/R/123/27",
            legal_basis="Criminal Investigation Act 4:1", approved_by="boss", out=out,
        )
        assert (d.from_ms, d.to_ms) == (from_ms, to_ms)
        assert (d.start_sample, d.end_sample) == (from_ms * 8, to_ms * 8)
        with zipfile.ZipFile(out) as z:
            assert set(z.namelist()) == {"clip.wav", "manifest.json"}
            clip_bytes = z.read("clip.wav")
            manifest = json.loads(z.read("manifest.json"))
        data, rate = soundfile.read(io.BytesIO(clip_bytes), dtype="int16")
        assert rate == 8000
        assert len(data) * 1000 // rate == to_ms - from_ms  # duration to the millisecond
        assert len(data) == (to_ms - from_ms) * 8
        assert np.array_equal(data, chirp[from_ms * 8:to_ms * 8])  # the original samples
        assert manifest["original"]["sha256"] == sha == manifest["original"]["archived_sha256"]
        assert manifest["clip"]["sha256"] == hashlib.sha256(clip_bytes).hexdigest() == \
            d.clip_sha256
        assert manifest["clip"]["from_ms"] == from_ms and manifest["clip"]["to_ms"] == to_ms
        assert manifest["approved_by"] == "boss" and manifest["recipient"].startswith("Helsinki")
        assert "caller_number" not in json.dumps(manifest)  # the minimum, not the whole call

        async with w.pool.acquire() as c:
            row = await c.fetchrow("SELECT * FROM disclosures WHERE id = $1", d.id)
        assert row["call_id"] == call and row["clip_sha256"] == d.clip_sha256
        assert row["original_sha256"] == sha and row["created_by"] == "dpo"
        entry = (await w.audit("disclose"))[-1]
        assert entry["target"] == f"call:{call}" and entry["reason"].startswith("Criminal")


async def test_bad_disclosures_are_refused_and_leave_nothing(
    db: ScratchDatabase, tmp_path: Path
) -> None:
    async with world(db, tmp_path) as w:
        dpo = await w.user("dpo", "privacy")
        await w.user("rita", "reviewer")  # an account, but not one that may approve
        call = await w.call(seconds=4.0)
        gone = await w.call(with_file=False)
        out = tmp_path / "x.zip"
        base = {"call_id": call, "from_offset": "00:01", "to_offset": "00:02",
                "recipient": "Police", "legal_basis": "investigation", "approved_by": "dpo",
                "out": out}
        cases: list[tuple[dict[str, object], type[Exception], str]] = [
            ({"to_offset": "00:04.001"}, Invalid, "after the recording"),
            ({"from_offset": "00:03", "to_offset": "00:02"}, Invalid, "reversed"),
            ({"to_offset": "00:01"}, Invalid, "empty"),
            ({"from_offset": "1:75"}, Invalid, "time offset"),
            ({"call_id": "not-a-uuid"}, Invalid, "call id"),
            ({"call_id": uuid.uuid4()}, NotFound, "no call"),
            ({"call_id": gone}, Unavailable, "missing on disk"),
            ({"approved_by": "rita"}, Invalid, "privacy role"),
            ({"recipient": ""}, Invalid, "recipient"),
            ({"out": tmp_path / "nodir" / "x.zip"}, Invalid, "does not exist"),
        ]
        for change, error, message in cases:
            with pytest.raises(error, match=message):
                await w.service.disclose(dpo, **{**base, **change})  # type: ignore[arg-type]
        assert sorted(os.listdir(tmp_path)) == ["archive"]  # no zip, no temp file
        async with w.pool.acquire() as c:
            assert await c.fetchval("SELECT count(*) FROM disclosures") == 0
        assert await w.audit("disclose") == []
        # an existing file is never overwritten
        out.write_bytes(b"keep me")
        with pytest.raises(Exception, match="overwrite"):
            await w.service.disclose(dpo, **base)  # type: ignore[arg-type]
        assert out.read_bytes() == b"keep me"
