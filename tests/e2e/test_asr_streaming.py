"""Live streaming (SpeechService.StreamingRecognize) on tiny random models: protocol and semantics.

Voice activity detection needs real speech to open utterances, so the tests that decode replay a real
recording (tests/fixtures/speech_clips.py: one shipped in an installed package, so they run without
../shared/data); the bad-stream statuses need no speech.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from asr_specs import ASR, asr_specs
from harness import ServerThread
from pipelined import Client
from pipelined.aio import Client as AioClient
from pipelined.streaming import FileSource, StreamingResult
from pipelined.v1 import audio_pb2, speech_pb2, speech_pb2_grpc
from pipelined_server.config import ServerConfig, StreamingLimits
from speech_clips import speech, speech_wav

RATE = 16000
LINEAR16 = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE)


def pcm(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def config_request(**fields: Any) -> speech_pb2.StreamingRecognizeRequest:
    fields.setdefault("audio_format", LINEAR16)
    return speech_pb2.StreamingRecognizeRequest(
        streaming_config=speech_pb2.StreamingRecognitionConfig(**fields)
    )


def audio_requests(samples: np.ndarray, chunk_s: float = 0.1) -> list[speech_pb2.StreamingRecognizeRequest]:
    step = int(chunk_s * RATE)
    return [
        speech_pb2.StreamingRecognizeRequest(audio=pcm(samples[i : i + step]))
        for i in range(0, len(samples), step)
    ]


def seconds(d: Any) -> float:
    return d.seconds + d.nanos / 1e9


@pytest.fixture(scope="module")
def stub(asr_server: ServerThread) -> speech_pb2_grpc.SpeechServiceStub:
    return speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(asr_server.target))


def check_semantics(
    responses: list[speech_pb2.StreamingRecognizeResponse], duration_s: float, words: bool
) -> None:
    """Events alternate and pair up, finals follow each other in time within the audio, interims follow finals."""
    last_final_end = 0.0
    in_speech = False
    finals = 0
    for response in responses:
        for result in response.results:
            start, end = seconds(result.start_offset), seconds(result.end_offset)
            assert 0 <= start <= end <= duration_s + 1e-6, result
            assert start >= last_final_end - 1e-6, "results never reach back before the last final"
            assert result.text
            if words:
                assert result.words and all(start - 1e-6 <= seconds(w.start_offset) for w in result.words)
            if result.is_final:
                assert result.stability == 1.0
                last_final_end = end
                finals += 1
            else:
                assert 0 <= result.stability < 1
            finals_first = [r.is_final for r in response.results]
            assert finals_first == sorted(finals_first, reverse=True), "finals come before the interim"
        if response.speech_event == speech_pb2.SPEECH_EVENT_SPEECH_STARTED:
            assert not in_speech
            in_speech = True
        elif response.speech_event == speech_pb2.SPEECH_EVENT_SPEECH_ENDED:
            assert in_speech
            in_speech = False
        assert seconds(response.audio_processed) <= duration_s + 1e-6
    assert not in_speech, "every utterance ends, the last one at half-close"
    assert finals > 0


@pytest.mark.parametrize("model", ["tiny-whisper", "tiny-ctc"])
@pytest.mark.parametrize("words", [False, True], ids=["text", "words"])
def test_stream_ordering_offsets_and_ok_end(stub: Any, model: str, words: bool) -> None:
    audio = speech()
    timestamps = speech_pb2.TIMESTAMP_GRANULARITY_WORD if words else 0
    config = config_request(
        config=speech_pb2.RecognitionConfig(model=model, timestamps=timestamps),
        interim_results=True,
        voice_activity_events=True,
    )
    call = stub.StreamingRecognize(iter([config, *audio_requests(audio)]), timeout=300)
    responses = list(call)
    assert call.code() == grpc.StatusCode.OK
    assert all(r.model == model for r in responses)
    check_semantics(responses, len(audio) / RATE, words)
    assert any(not r.is_final for resp in responses for r in resp.results), "interim results were asked"


def test_half_close_mid_speech_flushes_a_final(stub: Any) -> None:
    audio = speech()[: int(1.5 * RATE)]  # ends in the middle of the first utterance
    config = config_request(voice_activity_events=True)
    responses = list(stub.StreamingRecognize(iter([config, *audio_requests(audio)]), timeout=300))
    last = responses[-1]
    assert last.speech_event == speech_pb2.SPEECH_EVENT_SPEECH_ENDED
    assert seconds(last.speech_event_offset) <= 1.5 + 1e-6
    finals = [r for resp in responses for r in resp.results if r.is_final]
    assert finals and seconds(finals[-1].end_offset) <= 1.5 + 1e-6
    assert not any(not r.is_final for resp in responses for r in resp.results), (
        "interim results were not asked"
    )


def test_admission_response_comes_first_and_only_when_asked(asr_server: ServerThread, stub: Any) -> None:
    """`admission_response`: an admitted stream's first response carries only the model; without it, a
    stream of silence gets no response at all (the SDK's asyncio client asks, and holds its audio back
    until then, so no write of its is in flight when a refusal ends a stream)."""
    silence = audio_requests(np.zeros(RATE, np.float32))
    asked = list(
        stub.StreamingRecognize(iter([config_request(admission_response=True), *silence]), timeout=60)
    )
    assert asked == [speech_pb2.StreamingRecognizeResponse(model="tiny-whisper")]
    assert list(stub.StreamingRecognize(iter([config_request(), *silence]), timeout=60)) == []
    with pytest.raises(grpc.RpcError) as refused:
        bad = config_request(
            admission_response=True, config=speech_pb2.RecognitionConfig(model="no-such-model")
        )
        list(stub.StreamingRecognize(iter([bad, *silence]), timeout=60))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND  # refused before any response


def test_silence_costs_no_decoding(asr_server: ServerThread, stub: Any) -> None:
    before = asr_server.metric("pipelined_pipeline_items_total", model="tiny-whisper")
    silence = np.zeros(3 * RATE, np.float32)
    responses = list(stub.StreamingRecognize(iter([config_request(), *audio_requests(silence)]), timeout=60))
    assert responses == []
    assert asr_server.metric("pipelined_pipeline_items_total", model="tiny-whisper") == before


# --------------------------------------------------------------------------------------- bad streams


@pytest.fixture(scope="module")
def strict_server(tiny_whisper_dir: Path, tiny_ctc_dir: Path) -> Iterator[ServerThread]:
    # Admission lifted: these tests hold several streams of a model whose calibrated cost (about half of
    # its one replica here) would refuse the second one before max_streams is reached.
    # An idle timeout short enough for the test that waits it out, long enough that streams held open
    # outlast the tests' bookkeeping on a loaded machine (a 1 s timeout could end them first).
    limits = StreamingLimits(
        idle_timeout_s=5.0, max_chunk_bytes=32000, max_streams=2, admission_max_utilization=100.0
    )
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        streaming=limits,
        models=asr_specs(tiny_whisper_dir, tiny_ctc_dir),
    )
    server = ServerThread(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def strict_stub(strict_server: ServerThread) -> speech_pb2_grpc.SpeechServiceStub:
    return speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(strict_server.target))


SILENCE = speech_pb2.StreamingRecognizeRequest(audio=b"\x00\x00" * 1600)
BAD_STREAMS = [
    ("audio before config", [SILENCE], grpc.StatusCode.INVALID_ARGUMENT, "first message"),
    (
        "second config",
        [config_request(), SILENCE, config_request()],
        grpc.StatusCode.FAILED_PRECONDITION,
        "already sent",
    ),
    (
        "unspecified encoding",
        [config_request(audio_format=audio_pb2.RawAudioFormat(sample_rate_hertz=RATE))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "AUDIO_ENCODING_UNSPECIFIED",
    ),
    (
        "unknown encoding",
        [config_request(audio_format=audio_pb2.RawAudioFormat(encoding=42))],
        grpc.StatusCode.INVALID_ARGUMENT,
        "42",
    ),
    (
        "no audio format",
        [speech_pb2.StreamingRecognizeRequest(streaming_config=speech_pb2.StreamingRecognitionConfig())],
        grpc.StatusCode.INVALID_ARGUMENT,
        "audio_format",
    ),
    (
        "chunk too large",
        [config_request(), speech_pb2.StreamingRecognizeRequest(audio=b"\x00\x00" * 16001)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "max_chunk_bytes",
    ),
    (
        "empty message",
        [config_request(), speech_pb2.StreamingRecognizeRequest()],
        grpc.StatusCode.INVALID_ARGUMENT,
        "neither",
    ),
    ("no messages", [], grpc.StatusCode.INVALID_ARGUMENT, "streaming_config"),
    (
        "odd byte count at the end",
        [config_request(), speech_pb2.StreamingRecognizeRequest(audio=b"\x00" * 3)],
        grpc.StatusCode.INVALID_ARGUMENT,
        "ended with",
    ),
    (
        "unknown model",
        [config_request(config=speech_pb2.RecognitionConfig(model="nope"))],
        grpc.StatusCode.NOT_FOUND,
        "nope",
    ),
    (
        "char timestamps",
        [
            config_request(
                config=speech_pb2.RecognitionConfig(timestamps=speech_pb2.TIMESTAMP_GRANULARITY_CHAR)
            )
        ],
        grpc.StatusCode.INVALID_ARGUMENT,
        "not CHAR",
    ),
]


@pytest.mark.parametrize(("name", "messages", "code", "needle"), BAD_STREAMS, ids=[b[0] for b in BAD_STREAMS])
def test_bad_stream_status_then_server_keeps_serving(
    strict_server: ServerThread,
    strict_stub: Any,
    name: str,
    messages: list[Any],
    code: grpc.StatusCode,
    needle: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(strict_stub.StreamingRecognize(iter(messages), timeout=60))
    assert caught.value.code() == code, caught.value.details()
    assert needle.lower() in caught.value.details().lower()
    ok = list(strict_stub.StreamingRecognize(iter([config_request(), SILENCE]), timeout=60))
    assert ok == []
    wait_until(lambda: strict_server.metric("pipelined_active_streams", model="tiny-whisper") == 0)


def test_idle_stream_ends_with_deadline_exceeded(strict_stub: Any) -> None:
    resume = threading.Event()

    def idle() -> Iterator[speech_pb2.StreamingRecognizeRequest]:
        yield config_request()
        yield SILENCE
        resume.wait(60)  # silent (beyond idle_timeout_s=5) until the server has ended the stream

    try:
        with pytest.raises(grpc.RpcError) as caught:
            list(strict_stub.StreamingRecognize(idle(), timeout=60))
        # The client stays silent for as long as its own deadline: only the server's idle timeout ends it.
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "idle_timeout_s" in caught.value.details()
    finally:
        resume.set()


def test_too_many_streams_is_resource_exhausted(strict_server: ServerThread, strict_stub: Any) -> None:
    gates = [threading.Event() for _ in range(2)]

    def held(gate: threading.Event) -> Iterator[speech_pb2.StreamingRecognizeRequest]:
        yield config_request()
        while not gate.is_set():
            yield SILENCE
            gate.wait(0.1)  # real time (0.1 s each), far above min_realtime_factor; ends when the gate opens

    calls = [strict_stub.StreamingRecognize(held(g), timeout=60) for g in gates]
    wait_until(lambda: strict_server.metric("pipelined_active_streams", model="tiny-whisper") == 2)
    with pytest.raises(grpc.RpcError) as caught:
        list(strict_stub.StreamingRecognize(iter([config_request(), SILENCE]), timeout=60))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams=2" in caught.value.details()
    for gate in gates:
        gate.set()
    for call in calls:
        assert list(call) == []
    wait_until(lambda: strict_server.metric("pipelined_active_streams", model="tiny-whisper") == 0)


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --------------------------------------------------------------------------------------- resources


def test_client_cancellation_frees_everything(asr_server: ServerThread, stub: Any) -> None:
    audio = speech()
    outgoing: queue.Queue[Any] = queue.Queue()

    def requests() -> Iterator[speech_pb2.StreamingRecognizeRequest]:
        yield config_request(interim_results=True, voice_activity_events=True)
        for request in audio_requests(audio):
            yield request
            time.sleep(0.02)
        outgoing.get()  # keep the stream open until cancelled

    call = stub.StreamingRecognize(requests(), timeout=120)
    first = next(call)  # speech started: the session holds a buffer and decodes
    assert first.speech_event == speech_pb2.SPEECH_EVENT_SPEECH_STARTED
    assert asr_server.metric("pipelined_active_streams", model="tiny-whisper") == 1
    call.cancel()
    outgoing.put(None)
    wait_until(lambda: asr_server.metric("pipelined_active_streams", model="tiny-whisper") == 0)
    wait_until(lambda: asr_server.metric("pipelined_queue_depth", model="tiny-whisper") == 0)
    assert asr_server.metric("pipelined_streams_ended_total", model="tiny-whisper", code="CANCELLED") >= 1
    # The scheduler keeps serving.
    assert Client(asr_server.target).pipeline(ASR)(np.zeros(RATE, np.float32))["text"] is not None


# --------------------------------------------------------------------------------------- SDK


def test_sdk_stream_yields_results_and_events(asr_server: ServerThread, tmp_path: Path) -> None:
    pipe = Client(asr_server.target, timeout=300).pipeline(ASR)
    source = FileSource(speech_wav(tmp_path), realtime=False)
    got = list(pipe.stream(source, return_timestamps="word"))
    assert all(isinstance(r, StreamingResult) for r in got)
    assert got[0].event == "speech_started" and got[-1].event == "speech_ended"
    finals = [r for r in got if r.is_final]
    assert finals and all(r.words for r in finals)
    assert all(r.end is not None and r.end <= source.duration_s + 1e-6 for r in finals)


def test_aio_stream(asr_server: ServerThread, tmp_path: Path) -> None:
    path = speech_wav(tmp_path)

    async def run() -> list[StreamingResult]:
        pipe = AioClient(asr_server.target).pipeline(ASR)
        return [r async for r in pipe.stream(FileSource(path, realtime=False), interim_results=False)]

    got = asyncio.run(run())
    assert got[0].event == "speech_started" and got[-1].event == "speech_ended"
    assert [r for r in got if r.is_final] and not [r for r in got if r.event is None and not r.is_final]


def test_drain_flushes_open_streams_and_ends_them_unavailable(tiny_whisper_dir: Path) -> None:
    """SIGTERM's drain does not wait out the grace for a live stream: the stream stops reading, sends its
    last finals for the speech so far, and ends UNAVAILABLE so the client reconnects elsewhere."""
    from pipelined_server.config import ModelSpec, ServerConfig

    spec = ModelSpec(
        name="w",
        task="automatic-speech-recognition",
        source=str(tiny_whisper_dir),
        pipeline_kwargs={"num_beams": 1},
    )
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
    audio = speech()[: int(3 * RATE)]
    outgoing: queue.Queue[Any] = queue.Queue()
    for request in [config_request(), *audio_requests(audio)]:
        outgoing.put(request)
    stub = speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(server.target))
    responses = stub.StreamingRecognize(iter(outgoing.get, None), timeout=120)  # never half-closes by itself
    received: list[Any] = []
    outcome: list[Any] = []

    def read() -> None:
        try:
            received.extend(responses)
            outcome.append(grpc.StatusCode.OK)
        except grpc.RpcError as error:
            outcome.append(error.code())

    reader = threading.Thread(target=read)
    # Batches before the stream's: the live-stream calibration at start-up runs some.
    before = server.metric("pipelined_batch_size_count", model="w")
    reader.start()
    wait_until(lambda: server.metric("pipelined_active_streams", model="w") == 1)
    # The session holds speech once a decode of it has started.
    wait_until(lambda: server.metric("pipelined_batch_size_count", model="w") > before)
    stopping = threading.Thread(target=server.stop, kwargs={"grace_s": 600})
    stopping.start()
    # The drain ends the stream now, not at the end of its grace (nor at the call's 120 s deadline).
    reader.join(60)
    outgoing.put(None)
    assert outcome == [grpc.StatusCode.UNAVAILABLE], "drain waited for the live stream instead of ending it"
    stopping.join(60)
    assert any(r.is_final for resp in received for r in resp.results), "the speech so far was not flushed"


# ------------------------------------------------------------------------------------ deadlines


def _silence_until(gate: threading.Event, limit_s: float | None = None) -> Iterator[np.ndarray]:
    """Live silence in 0.1 s chunks, paced at real time, until `gate` is set (or `limit_s` of audio)."""
    sent = 0.0
    while not gate.is_set() and (limit_s is None or sent < limit_s):
        yield np.zeros(RATE // 10, np.float32)
        sent += 0.1
        gate.wait(0.1)


STREAM_REQUESTS = {"model": "tiny-whisper", "task": ASR, "method": "StreamingRecognize"}


def test_a_live_stream_ends_at_its_deadline_s_and_only_then(asr_server: ServerThread) -> None:
    """`deadline_s=` bounds the whole stream: an endless one ends DEADLINE_EXCEEDED and the server frees
    it (counted as ended early, not OK); without it, the client's per-call timeout does not apply."""
    from pipelined import DeadlineExceeded

    pipe = Client(asr_server.target, timeout=0.5).pipeline(ASR)

    def counts() -> dict[str, float]:
        return {
            code: asr_server.metric("pipelined_streams_ended_total", model="tiny-whisper", code=code)
            + asr_server.metric("pipelined_requests_total", **STREAM_REQUESTS, code=code)
            for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED")
        }

    ended = counts()
    # 2 s of live audio against a 0.5 s client timeout: no deadline unless deadline_s is given.
    assert list(pipe.stream(_silence_until(threading.Event(), limit_s=2.0), sampling_rate=RATE)) == []
    gate = threading.Event()
    try:
        with pytest.raises(DeadlineExceeded):
            list(pipe.stream(_silence_until(gate), sampling_rate=RATE, deadline_s=1.0))
    finally:
        gate.set()
    wait_until(lambda: asr_server.metric("pipelined_active_streams", model="tiny-whisper") == 0)
    # The request is counted when its handler returns, which may be just after the stream is freed.
    wait_until(lambda: sum(counts().values()) - sum(ended.values()) >= 4)
    # Both the streams' and the requests' metric: one stream ended OK and one at its deadline. The server
    # names that DEADLINE_EXCEEDED when its own clock shows at most DEADLINE_SLACK_S left as the client's
    # timer cancels the call; a server that got the call late (a loaded machine) sees more left and says
    # CANCELLED (the boundary itself: tests/server/test_calls.py). Never OK: the stream did not end by itself.
    after = {code: count - ended[code] for code, count in counts().items()}
    assert after["OK"] == 2 and after["DEADLINE_EXCEEDED"] + after["CANCELLED"] == 2, after


