"""Remote results equal the in-process pipeline's on the same tiny model, input and arguments."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from harness import ServerThread, concurrently, until_batched
from pipelined import Client
from tiny_models import tiny_audio

ASR = "automatic-speech-recognition"


def assert_same(remote: Any, local: Any) -> None:
    """Equal structure, text and keys; timestamps equal to the nanosecond the wire carries."""
    if isinstance(local, list):
        assert isinstance(remote, list) and len(remote) == len(local)
        for r, loc in zip(remote, local, strict=True):
            assert_same(r, loc)
        return
    assert remote.keys() == local.keys(), (remote, local)
    assert remote["text"] == local["text"]
    for r_chunk, l_chunk in zip(remote.get("chunks", []), local.get("chunks", []), strict=True):
        assert r_chunk.keys() == l_chunk.keys()
        assert r_chunk["text"] == l_chunk["text"]
        assert r_chunk.get("language") == l_chunk.get("language")
        for r_t, l_t in zip(r_chunk.get("timestamp", ()), l_chunk.get("timestamp", ()), strict=True):
            assert (r_t is None) == (l_t is None)
            if l_t is not None:
                assert r_t == pytest.approx(float(l_t), abs=1e-9)


@pytest.fixture(scope="module")
def client(asr_server: ServerThread) -> Client:
    return Client(asr_server.target, timeout=300)


WHISPER_CASES: list[dict[str, Any]] = [
    {},
    {"return_timestamps": True},
    {"return_timestamps": "word"},
    {"return_language": True},
    {"return_language": True, "return_timestamps": True},
    {"generate_kwargs": {"language": "fr", "task": "translate"}},
    {"generate_kwargs": {"language": "german"}, "return_timestamps": True},
    {"generate_kwargs": {"num_beams": 2, "max_new_tokens": 12}},
    {"num_beams": 2},
]


@pytest.mark.parametrize("kwargs", WHISPER_CASES, ids=lambda k: repr(k))
def test_whisper_single_input(client: Client, local_whisper: Any, kwargs: dict[str, Any]) -> None:
    audio = tiny_audio(4.0, seed=1)
    remote = client.pipeline(ASR, model="tiny-whisper")(audio, **kwargs)
    assert_same(remote, local_whisper(audio.copy(), **kwargs))


@pytest.mark.parametrize("kwargs", [{}, {"return_timestamps": "char"}, {"return_timestamps": "word"}])
def test_ctc_single_input(client: Client, local_ctc: Any, kwargs: dict[str, Any]) -> None:
    audio = tiny_audio(3.0, seed=2)
    remote = client.pipeline(ASR, model="tiny-ctc")(audio, **kwargs)
    assert_same(remote, local_ctc(audio.copy(), **kwargs))


def test_defaults_apply_and_call_arguments_override_them(client: Client, local_whisper: Any) -> None:
    audio = tiny_audio(2.5, seed=3)
    pipe = client.pipeline(ASR, model="tiny-whisper", return_timestamps=True)
    assert_same(pipe(audio), local_whisper(audio.copy(), return_timestamps=True))
    assert_same(pipe(audio, return_timestamps="word"), local_whisper(audio.copy(), return_timestamps="word"))
    assert "chunks" in pipe(audio)  # the override was for that call only


def test_list_and_generator_inputs_keep_order(client: Client, local_whisper: Any) -> None:
    clips = [tiny_audio(1.0 + i, seed=10 + i) for i in range(5)]
    local = [local_whisper(c.copy(), return_timestamps=True) for c in clips]
    pipe = client.pipeline(ASR, model="tiny-whisper", max_in_flight=3)
    assert_same(pipe(clips, return_timestamps=True), local)
    generated = pipe((c for c in clips), return_timestamps=True)
    assert not isinstance(generated, list)
    assert_same(list(generated), local)


def test_input_forms_give_the_same_result(client: Client, local_whisper: Any) -> None:
    audio = tiny_audio(3.0, seed=4)
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="FLOAT")
    pipe = client.pipeline(ASR, model="tiny-whisper")
    expected = local_whisper(audio.copy())
    assert_same(pipe(buffer.getvalue()), expected)
    assert_same(pipe({"raw": audio, "sampling_rate": 16000}), expected)
    assert_same(pipe({"array": audio, "sampling_rate": 16000}), expected)


def test_chunked_long_audio_with_batch_size(client: Client, local_whisper: Any, local_ctc: Any) -> None:
    audio = tiny_audio(42.0, seed=5)
    kwargs = {"chunk_length_s": 10, "batch_size": 2, "return_timestamps": True}
    assert_same(
        client.pipeline(ASR, model="tiny-whisper")(audio, **kwargs), local_whisper(audio.copy(), **kwargs)
    )
    ctc_kwargs = {"chunk_length_s": 10, "stride_length_s": 2, "batch_size": 3, "return_timestamps": "word"}
    assert_same(
        client.pipeline(ASR, model="tiny-ctc")(audio, **ctc_kwargs), local_ctc(audio.copy(), **ctc_kwargs)
    )


def test_long_form_sequential_decoding(client: Client, local_whisper: Any) -> None:
    audio = tiny_audio(45.0, seed=6)
    remote = client.pipeline(ASR, model="tiny-whisper")(audio, return_timestamps=True)
    assert_same(remote, local_whisper(audio.copy(), return_timestamps=True))


@pytest.mark.parametrize("model", ["tiny-whisper", "tiny-ctc"])
def test_batching_never_changes_a_result(
    asr_server: ServerThread, client: Client, local_whisper: Any, local_ctc: Any, model: str
) -> None:
    """Concurrent clips of mixed lengths are batched, yet each equals its unbatched in-process result."""
    local = local_whisper if model == "tiny-whisper" else local_ctc
    # Two lengths twice each: CTC batches only equal lengths, Whisper batches all short clips.
    clips = [tiny_audio(seconds, seed=20 + i) for i, seconds in enumerate([2.0, 3.5, 2.0, 3.5, 5.0, 2.0])]
    expected = [local(c.copy()) for c in clips]
    pipe = client.pipeline(ASR, model=model)
    until_batched(asr_server, model, lambda: assert_same(concurrently(pipe, clips), expected), len(clips))


def test_whisper_language_detection_is_never_batched(
    asr_server: ServerThread, client: Client, local_whisper: Any
) -> None:
    """Batched, language detection fails and the scheduler retries item by item, so equal outputs alone would not
    notice: every pipeline call must hold one clip."""
    clips = [tiny_audio(2.0 + i, seed=30 + i) for i in range(3)]
    expected = [local_whisper(c.copy(), return_language=True) for c in clips]
    pipe = client.pipeline(ASR, model="tiny-whisper", return_language=True)
    calls = asr_server.metric("pipelined_pipeline_calls_total", model="tiny-whisper")
    batches = asr_server.metric("pipelined_batch_size_count", model="tiny-whisper")
    assert_same(concurrently(pipe, clips), expected)
    assert asr_server.metric("pipelined_pipeline_calls_total", model="tiny-whisper") - calls == len(clips)
    assert asr_server.metric("pipelined_batch_size_count", model="tiny-whisper") - batches == len(clips)


def test_stream_file_segments_arrive_in_order(client: Client) -> None:
    audio = tiny_audio(70.0, seed=7)
    segments = list(client.pipeline(ASR, model="tiny-whisper").stream_file(audio))
    assert segments, "no segment for 70 s of audio"
    starts = [s["timestamp"][0] for s in segments]
    assert starts == sorted(starts)
    # Starts only: the babbling tiny model may end a segment before it starts or past the audio; the stream
    # reports what the unary call and the local pipeline report (test_stream_file_equals_unary_long_form).
    assert starts[0] >= 0
    processed = [s["audio_processed_s"] for s in segments]
    assert processed == sorted(processed) and processed[-1] <= 70.0 + 1e-6
    assert all(s["audio_duration_s"] == pytest.approx(70.0) for s in segments)


@pytest.mark.parametrize("seconds", [4.0, 70.0])
def test_stream_file_words_equal_the_local_word_timestamps(
    client: Client, local_whisper: Any, seconds: float
) -> None:
    """Every word of the in-process word-level long-form output arrives, in order and with its timestamps,
    in exactly one segment (words between two segments were dropped, and those after the first 30 s came
    30 s early); the segments are those of a stream without words."""
    audio = tiny_audio(seconds, seed=int(seconds) + 100)
    pipe = client.pipeline(ASR, model="tiny-whisper")
    segments = list(pipe.stream_file(audio, return_timestamps="word"))
    local = local_whisper(audio.copy(), return_timestamps="word")
    assert len(local["chunks"]) > len(segments) > 1, "the check needs several segments of several words"
    words = [w for s in segments for w in s.get("words", [])]
    assert_same({"text": local["text"], "chunks": words}, local)
    plain = list(pipe.stream_file(audio))
    assert [(s["text"], s["timestamp"]) for s in segments] == [(s["text"], s["timestamp"]) for s in plain]


def test_stream_file_takes_only_shared_options(client: Client) -> None:
    """Chunking, batching and the language report belong to a whole-clip call (ClipRecognitionConfig): a
    pipeline's defaults of them are left out of long-audio streams, and asking for them there fails."""
    audio = tiny_audio(8.0, seed=12)
    plain = list(client.pipeline(ASR, model="tiny-whisper").stream_file(audio))
    chunked = client.pipeline(ASR, model="tiny-whisper", chunk_length_s=5, batch_size=2, return_language=True)
    assert list(chunked.stream_file(audio)) == plain
    for option in (
        {"chunk_length_s": 5},
        {"stride_length_s": 1},
        {"batch_size": 2},
        {"return_language": True},
    ):
        with pytest.raises(TypeError, match=f"{next(iter(option))} only apply to a whole-clip call"):
            list(chunked.stream_file(audio, **option))


