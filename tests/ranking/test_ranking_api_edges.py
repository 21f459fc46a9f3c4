"""Requests that used to get a 500 (or a 200 they should not) get a 4xx with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from freshrank.core.http import serve
from freshrank.embedded import free_port
from freshrank.ranking.service import create_ranking_app
from freshrank.ranking.settings import RankingSettings


@pytest_asyncio.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    settings = RankingSettings(
        name="edges",
        port=port,
        triton_url=f"127.0.0.1:{free_port()}",  # nothing listens: flagged fallbacks
        feature_url=f"http://127.0.0.1:{free_port()}",  # nothing listens either
        model_repository=str(tmp_path),
    )
    runner = await serve(await create_ranking_app(settings), "127.0.0.1", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _post(url: str, data: bytes) -> tuple[int, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v1/rank", data=data, headers={"Content-Type": "application/json"}
        ) as response,
    ):
        return response.status, await response.json()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"user_id": "\\ud800"}', "user_id must be valid Unicode (lone surrogate)"),
        (
            b'{"user_id": "u1", "candidates": ["i1", "\\udfff"]}',
            "candidates[1] must be valid Unicode",
        ),
        (b'{"user_id": "u\\u0000"}', "user_id contains a control character"),
        (b'{"user_id": "u1", "context": {"\\ud800": "x"}}', "context must be valid"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"user_id": "u1", "context": 0}', "context must be an object"),
        (b'{"user_id": "u1", "context": ""}', "context must be an object"),
        (b'{"user_id": "u1", "context": []}', "context must be an object"),
        (b'{"user_id": "u1", "k": 649.5}', "k must be an integer"),
        (b'{"user_id": "' + b"u" * 257 + b'"}', "user_id is 257 bytes, over the limit of 256"),
    ],
)
async def test_bad_request_is_a_400_with_the_reason(url: str, body: bytes, reason: str) -> None:
    status, reply = await _post(url, body)
    assert status == 400
    assert reason in reply["error"]


async def test_an_integral_float_k_is_the_integer_the_schema_says_it_is(url: str) -> None:
    status, reply = await _post(url, b'{"user_id": "u1", "k": 3.0, "context": null}')
    assert status == 200, reply


async def test_wrong_method_is_a_405_that_keeps_allow(url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.put(f"{url}/v1/rank", json={"user_id": "u1"}) as response,
    ):
        assert response.status == 405
        assert response.headers["Allow"] == "POST"
        assert "error" in await response.json()
