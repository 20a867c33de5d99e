"""wait_for_ready: a call made while the server starts or its model loads waits (bounded) instead of failing;
a per-call `timeout=` overrides the client's. A real server; its model's loading is held on an event."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pipelined.aio
import pytest
from harness import ServerThread
from pipelined import Client, DeadlineExceeded, Unavailable, _transport
from pipelined_server import registry
from pipelined_server.config import ModelSpec, ServerConfig
from text_fixtures import tiny_text_dirs

TASK = "text-classification"
# Calls meant to miss a 1 us deadline carry this much work: gRPC notices an expired deadline on its timer,
# which can lose the race to a call as short as one "hello" on a fast local server (CI saw it once).
SLOW = ["hello world " * 20] * 256


def _spec() -> ModelSpec:
    return ModelSpec(name="tiny-sentiment", task=TASK, source=str(tiny_text_dirs()["sequence"]))


@pytest.fixture()
def held_loading(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """The server's model loading blocks until the returned event is set."""
    release = threading.Event()
    load = registry.load_replicas

    def held(spec: ModelSpec) -> Any:
        release.wait(120)
        return load(spec)

    monkeypatch.setattr(registry, "load_replicas", held)
    yield release
    release.set()


@pytest.fixture()
def loading_server(held_loading: threading.Event) -> Iterator[ServerThread]:
    server = ServerThread(
        ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(_spec(),)), wait_loaded=False
    )
    yield server
    held_loading.set()
    server.stop()


def _probed(client: Any) -> threading.Event:
    """Set once the client has asked the server whether its model is still loading (it got UNAVAILABLE)."""
    asked = threading.Event()
    probe = client.readiness

    def recorded(model: str, task: str) -> Any:
        asked.set()
        return probe(model, task)

    client.readiness = recorded
    return asked


def test_call_waits_while_the_model_loads(
    loading_server: ServerThread, held_loading: threading.Event
) -> None:
    with (
        Client(loading_server.target, wait_for_ready=False) as eager,
        pytest.raises(Unavailable, match="loading"),
    ):
        eager.pipeline(TASK, model="tiny-sentiment")("hello")
    client = Client(loading_server.target, timeout=30, wait_for_ready=120)
    asked = _probed(client)
    results: list[Any] = []
    call = threading.Thread(
        target=lambda: results.append(client.pipeline(TASK, model="tiny-sentiment")("hello"))
    )
    call.start()
    assert asked.wait(60), "the call never met the loading model"
    held_loading.set()
    call.join(120)
    assert results and results[0][0]["label"]
    client.close()


def test_the_bound_passes_with_a_clear_error(loading_server: ServerThread) -> None:
    with Client(loading_server.target, wait_for_ready=0.3) as client, pytest.raises(Unavailable) as raised:
        client.pipeline(TASK, model="tiny-sentiment")(["a", "b"])
    message = str(raised.value)
    assert (
        "still loading" in message
        and "waited 0.3 s for the server to start and model 'tiny-sentiment' to load" in message
    )
    assert "wait_for_ready" in message


async def test_asyncio_call_waits_while_the_model_loads(
    loading_server: ServerThread, held_loading: threading.Event
) -> None:
    client = pipelined.aio.Client(loading_server.target, timeout=30, wait_for_ready=120)
    asked = threading.Event()
    probe = client.readiness

    async def recorded(model: str, task: str) -> Any:
        asked.set()
        return await probe(model, task)

    client.readiness = recorded  # type: ignore[method-assign]
    pipe = client.pipeline(TASK, model="tiny-sentiment")
    call = asyncio.ensure_future(pipe("hello"))
    assert await asyncio.to_thread(asked.wait, 60), "the call never met the loading model"
    held_loading.set()
    result = await asyncio.wait_for(call, 120)
    assert result[0]["label"]
    await client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_call_waits_for_a_server_that_is_starting() -> None:
    port = _free_port()
    client = Client(f"127.0.0.1:{port}", timeout=30, wait_for_ready=120)
    asked = _probed(client)
    results: list[Any] = []
    call = threading.Thread(
        target=lambda: results.append(client.pipeline(TASK, model="tiny-sentiment")("hi"))
    )
    call.start()
    assert asked.wait(60), "the call did not find the server down"
    server = ServerThread(ServerConfig(host="127.0.0.1", port=port, metrics_port=0, models=(_spec(),)))
    try:
        call.join(120)
        assert results and results[0][0]["label"]
    finally:
        client.close()
        server.stop()


