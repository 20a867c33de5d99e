"""The tiny test models load offline through `transformers.pipeline` and produce outputs of the real shapes."""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from tiny_models import build_tiny_wav2vec2_ctc, build_tiny_whisper, tiny_audio
from transformers import AutoTokenizer, GenerationConfig, pipeline
from transformers.models.whisper.tokenization_whisper import LANGUAGES

torch.set_num_threads(1)

ASR = "automatic-speech-recognition"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="module")
def whisper_path(models_dir):
    return build_tiny_whisper(models_dir / "whisper")


@pytest.fixture(scope="module")
def whisper_en_path(models_dir):
    return build_tiny_whisper(models_dir / "whisper-en", multilingual=False)


@pytest.fixture(scope="module")
def ctc_path(models_dir):
    return build_tiny_wav2vec2_ctc(models_dir / "wav2vec2")


@pytest.fixture(scope="module")
def whisper(whisper_path):
    return pipeline(ASR, model=str(whisper_path))


@pytest.fixture(scope="module")
def whisper_en(whisper_en_path):
    return pipeline(ASR, model=str(whisper_en_path))


@pytest.fixture(scope="module")
def ctc(ctc_path):
    return pipeline(ASR, model=str(ctc_path))


@pytest.fixture(scope="module")
def audio():
    return tiny_audio(5.0)


def _check_segments(chunks, text):
    assert chunks
    for chunk in chunks:
        assert set(chunk) == {"timestamp", "text"}
        start, end = chunk["timestamp"]
        assert isinstance(chunk["timestamp"], tuple)
        assert isinstance(start, float) and isinstance(end, float)
        assert 0.0 <= start <= end
    starts = [chunk["timestamp"][0] for chunk in chunks]
    assert starts == sorted(starts)
    assert "".join(chunk["text"] for chunk in chunks) == text


# --------------------------------------------------------------------------------------------- audio


def test_tiny_audio_is_a_deterministic_float32_signal():
    signal = tiny_audio(5.0)
    assert signal.dtype == np.float32
    assert signal.shape == (80_000,)
    assert np.abs(signal).max() <= 1.0
    assert signal.std() > 0.01
    np.testing.assert_array_equal(signal, tiny_audio(5.0))
    assert not np.array_equal(signal, tiny_audio(5.0, seed=1))
    assert tiny_audio(2.0, rate=8000).shape == (16_000,)
    assert tiny_audio(0.0).shape == (0,)


# --------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("fixture", ["whisper_path", "whisper_en_path"])
def test_whisper_directory_holds_a_complete_checkpoint(fixture, request):
    path = request.getfixturevalue(fixture)
    for name in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
    ]:
        assert (path / name).is_file(), name
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "whisper"
    assert config["num_mel_bins"] == 80
    assert config["max_source_positions"] == 1500


