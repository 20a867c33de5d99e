"""A Whisper stream decode's token cap (StreamOptions.capped): bounded by its window, in batching buckets."""

from __future__ import annotations

from typing import Any

from pipelined_server.streaming.options import StreamOptions
from stream_settings import plain_options


def _options(cap_tokens: bool = True) -> StreamOptions:
    return plain_options(kwargs={"generate_kwargs": {"num_beams": 1}}, cap_tokens=cap_tokens)


def _cap(duration_s: float, forced_words: int = 0) -> int:
    options = _options()
    kwargs = options.capped(options.kwargs, duration_s, forced_words)
    assert kwargs["generate_kwargs"]["num_beams"] == 1  # the stream's own arguments stay
    return int(kwargs["generate_kwargs"]["max_new_tokens"])


def test_the_cap_follows_the_window_in_5_s_steps() -> None:
    # Windows of similar length get the same cap, so concurrent streams' decodes keep sharing batches.
    assert _cap(0.6) == _cap(3.0) == _cap(5.0) == 16 + 16 * 5
    assert _cap(5.1) == _cap(10.0) == 16 + 16 * 10
    # Fast speech (8 words/s, about 11 tokens/s) fits with room to spare; a repetition loop stops early.
    assert _cap(4.2) >= 11 * 4.2 and _cap(4.2) < 448 / 4


def test_the_cap_leaves_whisper_room_for_its_prompt_and_the_forced_words() -> None:
    assert _cap(30.0) == 448 - 4
    assert _cap(30.0, forced_words=20) == 448 - 4 - 60
    assert _cap(5.0, forced_words=20) == 16 + 16 * 5
    assert _cap(1.0, forced_words=200) == 16  # never below the base


def test_models_without_the_cap_get_their_arguments_unchanged() -> None:
    options = _options(cap_tokens=False)
    assert options.capped(options.kwargs, 4.0) is options.kwargs


def test_a_stream_decode_stops_at_its_cap(tiny_whisper_dir: Any, monkeypatch: Any) -> None:
    """The cap reaches Whisper's generate through the stream's real arguments: a random tiny Whisper, which
    generates 10-30 tokens on any audio (tests/fixtures/tiny_models.py), stops at a cap made small for the test."""
    import numpy as np
    from pipelined.v1 import audio_pb2, speech_pb2
    from pipelined_server.config import InputLimits, ModelSpec, StreamingLimits
    from pipelined_server.loading import load_pipeline, run_batch
    from pipelined_server.registry import ModelInstance
    from pipelined_server.streaming import options as stream_module

    spec = ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    instance = ModelInstance(spec, pipeline=load_pipeline(spec).pipeline)
    audio = audio_pb2.RawAudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=16000, channel_count=1
    )
    config = speech_pb2.StreamingRecognitionConfig(audio_format=audio)
    options = stream_module.stream_options(config, instance, InputLimits(), StreamingLimits())
    assert options.cap_tokens
    window = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    model = instance.pipeline.model
    real_generate = model.generate
    lengths: list[int] = []

    def generate(*args: Any, **kwargs: Any) -> Any:
        out = real_generate(*args, **kwargs)
        sequences = out["sequences"] if isinstance(out, dict) else out
        lengths.append(int(sequences.shape[-1]))
        return out

    monkeypatch.setattr(model, "generate", generate)
    run_batch(instance.pipeline, [window], options.kwargs)
    monkeypatch.setattr(stream_module, "_TOKEN_CAP_BASE", 2)
    monkeypatch.setattr(stream_module, "_TOKENS_PER_S", 0)
    run_batch(instance.pipeline, [window], options.capped(options.kwargs, 1.0))  # cap: 2 + 0 x 5 = 2
    uncapped, capped = lengths
    # The sequences hold the decoder prompt (at most 4 tokens) before what was generated.
    assert capped <= 2 + 4 < uncapped, (capped, uncapped)
