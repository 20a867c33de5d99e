"""Workers' published stream headroom (streaming/relay.py): what a worker that must refuse reads to pick a
sibling."""

from __future__ import annotations

from pathlib import Path

from pipelined_server.streaming import relay
from pipelined_server.streaming.relay import Siblings


def test_the_sibling_with_most_headroom_is_picked_never_itself(tmp_path: Path) -> None:
    workers = [Siblings(tmp_path, index, 4) for index in range(4)]
    assert workers[0].pick("m") is None  # nothing published yet
    workers[0].publish("m", 5)  # its own headroom is not a sibling's
    workers[1].publish("m", 1)
    workers[2].publish("m", 3)
    workers[3].publish("other", 9)
    assert workers[0].pick("m") == 2
    assert workers[2].pick("m") == 0
    workers[2].publish("m", 0)
    assert workers[0].pick("m") == 1
    assert workers[0].pick("unknown") is None


def test_ties_go_to_the_next_sibling_so_that_workers_spread_their_relays(tmp_path: Path) -> None:
    workers = [Siblings(tmp_path, index, 3) for index in range(3)]
    for worker in workers:
        worker.publish("m", 2)
    assert [worker.pick("m") for worker in workers] == [1, 2, 0]


def test_draining_dead_and_unreadable_siblings_are_skipped(tmp_path: Path) -> None:
    workers = [Siblings(tmp_path, index, 3) for index in range(3)]
    workers[1].publish("m", 4)
    workers[2].publish("m", 2)
    workers[1].withdraw()  # draining
    assert workers[0].pick("m") == 2
    relay.forget(str(tmp_path), 2)  # the supervisor saw it die
    assert workers[0].pick("m") is None
    (tmp_path / "worker-1.headroom.json").write_text("{not json")
    assert workers[0].pick("m") is None


def test_headroom_is_written_only_when_it_changes(tmp_path: Path) -> None:
    worker = Siblings(tmp_path, 0, 2)
    worker.publish("m", 1)
    path = tmp_path / "worker-0.headroom.json"
    written = path.stat().st_mtime_ns
    path.write_text('{"m": 7}')  # what a reader would see if publish rewrote an unchanged value
    worker.publish("m", 1)
    assert path.read_text() == '{"m": 7}'
    worker.publish("m", 2)
    assert path.read_text() == '{"m": 2}' and path.stat().st_mtime_ns >= written
    assert not list(tmp_path.glob("*.tmp")), "no temporary file left behind"


def test_a_relayed_calls_client_is_trusted_only_over_the_unix_socket() -> None:
    metadata = (("x-request-id", "abc"), (relay.RELAYED_FOR_KEY, "ipv4:10.0.0.7:5555"))
    assert (
        relay.forwarded_peer("unix:/tmp/pipelined-workers-x/worker-1.sock", metadata) == "ipv4:10.0.0.7:5555"
    )
    assert relay.forwarded_peer("ipv4:10.0.0.9:4444", metadata) is None
    assert relay.forwarded_peer("unix:/tmp/x.sock", (("x-request-id", "abc"),)) is None


def test_the_client_metadata_goes_along_but_not_a_relay_mark_of_its_own() -> None:
    sent = (
        ("authorization", "Bearer t"),
        ("x-request-id", "abc"),
        (relay.RELAYED_FOR_KEY, "ipv4:1.2.3.4:1"),  # a client posing as another address
        ("user-agent", "grpc-python/1.0"),
    )
    forwarded = relay.forwarded_metadata(sent, "ipv4:10.0.0.7:5555")
    assert forwarded == (
        ("authorization", "Bearer t"),
        ("x-request-id", "abc"),
        (relay.RELAYED_FOR_KEY, "ipv4:10.0.0.7:5555"),
    )
    assert relay.forwarded_peer("unix:/s.sock", forwarded) == "ipv4:10.0.0.7:5555"


def test_the_supervisors_variables_are_not_taken_for_config_keys() -> None:
    """Every worker's environment carries them: a warning per worker at every start would be noise."""
    from pipelined_server import workers
    from pipelined_server.config import _OTHER_ENV

    assert {relay.DIR_ENV, relay.COUNT_ENV, workers.WORKER_ENV} <= _OTHER_ENV