def test_ctc_stream_file(client: Client, local_ctc: Any) -> None:
    """CTC has no timestamps to seek by: the file is cut in the quietest 100 ms of the last 5 s of each 30 s
    window, here the first frame of the second of silence at 27 s (cut in its middle, 27.05 s). Each
    segment is the local pipeline's output on its piece, words shifted by the piece's start."""
    audio = np.concatenate([tiny_audio(27.0, seed=9), np.zeros(16000, np.float32), tiny_audio(20.0, seed=10)])
    cut = int(27.05 * 16000)
    segments = list(client.pipeline(ASR, model="tiny-ctc").stream_file(audio, return_timestamps="word"))
    pieces = [(0, audio[:cut]), (cut, audio[cut:])]
    assert len(segments) == len(pieces)
    for segment, (start, piece) in zip(segments, pieces, strict=True):
        local = local_ctc(piece.copy(), return_timestamps="word")
        offset, end = start / 16000, (start + len(piece)) / 16000
        assert segment["text"] == local["text"] and len(local["chunks"]) > 1
        assert segment["timestamp"] == pytest.approx((offset, end), abs=1e-9)
        assert segment["audio_processed_s"] == pytest.approx(end)
        assert [w["text"] for w in segment["words"]] == [w["text"] for w in local["chunks"]]
        for word, expected in zip(segment["words"], local["chunks"], strict=True):
            assert word["timestamp"] == pytest.approx([offset + t for t in expected["timestamp"]], abs=1e-9)