def test_whisper_tokenizer_has_whispers_layout(whisper_path):
    tokenizer = AutoTokenizer.from_pretrained(str(whisper_path))
    ids = tokenizer.convert_tokens_to_ids
    eot, sot = ids("<|endoftext|>"), ids("<|startoftranscript|>")
    assert sot == eot + 1
    # Languages in Whisper's order, so the tokenizer's own prefix arithmetic holds.
    assert [ids("<|en|>"), ids("<|de|>"), ids("<|fr|>")] == [sot + 1, sot + 3, sot + 7]
    translate = ids("<|translate|>")
    assert translate == sot + 100
    names = ["<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]
    assert ids(names) == list(range(translate + 1, translate + 6))
    no_timestamps = ids("<|notimestamps|>")
    assert tokenizer.all_special_ids[-1] == no_timestamps
    assert ids("<|0.00|>") == no_timestamps + 1
    assert ids("<|30.00|>") == no_timestamps + 1501 == len(tokenizer) - 1
    config = json.loads((whisper_path / "config.json").read_text())
    assert config["vocab_size"] == len(tokenizer)
    # Byte-level BPE: any text round-trips, and the vocabulary's words are single tokens.
    assert tokenizer.decode(tokenizer(" hello world, ça va?", add_special_tokens=False).input_ids) == (
        " hello world, ça va?"
    )
    assert len(tokenizer(" hello", add_special_tokens=False).input_ids) == 1
    assert tokenizer.get_decoder_prompt_ids(language="fr", task="translate") == [
        (1, ids("<|fr|>")),
        (2, translate),
        (3, no_timestamps),
    ]
    assert tokenizer.decode([ids("Ġhello"), no_timestamps + 55], decode_with_timestamps=True) == (
        " hello<|1.08|>"
    )


def test_whisper_generation_config(whisper_path, whisper_en_path):
    tokenizer = AutoTokenizer.from_pretrained(str(whisper_path))
    ids = tokenizer.convert_tokens_to_ids
    config = GenerationConfig.from_pretrained(str(whisper_path))
    assert config.is_multilingual is True
    assert config.lang_to_id["<|en|>"] == ids("<|en|>")
    assert config.lang_to_id["<|fr|>"] == ids("<|fr|>")
    assert len(config.lang_to_id) == 99
    assert config.task_to_id == {"translate": ids("<|translate|>"), "transcribe": ids("<|transcribe|>")}
    assert config.no_timestamps_token_id == ids("<|notimestamps|>")
    assert config.decoder_start_token_id == ids("<|startoftranscript|>")
    assert config.eos_token_id == config.pad_token_id == ids("<|endoftext|>")
    assert config.alignment_heads == [[1, 0], [1, 1]]
    assert config.max_length == 64
    assert config.num_beams == 1
    english = GenerationConfig.from_pretrained(str(whisper_en_path))
    assert english.is_multilingual is False
    assert not hasattr(english, "lang_to_id")


def test_builders_are_deterministic(tmp_path, whisper_path, ctc_path):
    again = build_tiny_whisper(tmp_path / "again")
    other = build_tiny_whisper(tmp_path / "other", seed=1)
    weights = (whisper_path / "model.safetensors").read_bytes()
    assert (again / "model.safetensors").read_bytes() == weights
    assert (other / "model.safetensors").read_bytes() != weights
    ctc_again = build_tiny_wav2vec2_ctc(tmp_path / "ctc-again")
    assert (ctc_again / "model.safetensors").read_bytes() == (ctc_path / "model.safetensors").read_bytes()


# --------------------------------------------------------------------------------------------- whisper


def test_whisper_transcribes_to_words(whisper, audio):
    out = whisper(audio)
    assert set(out) == {"text"}
    assert isinstance(out["text"], str)
    assert len(out["text"].split()) >= 3


def test_whisper_text_depends_on_the_audio(whisper, audio):
    assert whisper(audio)["text"] != whisper(tiny_audio(5.0, seed=1))["text"]


def test_whisper_segment_timestamps(whisper, audio):
    out = whisper(audio, return_timestamps=True)
    assert set(out) == {"text", "chunks"}
    _check_segments(out["chunks"], out["text"])


def test_whisper_word_timestamps(whisper, audio):
    out = whisper(audio, return_timestamps="word")
    assert set(out) == {"text", "chunks"}
    words = out["chunks"]
    assert [word["text"].strip() for word in words] == out["text"].split()
    for word in words:
        start, end = word["timestamp"]
        assert 0.0 <= start <= end <= 5.0
    assert [w["timestamp"][0] for w in words] == sorted(w["timestamp"][0] for w in words)
    assert words[-1]["timestamp"][1] > 0


def test_whisper_return_language(whisper, audio):
    out = whisper(audio, return_language=True)
    assert set(out) == {"text", "chunks"}
    (chunk,) = out["chunks"]
    assert set(chunk) == {"language", "text"}
    assert chunk["language"] in LANGUAGES.values()
    assert chunk["text"] == out["text"]

    timed = whisper(audio, return_language=True, return_timestamps=True)
    assert timed["chunks"]
    for chunk in timed["chunks"]:
        assert set(chunk) == {"language", "timestamp", "text"}
        assert chunk["language"] in LANGUAGES.values()


@pytest.mark.parametrize(
    "generate_kwargs",
    [{"language": "fr", "task": "translate"}, {"language": "german"}, {"num_beams": 2}],
    ids=["fr-translate", "german", "beams"],
)
def test_whisper_generate_kwargs(whisper, audio, generate_kwargs):
    out = whisper(audio, generate_kwargs=generate_kwargs)
    assert set(out) == {"text"}
    assert out["text"].strip()


def test_whisper_long_form_decodes_every_window(whisper):
    out = whisper(tiny_audio(45.0, seed=1), return_timestamps=True)
    _check_segments(out["chunks"], out["text"])
    assert out["chunks"][-1]["timestamp"][0] >= 30.0


def test_whisper_long_form_needs_timestamps(whisper):
    # transformers refuses sequential long-form decoding unless timestamps are on (the generation config
    # says return_timestamps=False, as real checkpoints do).
    with pytest.raises(ValueError, match="more than 3000 mel input features"):
        whisper(tiny_audio(31.0))


def test_whisper_chunked_batched(whisper):
    out = whisper(tiny_audio(25.0, seed=2), chunk_length_s=10, batch_size=2)
    assert set(out) == {"text"}
    assert out["text"].strip()


def test_whisper_batches_like_single_inputs(whisper):
    inputs = [tiny_audio(5.0), tiny_audio(12.0, seed=1)]
    for kwargs in ({}, {"return_timestamps": True}):
        assert whisper(inputs, batch_size=2, **kwargs) == [whisper(x, **kwargs) for x in inputs]


def test_english_only_whisper(whisper_en, audio):
    assert whisper_en(audio)["text"].strip()
    out = whisper_en(audio, return_timestamps=True)
    _check_segments(out["chunks"], out["text"])
    with pytest.raises(ValueError, match="English-only"):
        whisper_en(audio, generate_kwargs={"language": "fr"})


# --------------------------------------------------------------------------------------------- wav2vec2


def test_ctc_directory_holds_a_complete_checkpoint(ctc_path):
    for name in [
        "config.json",
        "model.safetensors",
        "vocab.json",
        "tokenizer_config.json",
        "processor_config.json",
    ]:
        assert (ctc_path / name).is_file(), name
    vocab = json.loads((ctc_path / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and vocab["|"] == 4 and "'" in vocab and "Z" in vocab


def test_ctc_transcribes_to_words(ctc, audio):
    out = ctc(audio)
    assert set(out) == {"text"}
    assert len(out["text"].split()) >= 3
    assert out["text"] != ctc(tiny_audio(5.0, seed=1))["text"]


def test_ctc_char_timestamps(ctc, audio):
    out = ctc(audio, return_timestamps="char")
    assert set(out) == {"text", "chunks"}
    assert "".join(chunk["text"] for chunk in out["chunks"]) == out["text"]
    for chunk in out["chunks"]:
        assert len(chunk["text"]) == 1
        start, end = chunk["timestamp"]
        assert 0.0 <= start < end <= 5.0


def test_ctc_word_timestamps(ctc, audio):
    out = ctc(audio, return_timestamps="word")
    assert [chunk["text"] for chunk in out["chunks"]] == out["text"].split()
    for chunk in out["chunks"]:
        start, end = chunk["timestamp"]
        assert 0.0 <= start < end <= 5.0


def test_ctc_batches_of_equal_lengths_equal_single_inputs(ctc):
    inputs = [tiny_audio(5.0, seed=i) for i in range(2)]
    for kwargs in ({}, {"return_timestamps": "word"}):
        assert ctc(inputs, batch_size=2, **kwargs) == [ctc(x, **kwargs) for x in inputs]


def test_ctc_padding_changes_the_shorter_input(ctc):
    """The fixture's point: batching clips of different lengths is visible in the text (padding decodes to E),
    so a server that batches them together fails the parity tests."""
    inputs = [tiny_audio(s, seed=i) for i, s in enumerate((5.0, 2.5))]
    batched = ctc(inputs, batch_size=2)
    single = [ctc(x) for x in inputs]
    assert batched[0] == single[0]
    assert batched[1]["text"] != single[1]["text"]
    assert batched[1]["text"].startswith(single[1]["text"].rstrip())
