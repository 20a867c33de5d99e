"""Whisper's vocabulary projection in int8 with float32 rescoring (tasks/whisper_logits.py): the scores that
decide a step are float32, real decodes keep every token and timestamp, and only large CPU float32
projections are replaced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline, run_batch
from pipelined_server.sources.embedded import is_available, materialize
from pipelined_server.tasks import whisper_alignatt, whisper_context, whisper_logits
from transformers import WhisperForConditionalGeneration

RATE = 16000


def _projection(vocab: int, width: int, exact_from: int, seed: int) -> tuple[torch.nn.Linear, Any]:
    generator = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(width, vocab, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(vocab, width, generator=generator) * 0.05)
    return linear, whisper_logits.RescoredProjection(linear, exact_from)


@pytest.mark.parametrize("rows", [1, 5])
def test_the_candidates_and_timestamps_are_float32_and_the_best_token_is_the_same(rows: int) -> None:
    vocab, width, exact_from = 6000, 64, 5000
    linear, rescored = _projection(vocab, width, exact_from, seed=rows)
    assert rescored.weight is linear.weight  # the float32 weights are shared, not copied
    generator = torch.Generator().manual_seed(100 + rows)
    with torch.inference_mode():
        for _ in range(50):
            hidden = torch.randn(rows, 1, width, generator=generator)
            exact, got = linear(hidden), rescored(hidden)
            assert got.shape == exact.shape == (rows, 1, vocab)
            # The best text tokens and every timestamp row: float32 (up to summation order).
            best = exact[..., :exact_from].topk(whisper_logits.CANDIDATES // 2, dim=-1).indices
            torch.testing.assert_close(got.gather(-1, best), exact.gather(-1, best), rtol=0, atol=1e-5)
            torch.testing.assert_close(got[..., exact_from:], exact[..., exact_from:], rtol=0, atol=1e-5)
            assert torch.equal(got.argmax(-1), exact.argmax(-1))
            # The rest are int8 approximations, close but not equal.
            assert (got - exact).abs().max() < 0.05 * exact.abs().max()
            assert not torch.equal(got, exact)


def test_several_positions_are_float32_throughout() -> None:
    linear, rescored = _projection(6000, 64, 5000, seed=7)
    hidden = torch.randn(2, 4, 64)
    with torch.inference_mode():
        assert torch.equal(rescored(hidden), linear(hidden))


def test_only_large_float32_cpu_projections_are_replaced(tiny_whisper_dir: Path) -> None:
    model = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    original = model.proj_out
    assert not whisper_logits.install(model)  # a tiny vocabulary: nothing to gain
    assert model.proj_out is original
    half = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir, dtype=torch.bfloat16).eval()
    assert not whisper_logits.install(half, min_weight_bytes=0)
    assert whisper_logits.install(model, min_weight_bytes=0)
    assert whisper_logits.install(model)  # once: replicas share their model
    assert whisper_logits.installed(model) and model.proj_out.weight is original.weight
    # Float32 from end-of-text on: the special tokens (languages, tasks) and the timestamps.
    assert model.proj_out.exact_from == model.generation_config.eos_token_id
    assert model.proj_out.out_features == model.config.vocab_size


def test_generate_picks_the_same_tokens_on_a_tiny_whisper(tiny_whisper_dir: Path) -> None:
    """A random model's scores are nearly flat, and the tiny Whisper is multilingual: its language is
    detected from the language tokens' scores, which must be float32 too (they were not, and the languages
    differed)."""
    plain = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    patched = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    assert whisper_logits.install(patched, min_weight_bytes=0)
    features = torch.randn(3, plain.config.num_mel_bins, 3000, generator=torch.Generator().manual_seed(3))
    for kwargs in ({}, {"return_timestamps": True}):
        with torch.inference_mode():
            expected = plain.generate(features, max_new_tokens=20, **kwargs)
            got = patched.generate(features, max_new_tokens=20, **kwargs)
        assert torch.equal(got, expected), kwargs


@pytest.mark.skipif(
    not is_available("whisper-tiny.en"), reason="the whisper-tiny.en weights package is not installed"
)
def test_real_speech_decodes_keep_every_word_and_time() -> None:
    from paths import shared_file
    from pipelined_server.audio import decode_encoded

    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize("whisper-tiny.en")))
    )
    model = loaded.pipeline.model
    assert whisper_logits.installed(model)  # the default
    rescored = model.proj_out
    exact = torch.nn.Linear(rescored.in_features, rescored.out_features, bias=False)
    exact.weight = rescored.weight
    speech = np.concatenate(
        [decode_encoded(shared_file(f"audio/LJ001-000{i}.wav").read_bytes(), RATE) for i in (1, 2)]
    )
    windows = [speech[int(s * RATE) : int((s + n) * RATE)] for s, n in ((0, 2.0), (1.3, 3.5), (4.1, 5.0))]
    calls: list[tuple[Any, dict[str, Any]]] = [
        *((w, {"return_timestamps": "word", whisper_context.KWARG: 8.0}) for w in windows),
        *(
            (w, {"return_timestamps": "word", whisper_context.KWARG: 1.0, whisper_alignatt.KWARG: 0.5})
            for w in windows
        ),
        (speech, {"return_timestamps": True}),
    ]
    try:
        for audio, kwargs in calls:
            model.proj_out = exact
            expected = run_batch(loaded.pipeline, [audio], kwargs)[0]
            model.proj_out = rescored
            got = run_batch(loaded.pipeline, [audio], kwargs)[0]
            assert got == expected, kwargs
            assert len(got["text"].split()) > 3
    finally:
        model.proj_out = rescored


@pytest.mark.parametrize("on", [True, False])
def test_the_server_loads_it_unless_the_config_turns_it_off(
    tiny_whisper_dir: Path, monkeypatch: pytest.MonkeyPatch, on: bool
) -> None:
    monkeypatch.setattr(whisper_logits, "MIN_WEIGHT_BYTES", 0)  # the tiny model's vocabulary counts as large
    spec = ModelSpec(
        name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir), fast_vocab_projection=on
    )
    assert whisper_logits.installed(load_pipeline(spec).pipeline.model) is on
