"""A live stream's committed words forced as the start of a Whisper decode, so a re-decode generates only the
words after them (the forced prefix of Simul-Whisper, Wang et al. 2024).

Why: a stream re-decodes its window about once a second, and every decode generated again, token by token,
the words already final at the window's start; with tiny.en on this CPU a generated token costs about 14 ms
(a decoding step with word timestamps' attentions), the encoder of a 5 s window about 70 ms. Measured on the
first 5 and 7 s of LJ001-0001 (one torch thread, interim settings: 1 s encoder margin, 0.5 s AlignAtt stop),
all but the last three words forced: 257 -> 167 ms and 618 -> 206 ms per decode, the new words and their
times unchanged. Forced, the committed words also cannot be reworded by the next decode, so the commit rule
(streaming/agreement.py) finds them at the start of every hypothesis.

Mechanics: the prefix reaches the pipeline as the call argument `KWARG` (the committed text), which
`loading.run_batch` takes out and tokenizes; inside `forcing()` an installed model's `generate` gets the
decoder prompt (start of transcript, language and task for a multilingual model, no-timestamps) followed by
the prefix as `decoder_input_ids`. The prefix's positions run in one forward pass. Timestamp tokens are off
for a forced decode (Whisper's timestamp rule would read the forced text as the prompt and demand a
timestamp first); word times come from the cross-attention alignment (DTW) as before, computed over the
prefix's positions too: transformers leaves a prompt's positions out of that alignment, which then starts the
first generated word at the window's start and squeezed every new word to 0 s. `generate` returns only the
generated tokens, so the caller adds the committed words back (streaming/session.py). The batching key holds
the prefix, so only decodes with the same prefix share a batch, and results equal unbatched ones. A forced
decode's AlignAtt stop (tasks/whisper_alignatt.py) applies from its first generated token: its first word
is placed already.

What a stream forces (streaming/session.py): its window's final words but the last two, and only in windows
that will not slide. Forcing every final word of every window lost words: some word ends of a forced decode
came late, a window cut there began inside the next word, and Whisper skipped it (2 minutes of speech,
streamed WER against offline 0.054 against 0.034, 5 words lost). Measured as it is, interleaved with it off
(`bench/asr_streaming.py --minutes 2`, tiny.en, default config, quiet machine, one run each; WER of the
streamed finals against the same server's offline transcripts, and against the references, where offline
scores 0.024 at 1 stream and 0.026 at 4):

| streams | forced | WER vs offline | WER vs reference | final lag p50 / p95 / max | CPU s per audio s |
|---|---|---|---|---|---|
| 1 | no | 0.034 | 0.031 | 1.24 / 1.74 / 1.82 s | 0.283 |
| 1 | yes | 0.027 | 0.024 | 1.25 / 1.76 / 1.86 s | 0.284 |
| 4 | no | 0.050 | 0.051 | 1.33 / 1.83 / 2.11 s | 0.271 |
| 4 | yes | 0.041 | 0.042 | 1.29 / 1.79 / 2.74 s | 0.249 |

Two earlier pairs at 1 stream: WER against offline 0.034 and 0.034 against 0.027 and 0.027 (the streamed
transcript then equals the offline one's accuracy), CPU 0.277 and 0.286 against 0.271 and 0.272. Fewer
tokens are generated, but only decodes of windows that will not slide are forced, so the CPU saving is small;
the gain is accuracy. `streaming.force_committed_prefix: false` turns it off.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import whisper_alignatt

__all__ = ["KWARG", "forcing", "install", "installed", "prefix_ids"]

KWARG = "decoder_prefix"
# A prefix longer than this (tokens) is not forced: the decode runs as usual. Whisper's decoder holds 448
# positions; a stream's window (at most `hard_window_s`) stays far below.
MAX_PREFIX_TOKENS = 200

_state = threading.local()


def install(model: Any) -> bool:
    """Lets `model` (Whisper) take a forced prefix inside `forcing()` (once; replicas share the model)."""
    config = getattr(model, "generation_config", None)
    if config is None or getattr(config, "no_timestamps_token_id", None) is None:
        return False
    if installed(model):
        return True
    model.generate = _with_prefix(model, model.generate)
    extract = model._extract_token_timestamps

    @functools.wraps(extract)
    def extract_token_timestamps(*args: Any, **kwargs: Any) -> Any:
        prompt = getattr(_state, "prompt_length", None)
        if prompt is not None and "num_input_ids" in kwargs:
            kwargs["num_input_ids"] = prompt  # align the forced words too (see the module docstring)
        return extract(*args, **kwargs)

    model._extract_token_timestamps = extract_token_timestamps
    model._pipelined_prefix = True
    return True


def installed(model: Any) -> bool:
    return bool(getattr(model, "_pipelined_prefix", False))


def prefix_ids(tokenizer: Any, text: str | None) -> list[int] | None:
    """The tokens of the committed text as Whisper writes it after earlier words (a leading space)."""
    if not text or tokenizer is None:
        return None
    ids = list(tokenizer.encode(" " + text.strip(), add_special_tokens=False))
    return ids if 0 < len(ids) <= MAX_PREFIX_TOKENS else None


@contextmanager
def forcing(ids: list[int] | None) -> Iterator[None]:
    """Within this block (on this thread), installed models' decodes start with the tokens `ids`."""
    previous = getattr(_state, "ids", None)
    _state.ids = ids
    try:
        yield
    finally:
        _state.ids = previous


def _prompt(model: Any, kwargs: dict[str, Any]) -> list[int] | None:
    """Whisper's decoder prompt without timestamps, or None where it depends on a detected language."""
    config = model.generation_config
    prompt = [config.decoder_start_token_id]
    if getattr(config, "is_multilingual", False):
        language = kwargs.get("language") or getattr(config, "language", None)
        token = _language_token(config, language)
        task = kwargs.get("task") or getattr(config, "task", None) or "transcribe"
        task_ids = getattr(config, "task_to_id", None) or {}
        if token is None or task not in task_ids:
            return None
        prompt += [token, task_ids[task]]
    return [*prompt, config.no_timestamps_token_id]


def _language_token(config: Any, language: Any) -> int | None:
    if not isinstance(language, str) or not language:
        return None
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    code = language.lower().strip("<|>")
    code = TO_LANGUAGE_CODE.get(code, code)
    return (getattr(config, "lang_to_id", None) or {}).get(f"<|{code}|>")


def _with_prefix(model: Any, generate: Any) -> Any:
    @functools.wraps(generate)
    def generate_with_prefix(*args: Any, **kwargs: Any) -> Any:
        ids: list[int] = getattr(_state, "ids", None) or []
        features = kwargs.get("input_features", args[0] if args else None)
        prompt = _prompt(model, kwargs) if ids and features is not None else None
        if prompt is None or features is None:
            return generate(*args, **kwargs)
        import torch

        row = torch.tensor(prompt + ids, dtype=torch.long, device=features.device)
        kwargs["decoder_input_ids"] = row.unsqueeze(0).expand(features.shape[0], -1).contiguous()
        kwargs["return_timestamps"] = False
        _state.prompt_length = len(prompt)
        try:
            with whisper_alignatt.after_forced_text():
                return generate(*args, **kwargs)
        finally:
            _state.prompt_length = None

    return generate_with_prefix
