"""Live-stream re-decodes start with their window's final words forced (tasks/whisper_prefix.py) and generate
only the words after them; every other call decodes as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline, run_batch
from pipelined_server.sources.embedded import is_available, materialize
from pipelined_server.streaming.agreement import Word, normalize
from pipelined_server.streaming.decode import hypothesis, with_prefix
from pipelined_server.tasks import whisper_alignatt, whisper_context, whisper_prefix

RATE = 16000


def _spy_prompts(pipe: Any) -> list[list[int] | None]:
    """The `decoder_input_ids` (first row) of every generate call under the prefix wrapper."""
    seen: list[list[int] | None] = []
    inner = pipe.model.generate.__wrapped__

    def spy(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("decoder_input_ids")
        seen.append(None if ids is None else ids[0].tolist())
        return inner(*args, **kwargs)

    pipe.model.generate = whisper_prefix._with_prefix(pipe.model, spy)
    return seen


@pytest.fixture(scope="module")
def english_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_models import build_tiny_whisper

    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper-en"), multilingual=False)


def test_only_calls_with_a_prefix_are_forced(english_whisper_dir: Path) -> None:
    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(english_whisper_dir))
    )
    pipe = loaded.pipeline
    assert whisper_prefix.installed(pipe.model)
    seen = _spy_prompts(pipe)
    clip = np.random.default_rng(0).normal(0, 0.1, int(3.0 * RATE)).astype(np.float32)
    kwargs: dict[str, Any] = {"return_timestamps": "word", whisper_context.KWARG: 1.0}
    plain = run_batch(pipe, [clip], kwargs)[0]
    forced = run_batch(pipe, [clip, clip], {**kwargs, whisper_prefix.KWARG: "hello world"})
    config = pipe.model.generation_config
    prompt = [config.decoder_start_token_id, config.no_timestamps_token_id]
    text_ids = pipe.tokenizer.encode(" hello world", add_special_tokens=False)
    assert seen == [None, prompt + text_ids]
    # The forced words are not returned (the stream has them), and two rows with one prefix decode alike.
    assert forced[0] == forced[1]
    assert not forced[0]["text"].startswith(" hello world")
    assert all(c["timestamp"][1] is not None for c in forced[0]["chunks"])
    # The setting ends with the call.
    assert run_batch(pipe, [clip], kwargs)[0] == plain
    assert seen[-1] is None


def test_a_multilingual_model_is_forced_once_its_language_is_given(tiny_whisper_dir: Path) -> None:
    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    )
    pipe = loaded.pipeline
    seen = _spy_prompts(pipe)
    clip = np.random.default_rng(1).normal(0, 0.1, int(2.0 * RATE)).astype(np.float32)
    kwargs: dict[str, Any] = {"return_timestamps": "word", whisper_prefix.KWARG: "hello"}
    run_batch(pipe, [clip], kwargs)  # its language detected: nothing to force it after
    detections: list[int] = []
    detect = pipe.model.detect_language
    pipe.model.detect_language = lambda *a, **k: detections.append(1) or detect(*a, **k)
    run_batch(pipe, [clip], {**kwargs, "generate_kwargs": {"language": "en"}})
    # The language given stays with generate, which would otherwise detect one it does not use.
    assert detections == []
    config = pipe.model.generation_config
    prompt = [config.decoder_start_token_id, config.lang_to_id["<|en|>"], config.task_to_id["transcribe"]]
    hello = pipe.tokenizer.encode(" hello", add_special_tokens=False)
    assert seen == [None, [*prompt, config.no_timestamps_token_id, *hello]]


def test_no_prefix_where_the_prompt_needs_a_detected_language() -> None:
    class Config:
        decoder_start_token_id, no_timestamps_token_id = 1, 2
        is_multilingual = True
        lang_to_id = {"<|en|>": 10, "<|de|>": 11}
        task_to_id = {"transcribe": 20, "translate": 21}
        language = None
        task = None

    class Model:
        generation_config = Config()

    assert whisper_prefix._prompt(Model(), {}) is None
    assert whisper_prefix._prompt(Model(), {"language": "german"}) == [1, 11, 20, 2]
    assert whisper_prefix._prompt(Model(), {"language": "<|en|>", "task": "translate"}) == [1, 10, 21, 2]
    assert whisper_prefix._prompt(Model(), {"language": "xx"}) is None


def test_a_prefix_too_long_for_the_decoder_is_not_forced() -> None:
    class Tokenizer:
        def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
            return list(range(len(text.split())))

    assert whisper_prefix.prefix_ids(Tokenizer(), "a b c") == [0, 1, 2]
    assert whisper_prefix.prefix_ids(Tokenizer(), " ".join(["w"] * 500)) is None
    assert whisper_prefix.prefix_ids(Tokenizer(), "") is None
    assert whisper_prefix.prefix_ids(None, "a b") is None


def test_the_hypothesis_holds_the_forced_words_then_the_new_ones() -> None:
    forced = [Word("ask", 1.0, 1.3), Word("not", 1.3, 1.8)]
    # Times from the window's start (0.5 s): the first new word has no start of its own (the window's).
    output = {
        "text": " what your",
        "chunks": [{"text": " what", "timestamp": (0.0, 1.6)}, {"text": " your", "timestamp": (1.6, 1.9)}],
    }
    hyp = with_prefix(forced, output, 0.5, 3.0)
    assert [w.text for w in hyp.words] == ["ask", "not", "what", "your"]
    assert hyp.words[2] == Word("what", 1.8, 2.1)
    assert hyp.cuts == [(1, 1.3), (2, 1.8), (3, 2.1), (4, 2.4)]
    assert with_prefix([], output, 0.5, 3.0) == hypothesis(output, 0.5, 3.0)
    # Text that goes on without a space ends the last forced word, which is final already: left out.
    glued = {"chunks": [{"text": "ters", "timestamp": (0.0, 1.4)}, {"text": " of", "timestamp": (1.4, 1.6)}]}
    hyp = with_prefix(forced, glued, 0.5, 3.0)
    assert [w.text for w in hyp.words] == ["ask", "not", "of"]
    assert hyp.cuts == [(1, 1.3), (2, 1.8), (3, 2.1)]


@pytest.mark.skipif(
    not is_available("whisper-tiny.en"), reason="the whisper-tiny.en weights package is not installed"
)
def test_forced_decodes_of_real_speech_continue_as_the_full_decode() -> None:
    from paths import shared_file
    from pipelined_server.audio import decode_encoded

    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize("whisper-tiny.en")))
    )
    speech = decode_encoded(shared_file("audio/LJ001-0001.wav").read_bytes(), RATE)
    interim = {"return_timestamps": "word", whisper_context.KWARG: 1.0, whisper_alignatt.KWARG: 0.5}
    generated = 0
    for seconds in (5.0, 7.0):
        window = speech[: int(seconds * RATE)]
        full = run_batch(loaded.pipeline, [window], interim)[0]["chunks"]
        words = [c["text"].strip() for c in full]
        for keep in (len(words) - 4, len(words) - 2):
            forced = run_batch(
                loaded.pipeline, [window], {**interim, whisper_prefix.KWARG: " ".join(words[:keep])}
            )[0]["chunks"]
            # The words after the forced ones are the unforced decode's, ending at the same times (the first
            # one's start is the forced words' end, which the stream supplies); the forced decode may stop
            # sooner (its stop applies from its first token), and its last word may end later (it took the
            # punctuation after it: 4.64 against 4.16 s), never earlier: a late end only delays its commit.
            got = [normalize(c["text"]) for c in forced]
            assert got == [normalize(w) for w in words[keep : keep + len(got)]]
            ends = [(c["timestamp"][1], w["timestamp"][1]) for c, w in zip(forced, full[keep:], strict=False)]
            assert all(abs(mine - theirs) <= 0.1 for mine, theirs in ends[:-1])
            assert not ends or ends[-1][0] >= ends[-1][1] - 0.1
            generated += len(got)
    assert generated >= 4