def test_long_audio_without_timestamps_is_transcribed(client: Client, local_whisper: Any) -> None:
    """The local pipeline raises for > 30 s without timestamps; the service decodes long-form anyway."""
    audio = tiny_audio(40.0, seed=11)
    with pytest.raises(ValueError, match="3000 mel input features"):
        local_whisper(audio.copy())
    remote = client.pipeline(ASR, model="tiny-whisper")(audio)
    assert remote == {"text": local_whisper(audio.copy(), return_timestamps=True)["text"]}


def as_chunks(segments: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's segments in the unary result's shape (text joined, one chunk per segment)."""
    chunks = [{"text": s["text"], "timestamp": s["timestamp"]} for s in segments]
    return {"text": "".join(c["text"] for c in chunks), "chunks": chunks}


@pytest.mark.parametrize("seconds", [4.0, 70.0, 95.0])
def test_stream_file_equals_unary_long_form(client: Client, local_whisper: Any, seconds: float) -> None:
    """Text and segment timestamps of the stream equal the unary call's and the in-process pipeline's on the
    same long file (they differed at every 30 s seam when each window was decoded on its own)."""
    audio = tiny_audio(seconds, seed=int(seconds))
    pipe = client.pipeline(ASR, model="tiny-whisper")
    unary = pipe(audio, return_timestamps=True)
    assert_same(unary, local_whisper(audio.copy(), return_timestamps=True))
    assert_same(as_chunks(list(pipe.stream_file(audio))), unary)
