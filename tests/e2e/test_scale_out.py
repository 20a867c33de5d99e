"""Client-side load balancing and retries: three server processes behind one `ipv4:` target, a steady
stream of calls, one server SIGKILLed in the middle. No call fails, every server took traffic before the
kill, the two survivors took all of it after."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from harness import ServerProcess
from pipelined import Client
from tiny_text_models import build_tiny_bert

TASK = "text-classification"
SENDERS = 4
# Calls each survivor must serve after the kill before the senders stop (a survivor that got none of
# the traffic after the kill would leave this waiting until the test times out).
AFTER_KILL = 40


def served(server: ServerProcess) -> float:
    return server.metric("pipelined_requests_total", method="ClassifyText", code="OK")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    model = build_tiny_bert(tmp_path_factory.mktemp("tiny-sentiment"), "sequence")
    logs = tmp_path_factory.mktemp("logs")
    started = [ServerProcess(["--model", str(model), "--task", TASK], logs) for _ in range(3)]
    yield started
    for server in started:
        server.stop()


def test_round_robin_over_three_servers_survives_a_sigkill(servers: list[ServerProcess]) -> None:
    for server in servers:
        with Client(server.target, timeout=30) as probe:
            server.wait_serving(probe)
    target = "ipv4:" + ",".join(s.target for s in servers)
    client = Client(target, timeout=30)
    classify = client.pipeline(TASK)
    stop = threading.Event()
    done: list[int] = [0] * SENDERS
    errors: list[BaseException] = []

    # One sender's requests are larger than gRPC's default retry buffer (256 KiB), which would commit
    # them when sent and leave them without retries.
    large = ["x" * 60_000] * 5

    def send(i: int) -> None:
        while not stop.is_set():
            try:
                if i == 0:
                    assert len(classify(large)) == len(large)
                else:
                    assert classify("steady traffic")[0]["label"]
                done[i] += 1
            except BaseException as error:  # every failure counts, whatever it is
                errors.append(error)
                return

    def wait_until(condition: object, what: str) -> None:
        deadline = time.monotonic() + 180
        while not condition():  # type: ignore[operator]
            assert not errors, errors
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    senders = [threading.Thread(target=send, args=(i,)) for i in range(SENDERS)]
    for t in senders:
        t.start()
    try:
        # Before the kill: every server took some of the traffic (round-robin, not pick-first).
        wait_until(lambda: min(served(s) for s in servers) >= 5, "a server got no traffic")
        victim, survivors = servers[0], servers[1:]
        victim.process.kill()  # SIGKILL: no drain, connections reset mid-call
        victim.process.wait()
        at_kill = [served(s) for s in survivors]
        sent_at_kill = sum(done)
        # After: the survivors take everything, each its share.
        wait_until(
            lambda: all(served(s) - n >= AFTER_KILL for s, n in zip(survivors, at_kill, strict=True)),
            "a survivor did not take its share after the kill",
        )
    finally:
        stop.set()
        for t in senders:
            t.join(60)
        client.close()
    assert not errors, errors
    assert sum(done) - sent_at_kill >= 2 * AFTER_KILL - SENDERS
    served_after = sum(served(s) - n for s, n in zip(survivors, at_kill, strict=True))
    # Every call answered after the kill was served by a survivor (calls in flight on the victim at the
    # kill were retried there too, so the survivors may have served a few more than the client counted).
    assert served_after >= sum(done) - sent_at_kill - SENDERS


def test_the_service_config_retries_only_unary_calls() -> None:
    from pipelined._channel import MAX_MESSAGE_BYTES, channel_options, unary_methods

    # Requests up to the message limit stay retryable (gRPC's default buffer is 256 KiB).
    assert dict(channel_options())["grpc.per_rpc_retry_buffer_size"] >= MAX_MESSAGE_BYTES

    names = {(m["service"], m["method"]) for m in unary_methods()}
    assert ("pipelined.v1.TextService", "ClassifyText") in names
    assert ("pipelined.v1.SpeechService", "Recognize") in names
    assert ("pipelined.v1.SpeechService", "StreamingRecognize") not in names
    assert ("pipelined.v1.SpeechService", "StreamingRecognizeFile") not in names