def _once_served(probe: Any) -> Any:
    """The probe's answer once it finds the model served: after the refused call, the client's channel waits
    out its reconnect backoff, and a probe meanwhile still finds the server unreachable."""
    deadline = time.monotonic() + 60
    while (answer := probe()) is not _transport.Readiness.READY:
        assert time.monotonic() < deadline, answer
        time.sleep(0.05)
    return answer


def test_a_server_that_comes_up_between_the_call_and_the_probe_is_tried_again() -> None:
    """The race CI met: the call is refused, the server then starts and loads before the probe asks, so the
    probe finds the model served. The call is tried again rather than failing with the stale refusal."""
    port = _free_port()
    client = Client(f"127.0.0.1:{port}", timeout=30, wait_for_ready=120)
    probe = client.readiness
    servers: list[ServerThread] = []
    found: list[Any] = []

    def started_first(model: str, task: str) -> Any:
        if not servers:
            servers.append(
                ServerThread(ServerConfig(host="127.0.0.1", port=port, metrics_port=0, models=(_spec(),)))
            )
        found.append(_once_served(lambda: probe(model, task)))
        return found[-1]

    client.readiness = started_first  # type: ignore[method-assign]
    try:
        assert client.pipeline(TASK, model="tiny-sentiment")("hi")[0]["label"]
        assert [f.value for f in found] == ["ready"]
    finally:
        client.close()
        for server in servers:
            server.stop()


async def test_asyncio_call_tries_again_once_the_probe_finds_the_model_served() -> None:
    port = _free_port()
    client = pipelined.aio.Client(f"127.0.0.1:{port}", timeout=30, wait_for_ready=120)
    probe = client.readiness
    servers: list[ServerThread] = []

    async def started_first(model: str, task: str) -> Any:
        if not servers:
            config = ServerConfig(host="127.0.0.1", port=port, metrics_port=0, models=(_spec(),))
            servers.append(await asyncio.to_thread(ServerThread, config))
        deadline = time.monotonic() + 60
        while (answer := await probe(model, task)) is not _transport.Readiness.READY:
            assert time.monotonic() < deadline, answer
            await asyncio.sleep(0.05)
        return answer

    client.readiness = started_first  # type: ignore[method-assign]
    try:
        assert (await client.pipeline(TASK, model="tiny-sentiment")("hi"))[0]["label"]
    finally:
        await client.close()
        for server in servers:
            server.stop()


def test_a_model_served_but_unavailable_is_tried_once_more_not_waited_for() -> None:
    """READY after UNAVAILABLE earns one more try; the same answer again fails at once (no wait without end
    for a server that keeps refusing a model it reports served)."""
    tries: list[float] = []

    def refused() -> Any:
        tries.append(0.0)
        raise Unavailable("refused")

    waiting = _transport.Waiting(60, lambda: _transport.Readiness.READY, "the model")
    with pytest.raises(Unavailable, match="refused"):
        _transport.waiting_for(refused, waiting)
    assert len(tries) == 2


def test_per_call_timeout_overrides_the_clients() -> None:
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(_spec(),)))
    try:
        with Client(server.target, timeout=1e-6) as client:
            pipe = client.pipeline(TASK, model="tiny-sentiment")
            with pytest.raises(DeadlineExceeded):
                pipe(SLOW)
            assert pipe("hello", timeout=60)[0]["label"]
            assert list(pipe(iter(["a", "b"]), timeout=60))[1]["label"]
            own = client.pipeline(TASK, model="tiny-sentiment", timeout=60)
            assert own("hello")[0]["label"] and "timeout" not in own.defaults
            with pytest.raises(DeadlineExceeded):
                own(SLOW, timeout=1e-6)
    finally:
        server.stop()


async def test_asyncio_per_call_timeout() -> None:
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(_spec(),)))
    try:
        async with pipelined.aio.Client(server.target, timeout=1e-6) as client:
            pipe = client.pipeline(TASK, model="tiny-sentiment")
            with pytest.raises(DeadlineExceeded):
                await pipe(SLOW)
            assert (await pipe(["a", "b"], timeout=60))[1]["label"]
    finally:
        server.stop()
