"""A live stream to a multilingual Whisper that names no language detects it once (tasks/whisper_language.py)
and gives it to every later decode (streaming/options.py, StreamOptions.with_language)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipelined.v1 import audio_pb2, speech_pb2
from pipelined_server.config import InputLimits, ModelSpec, StreamingLimits
from pipelined_server.loading import load_pipeline
from pipelined_server.registry import ModelInstance
from pipelined_server.streaming.options import stream_options
from pipelined_server.tasks import whisper_language, whisper_prefix

RATE = 16000
AUDIO = audio_pb2.RawAudioFormat(
    encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=RATE, channel_count=1
)


def _instance(path: Path) -> ModelInstance:
    spec = ModelSpec(name="w", task="automatic-speech-recognition", source=str(path))
    return ModelInstance(spec, pipeline=load_pipeline(spec).pipeline)


@pytest.fixture(scope="module")
def multilingual(tiny_whisper_dir: Path) -> ModelInstance:
    return _instance(tiny_whisper_dir)


def test_detect_hears_what_the_pipeline_itself_detects(multilingual: ModelInstance) -> None:
    """The language is the one Whisper's generate detects for the same audio in the local pipeline."""
    pipe = multilingual.pipeline
    assert whisper_language.detects(pipe.model)
    for seed in range(3):
        clip = np.random.default_rng(seed).normal(0, 0.1, int(2.5 * RATE)).astype(np.float32)
        local = pipe(clip.copy(), return_timestamps=True, return_language=True)
        assert whisper_language.detect(pipe, clip) == local["chunks"][0]["language"]


def test_only_a_multilingual_whisper_without_a_language_detects(
    multilingual: ModelInstance, tmp_path: Path
) -> None:
    from tiny_models import build_tiny_whisper

    def options(instance: ModelInstance, streaming: StreamingLimits | None = None, **config: Any) -> Any:
        recognition = speech_pb2.RecognitionConfig(**config)
        request = speech_pb2.StreamingRecognitionConfig(audio_format=AUDIO, config=recognition)
        return stream_options(request, instance, InputLimits(), streaming or StreamingLimits())

    assert options(multilingual).detect_language
    assert not options(multilingual, language="de").detect_language
    assert not options(multilingual, StreamingLimits(detect_language_once=False)).detect_language
    english = _instance(build_tiny_whisper(tmp_path / "en", multilingual=False))
    assert not whisper_language.detects(english.pipeline.model)
    assert not options(english).detect_language
    assert not whisper_language.detects(None)


def test_the_language_found_reaches_every_decode_and_the_forced_prompt(multilingual: ModelInstance) -> None:
    request = speech_pb2.StreamingRecognitionConfig(
        audio_format=AUDIO, config=speech_pb2.RecognitionConfig(task=speech_pb2.SPEECH_TASK_TRANSLATE)
    )
    before = stream_options(request, multilingual, InputLimits(), StreamingLimits())
    after = before.with_language("de")
    assert after.language == "de" and not after.detect_language
    for kwargs in (after.kwargs, after.interim_kwargs):
        # The task asked for stays beside the language.
        assert kwargs["generate_kwargs"] == {"task": "translate", "language": "de"}
    assert "language" not in before.kwargs.get("generate_kwargs", {})
    # A multilingual decode can now be forced: its prompt no longer waits for a detected language.
    model = multilingual.pipeline.model
    assert whisper_prefix._prompt(model, before.kwargs.get("generate_kwargs", {})) is None
    prompt = whisper_prefix._prompt(model, after.kwargs["generate_kwargs"])
    config = model.generation_config
    assert prompt is not None and prompt[1] == config.lang_to_id["<|de|>"]