def test_a_multilingual_stream_detects_its_language_once(
    stub: Any, tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tiny-whisper is multilingual and the stream names no language: the stream has Whisper detect it once,
    from at least DETECT_AFTER_S of audio, then gives it to every later decode and reports it on results."""
    from pipelined_server.batching import Scheduler
    from pipelined_server.streaming import session
    from pipelined_server.tasks import whisper_language

    detected: list[tuple[float, str]] = []
    submit_call = Scheduler.submit_call

    # Spied where it is queued: the detection itself runs in the model's process.
    async def spied_submit_call(self: Scheduler, call: Any, **kwargs: Any) -> Any:
        result = await submit_call(self, call, **kwargs)
        if isinstance(call, functools.partial) and call.func is whisper_language.detect:
            detected.append((len(call.keywords["samples"]) / RATE, result))
        return result

    decodes: list[tuple[int, str | None]] = []
    decode = session.decode_window

    async def spied_decode(
        instance: Any, samples: np.ndarray, kwargs: dict[str, Any], priority: int = 0
    ) -> Any:
        decodes.append((len(detected), kwargs.get("generate_kwargs", {}).get("language")))
        return await decode(instance, samples, kwargs, priority)

    monkeypatch.setattr(Scheduler, "submit_call", spied_submit_call)
    monkeypatch.setattr(session, "decode_window", spied_decode)
    audio = speech()
    config = config_request(config=speech_pb2.RecognitionConfig(model="tiny-whisper"), interim_results=True)
    responses = list(stub.StreamingRecognize(iter([config, *audio_requests(audio)]), timeout=300))
    assert len(detected) == 1, detected
    heard_s, language = detected[0]
    assert heard_s >= whisper_language.DETECT_AFTER_S
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    assert (
        f"<|{TO_LANGUAGE_CODE[language]}|>" in GenerationConfig.from_pretrained(tiny_whisper_dir).lang_to_id
    )
    assert [given for seen, given in decodes if seen] and all(
        given == language for seen, given in decodes if seen
    ), decodes
    assert all(given is None for seen, given in decodes if not seen)
    reported = [r.language for resp in responses for r in resp.results]
    assert reported[-1] == language and set(reported) <= {"", language}
