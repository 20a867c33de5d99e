"""The access log's fast path (logs.access hands its handler a formatted line without a LogRecord) writes
exactly what the logging path writes, takes that path only when nothing else would see the record, and the
batched handler holds lines back no longer than it says."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import grpc
import pytest
from harness import wait_for
from pipelined_server import logs

FIELDS = {
    "method": "ClassifyText",
    "model": "tiny",
    "status": "OK",
    "latency_ms": 3.2,
    "peer": "ipv4:127.0.0.1:5000",
    "request_id": "abc",
    "principal": "",
}
TEXT = "method=ClassifyText model=tiny status=OK latency_ms=3.2 peer=ipv4:127.0.0.1:5000 request_id=abc"


@pytest.mark.parametrize("formatter", [logs.TextFormatter(), logs.JsonFormatter()], ids=["text", "json"])
@pytest.mark.parametrize("created", [1765000000.0, 1765000000.999, 1765001234.5678])
def test_direct_lines_equal_the_formatted_records(formatter: logging.Formatter, created: float) -> None:
    record = logs.ACCESS.makeRecord(
        logs.ACCESS.name, logging.INFO, __file__, 1, TEXT, (), None, extra={"access": FIELDS}
    )
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    direct = formatter.access_line(created, logging.INFO, TEXT, FIELDS)  # type: ignore[attr-defined]
    assert direct == formatter.format(record)
    if isinstance(formatter, logs.JsonFormatter):
        assert json.loads(direct)["request_id"] == "abc"


@pytest.fixture
def configured() -> Iterator[io.StringIO]:
    """`logs.setup` writing into a string; the root logger restored afterwards."""
    saved = logging.root.handlers[:], logging.root.level, logs.ACCESS.level
    stream = io.StringIO()
    logs.setup("info", "text")
    handler = logging.root.handlers[0]
    assert isinstance(handler, logs.BatchedStreamHandler)
    handler.setStream(stream)
    yield stream
    handler.close()
    logging.root.handlers[:] = saved[0]
    logging.root.setLevel(saved[1])
    logs.ACCESS.setLevel(saved[2])


def _alone() -> None:
    """Leaves `setup`'s handler alone on the root logger: pytest's log capture adds its own around each test
    body (it removes them afterwards whether or not they are still there)."""
    for other in [h for h in logging.root.handlers if not isinstance(h, logs.BatchedStreamHandler)]:
        logging.root.removeHandler(other)


def _access(request_id: str) -> None:
    logs.access(
        method="ClassifyText",
        code=grpc.StatusCode.OK,
        latency_s=0.0032,
        peer="ipv4:127.0.0.1:5000",
        request_id=request_id,
        model="tiny",
    )


def test_the_direct_path_is_taken_only_when_nothing_else_sees_the_record(
    configured: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[str] = []
    make = logs.ACCESS.makeRecord

    def spy(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(str(args[4]))
        return make(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(logs.ACCESS, "makeRecord", spy)
    _alone()
    _access("direct")
    assert made == []  # no LogRecord
    logging.root.handlers[0].flush()
    assert configured.getvalue().endswith(" INFO pipelined.access: " + TEXT.replace("abc", "direct") + "\n")
    seen: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = seen.append  # type: ignore[method-assign]
    logs.ACCESS.addHandler(listener)
    try:
        _access("observed")
    finally:
        logs.ACCESS.removeHandler(listener)
    assert [r.access["request_id"] for r in seen] == ["observed"]  # type: ignore[attr-defined]
    assert len(made) == 1
    logging.root.handlers[0].flush()
    assert "request_id=observed" in configured.getvalue()  # and the log still has it


def test_lines_are_held_at_most_a_flush_interval_and_warnings_not_at_all(configured: io.StringIO) -> None:
    _alone()
    handler = logging.root.handlers[0]
    assert isinstance(handler, logs.BatchedStreamHandler)
    logging.getLogger("pipelined.test").warning("at once")
    assert "at once" in configured.getvalue()
    _access("later")
    wait_for(lambda: "request_id=later" in configured.getvalue(), 10, "the held line")
    _access("at-close")
    handler.close()
    assert "request_id=at-close" in configured.getvalue()


def test_expected_library_warnings_are_dropped_and_others_kept() -> None:
    """Whisper's "no ending timestamp" warning, which every cut live-stream window triggers, is dropped once
    logging is set up; another warning of the same logger still reaches the log. The records are read by a
    handler on the logger itself: transformers' loggers do not propagate to the root (caplog's) unless some
    earlier code turned propagation on, which made a root-based check depend on the order of tests."""
    from transformers.utils import logging as hf_logging

    class Collect(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.WARNING)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    name = "transformers.models.whisper.tokenization_whisper"
    library = hf_logging.get_logger(name)
    collect = Collect()
    library.addHandler(collect)
    saved_level = library.level
    library.setLevel(logging.WARNING)
    try:
        logs.setup("info", "text")
        logs.setup("info", "text")  # a second set-up adds no second filter
        assert sum(isinstance(f, logs._ExpectedWarnings) for f in library.filters) == 1
        library.warning(
            "Whisper did not predict an ending timestamp, which can happen if audio is cut off in the "
            "middle of a word. Also make sure WhisperTimeStampLogitsProcessor was used during generation."
        )
        library.warning("some other warning")
        assert collect.messages == ["some other warning"]
    finally:
        library.removeHandler(collect)
        library.setLevel(saved_level)
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
