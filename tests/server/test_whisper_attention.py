"""Whisper keeps the attention implementation it was loaded with after decodes that return word timestamps
(tasks/whisper_attention.py): transformers switches the model to eager attention for them and never back."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline
from pipelined_server.tasks import whisper_attention


def test_a_word_timestamp_decode_leaves_the_attention_as_loaded(tiny_whisper_dir: Path) -> None:
    spec = ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    pipe = load_pipeline(spec).pipeline
    loaded_with = pipe.model.config._attn_implementation
    assert loaded_with != "eager"  # else transformers' switch could not be seen
    audio = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    plain = pipe(audio)
    words = pipe(audio, return_timestamps="word")
    assert isinstance(words["chunks"], list)
    assert pipe.model.config._attn_implementation == loaded_with
    assert pipe(audio) == plain


def test_the_attention_comes_back_when_the_last_word_timestamp_decode_ends() -> None:
    """Replicas share the model: a decode that still needs eager attention keeps it while another ends."""
    config = SimpleNamespace(_attn_implementation="sdpa")
    inside = threading.Barrier(2, timeout=10)
    leave_first = threading.Event()
    seen: list[str] = []

    def generate(**kwargs: Any) -> str:
        if kwargs.get("return_token_timestamps"):
            config._attn_implementation = "eager"  # what transformers does
            if kwargs["name"] in ("a", "b"):
                inside.wait()
            if kwargs["name"] == "b":
                assert leave_first.wait(10)
                seen.append(config._attn_implementation)  # "a" has ended; "b" still runs eager
        return str(kwargs["name"])

    model = SimpleNamespace(generate=generate, model=SimpleNamespace(config=config))
    whisper_attention.install(model)
    whisper_attention.install(model)  # once per model: replicas share it
    second = threading.Thread(target=lambda: model.generate(name="b", return_token_timestamps=True))
    second.start()
    assert model.generate(name="a", return_token_timestamps=True) == "a"
    assert config._attn_implementation == "eager"
    leave_first.set()
    second.join(10)
    assert seen == ["eager"] and config._attn_implementation == "sdpa"
    assert model.generate(name="plain") == "plain" and config._attn_implementation == "sdpa"
