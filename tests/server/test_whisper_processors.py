"""The suppress-token processors the server installs on its Whisper models (tasks/whisper_processors.py) give
scores bit-identical to transformers' own: on random scores, and through `generate` on a tiny Whisper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pipelined_server.tasks import whisper_processors
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.generation.logits_process import (
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bytes (NaN, -0.0 and -inf included)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))
    )


def random_scores(generator: torch.Generator, rows: int, vocab: int, dtype: torch.dtype) -> torch.Tensor:
    scores = torch.randn(rows, vocab, generator=generator) * 10
    special = torch.randint(0, vocab, (8,), generator=generator)
    scores[0, special[:2]] = float("nan")
    scores[-1, special[2:4]] = -float("inf")
    scores[0, special[4:6]] = -0.0
    return scores.to(dtype)


def scores_of(output: Any) -> list[torch.Tensor]:
    """Every step's processed scores of a generate call (with timestamps, per segment's result)."""
    if "scores" in output:
        return list(output["scores"])
    return [s for row in output["segments"] for segment in row for s in segment["result"]["scores"]]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 4])
def test_random_scores_are_bit_identical_at_every_step(dtype: torch.dtype, rows: int) -> None:
    generator = torch.Generator().manual_seed(rows)
    for trial in range(20):
        vocab = int(torch.randint(50, 60000, (1,), generator=generator))
        # Out-of-vocabulary and repeated ids too: `isin` over the vocabulary ignores the first.
        tokens = torch.randint(
            0, vocab + 100, (int(torch.randint(1, 120, (1,), generator=generator)),), generator=generator
        )
        tokens = tokens.tolist() + tokens[:3].tolist()
        begin = int(torch.randint(1, 5, (1,), generator=generator))
        originals = [
            SuppressTokensLogitsProcessor(tokens),
            SuppressTokensAtBeginLogitsProcessor(tokens, begin),
        ]
        cached = [SuppressTokensLogitsProcessor(tokens), SuppressTokensAtBeginLogitsProcessor(tokens, begin)]
        for processor in cached:
            processor.__class__ = whisper_processors._CACHED[type(processor)]
        for length in range(1, 8):  # one generate call: the begin step and the steps after it
            input_ids = torch.randint(0, vocab, (rows, length), generator=generator)
            scores = random_scores(generator, rows, vocab, dtype)
            for original, fast in zip(originals, cached, strict=True):
                expected, got = original(input_ids, scores.clone()), fast(input_ids, scores.clone())
                assert same_bits(got, expected), (trial, length, type(original).__name__)


def test_generate_keeps_every_score_and_token_and_uses_the_cached_processors(tiny_whisper_dir: Path) -> None:
    plain = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    patched = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir).eval()
    whisper_processors.install(patched)
    whisper_processors.install(patched)  # once: replicas share their model
    used: list[type] = []
    retrieve = patched._retrieve_logit_processors

    def spy(*args: Any, **kwargs: Any) -> Any:
        processors = retrieve(*args, **kwargs)
        used.extend(type(p) for p in processors)
        return processors

    patched._retrieve_logit_processors = spy
    processor = WhisperProcessor.from_pretrained(tiny_whisper_dir)
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(16000 * s).astype(np.float32) * 0.1 for s in (1, 3)]
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    for timestamps in (False, True):
        kwargs = {"return_timestamps": timestamps, "return_dict_in_generate": True, "output_scores": True}
        with torch.no_grad():
            expected = plain.generate(features, **kwargs)
            got = patched.generate(features, **kwargs)
        assert torch.equal(got["sequences"], expected["sequences"])
        got_scores, expected_scores = scores_of(got), scores_of(expected)
        assert len(got_scores) == len(expected_scores) > 1
        assert all(same_bits(a, b) for a, b in zip(got_scores, expected_scores, strict=True))
    assert whisper_processors.SuppressTokens in used and whisper_processors.SuppressTokensAtBegin in used
    assert SuppressTokensLogitsProcessor not in used


def test_the_server_installs_them_on_its_whisper_models_only(
    tiny_whisper_dir: Path, tiny_ctc_dir: Path
) -> None:
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import load_pipeline

    asr = "automatic-speech-recognition"
    whisper = load_pipeline(ModelSpec(name="w", task=asr, source=str(tiny_whisper_dir))).pipeline.model
    assert "_retrieve_logit_processors" in vars(whisper)
    ctc = load_pipeline(ModelSpec(name="c", task=asr, source=str(tiny_ctc_dir))).pipeline.model
    assert "_retrieve_logit_processors" not in vars(ctc)
    plain = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_dir)
    assert "_retrieve_logit_processors" not in vars(plain)  # per model, not globally
