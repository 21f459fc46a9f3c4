"""Ranking's lean Triton HTTP client against a real tritonserver: the same answers as
tritonclient, Triton's errors with their message, readiness, and connections that stay usable
through a cancelled call and a Triton restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from model_versions import publish_small_model
from waiting import eventually

from freshrank.core.model_repo import (
    OUTPUT,
    ModelRepository,
    live_model_name,
    ranking_arrays,
    triton_inputs,
)
from freshrank.embedded import EmbeddedTriton
from freshrank.ranking.triton_http import TritonHttpClient, TritonHttpError, _read_chunked

pytestmark = pytest.mark.integration
MODEL = "http-ranker"
LIVE = live_model_name(MODEL)
HISTORY = np.array([4, 2, 0, 0], dtype=np.int64)
CANDIDATES = np.arange(1, 20, dtype=np.int64)


def _publish(model_repository: Path) -> None:
    publish_small_model(ModelRepository(model_repository, MODEL), seed=7)


def _loaded(triton: EmbeddedTriton, model_repository: Path) -> np.ndarray:  # type: ignore[type-arg]
    """Publishes version 1, loads the live model, and returns tritonclient's answer."""
    _publish(model_repository)
    reference = httpclient.InferenceServerClient(triton.http_url)
    reference.load_model(LIVE)
    inputs = triton_inputs(httpclient.InferInput, 3, HISTORY, CANDIDATES, 1)
    scores: np.ndarray = reference.infer(LIVE, inputs).as_numpy(OUTPUT)  # type: ignore[type-arg]
    return scores


async def _infer(client: TritonHttpClient, version: int = 1) -> np.ndarray:  # type: ignore[type-arg]
    arrays = ranking_arrays(3, HISTORY, CANDIDATES, version)
    return (await client.infer(LIVE, arrays, (OUTPUT,)))[OUTPUT]


def test_answers_like_tritonclient_and_reports_triton_errors(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    expected = _loaded(triton, model_repository)

    async def scenario() -> None:
        client = TritonHttpClient(triton.http_url)
        try:
            for _ in range(3):  # the pooled connection is reused between calls
                np.testing.assert_array_equal(await _infer(client), expected)
            assert len(client._idle) == 1
            assert await client.is_ready(LIVE)
            assert not await client.is_ready("no-such-model")
            with pytest.raises(TritonHttpError, match="not loaded in the live model") as refused:
                await _infer(client, version=99)
            assert refused.value.status >= 400
            with pytest.raises(TritonHttpError, match="unknown model") as unknown:
                await client.infer("no-such-model", ranking_arrays(3, HISTORY, CANDIDATES), ())
            assert unknown.value.status >= 400
            # An error answer leaves the connection usable.
            np.testing.assert_array_equal(await _infer(client), expected)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_cancelled_call_never_leaves_its_connection_in_the_pool(
    triton: EmbeddedTriton, model_repository: Path
) -> None:
    expected = _loaded(triton, model_repository)

    async def scenario() -> None:
        client = TritonHttpClient(triton.http_url)
        try:
            await _infer(client)  # one kept-alive connection in the pool
            call = asyncio.ensure_future(_infer(client))
            await asyncio.sleep(0)  # it took the pooled connection and wrote its request
            assert client._idle == []
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            await asyncio.sleep(0.2)  # the answer arrives on the socket meanwhile, unread
            assert client._idle == []  # its half-read answer would poison the next call
            np.testing.assert_array_equal(await _infer(client), expected)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_connection_triton_closed_while_idle_is_retried_on_a_fresh_one(
    tmp_path: Path, model_repository: Path
) -> None:
    """Triton restarted between two calls: the pooled connection is dead, the call is not."""
    _publish(model_repository)

    async def until_ready(url: str) -> None:
        async def ready() -> bool:
            probe = TritonHttpClient(url)  # its own connection: the pooled one stays idle
            try:
                return await probe.is_ready(LIVE)
            finally:
                await probe.close()

        await eventually(ready, timeout=120)

    async def scenario() -> None:
        with EmbeddedTriton(tmp_path / "first", model_repository, load_models=[LIVE]) as first:
            await until_ready(first.http_url)
            client = TritonHttpClient(first.http_url)
            before = await _infer(client)
        try:
            assert len(client._idle) == 1  # kept alive, now closed by the stopped server
            with EmbeddedTriton(
                tmp_path / "second", model_repository, load_models=[LIVE], http_port=first.http_port
            ) as second:
                await until_ready(second.http_url)
                np.testing.assert_array_equal(await _infer(client), before)
        finally:
            await client.close()

    asyncio.run(scenario())


def test_a_tls_url_is_refused_rather_than_spoken_to_in_plain_text() -> None:
    with pytest.raises(ValueError, match="TLS is not supported"):
        TritonHttpClient("https://triton.example:8000")


def test_chunked_answers_are_read_whole() -> None:
    async def scenario() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"4\r\nabcd\r\n3;ext=1\r\nefg\r\n0\r\n\r\nNEXT")
        body = await _read_chunked(reader)
        assert await reader.read(4) == b"NEXT"  # nothing of the next answer was consumed
        return body

    assert asyncio.run(scenario()) == b"abcdefg"
