"""Vision, multimodal and audio tasks: remote results equal the in-process pipeline's on the same tiny
model, input and arguments (single input, lists, every parameter the contract exposes), and concurrent
requests that the server batches give the same results as unbatched in-process calls."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
import torch  # noqa: E402

torch.set_num_threads(1)

import tiny_vision_models as tiny  # noqa: E402
from documents import WORDS  # noqa: E402
from harness import ServerThread, concurrently, until_batched, wait_for  # noqa: E402
from pipelined import Client  # noqa: E402
from pipelined_server.config import BatchingConfig, ModelSpec, ServerConfig  # noqa: E402
from tiny_models import tiny_audio  # noqa: E402

BUILDERS = {
    "image-classification": tiny.build_tiny_image_classifier,
    "object-detection": tiny.build_tiny_object_detector,
    "zero-shot-image-classification": tiny.build_tiny_clip,
    "zero-shot-object-detection": tiny.build_tiny_owlvit,
    "image-segmentation": tiny.build_tiny_semantic_segmenter,
    "depth-estimation": tiny.build_tiny_depth_estimator,
    "image-feature-extraction": tiny.build_tiny_image_feature_extractor,
    "image-text-to-text": tiny.build_tiny_llava,
    "document-question-answering": tiny.build_tiny_layoutlm,
    "audio-classification": tiny.build_tiny_audio_classifier,
    "zero-shot-audio-classification": tiny.build_tiny_clap,
    "text-to-audio": tiny.build_tiny_vits,
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {task: build(tmp_path_factory.mktemp(task)) for task, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path]) -> Iterator[ServerThread]:
    batching = BatchingConfig(max_batch_size=8, max_queue_delay_ms=50)
    specs = tuple(
        ModelSpec(name=task, task=task, source=str(path), batching=batching)
        for task, path in model_dirs.items()
    )
    thread = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=specs))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=120)


_LOCAL: dict[str, Any] = {}


@pytest.fixture(scope="module")
def local(model_dirs: dict[str, Path]) -> Any:
    import transformers

    def get(task: str) -> Any:
        if task not in _LOCAL:
            _LOCAL[task] = transformers.pipeline(task, model=str(model_dirs[task]))
        return _LOCAL[task]

    return get


# A batch of several inputs runs other matrix kernels than a batch of one: floats then agree to float32
# rounding, not bit for bit (e.g. 0.16543014 vs 0.16543016); everything else (labels, boxes, pixels,
# order, structure) must be identical.
REL = 1e-5
ABS = 1e-6


def assert_same(remote: Any, local: Any, audio_atol: float = ABS) -> None:
    """Same structure, keys and values: PIL images pixel for pixel, tensors as arrays, floats to rounding."""
    if hasattr(local, "detach"):
        local = local.detach().numpy()
    if isinstance(local, np.ndarray):
        assert isinstance(remote, np.ndarray), type(remote)
        assert remote.shape == local.shape
        # Near-zero elements of an array (depths beside a ReLU's zeros) get float32 rounding of the array's
        # scale, not of their own value: the absolute tolerance grows with the largest magnitude.
        scale = max(1.0, float(np.abs(local).max(initial=0.0)))
        np.testing.assert_allclose(remote, local.astype(np.float32), rtol=REL, atol=audio_atol * scale)
        return
    if type(local).__module__.startswith("PIL."):
        assert remote.size == local.size and remote.mode == local.mode
        assert np.array_equal(np.asarray(remote), np.asarray(local))
        return
    if isinstance(local, dict):
        assert isinstance(remote, dict) and remote.keys() == local.keys(), (remote, local)
        for key in local:
            assert_same(remote[key], local[key], audio_atol)
        return
    if isinstance(local, list | tuple):
        assert isinstance(remote, list | tuple) and len(remote) == len(local), (remote, local)
        for r, expected in zip(remote, local, strict=True):
            assert_same(r, expected, audio_atol)
        return
    if isinstance(local, float):
        assert isinstance(remote, float) and remote == pytest.approx(local, rel=REL, abs=ABS), (remote, local)
        return
    assert type(remote) is type(local) and remote == local, (remote, local)


IMAGES = [tiny.tiny_image(i, size) for i, size in enumerate([(40, 30), (32, 32), (40, 30), (25, 50)])]

VISION_CASES: list[tuple[str, dict[str, Any]]] = [
    ("image-classification", {}),
    ("image-classification", {"top_k": 2}),
    ("image-classification", {"top_k": 1, "function_to_apply": "sigmoid"}),
    ("image-classification", {"function_to_apply": "none"}),
    ("object-detection", {}),
    ("object-detection", {"threshold": 0.3}),
    ("zero-shot-image-classification", {"candidate_labels": ["cat", "dog", "car"]}),
    (
        "zero-shot-image-classification",
        {"candidate_labels": ["cat", "dog"], "hypothesis_template": "a picture of {}"},
    ),
    ("zero-shot-object-detection", {"candidate_labels": ["cat", "dog"]}),
    ("zero-shot-object-detection", {"candidate_labels": ["cat", "house"], "threshold": 0.0, "top_k": 3}),
    ("image-segmentation", {}),
    (
        "image-segmentation",
        {"subtask": "semantic", "threshold": 0.5, "mask_threshold": 0.4, "overlap_mask_area_threshold": 0.6},
    ),
    ("depth-estimation", {}),
    ("image-feature-extraction", {}),
    ("image-feature-extraction", {"pool": True}),
    ("image-feature-extraction", {"return_tensors": True}),
]


BATCHING_KWARGS: dict[str, dict[str, Any]] = {"object-detection": {"threshold": 0.3}}


@pytest.mark.parametrize(("task", "kwargs"), VISION_CASES, ids=lambda v: repr(v))
def test_vision_single_and_list(client: Client, local: Any, task: str, kwargs: dict[str, Any]) -> None:
    pipe = client.pipeline(task, model=task)
    assert_same(pipe(IMAGES[0], **kwargs), local(task)(IMAGES[0], **kwargs))
    assert_same(pipe(IMAGES, **kwargs), local(task)(IMAGES, **kwargs))
    if task == "zero-shot-object-detection":
        # Boxes worth comparing: the fixture's have an area (a random head gave points).
        boxes = [d["box"] for d in local(task)(IMAGES[0], **kwargs)]
        assert boxes and all(b["xmax"] > b["xmin"] and b["ymax"] > b["ymin"] for b in boxes)
    if task == "depth-estimation":
        # Depths of order 1 (the fixture scales them), so the tolerances of assert_same are tight for them.
        assert float(np.abs(local(task)(IMAGES[0])["predicted_depth"].numpy()).max()) > 1.0


@pytest.mark.parametrize("task", sorted({t for t, _ in VISION_CASES}))
def test_vision_batching_never_changes_a_result(
    server: ServerThread, client: Client, local: Any, task: str
) -> None:
    """Concurrent single-image requests (mixed sizes) are batched by the server, each equal to its unbatched result."""
    # The first case of each task, but detection at a threshold that finds boxes (the default finds none on
    # these images, and eight empty lists would compare equal whatever the batching did).
    kwargs = BATCHING_KWARGS.get(task) or next(k for t, k in VISION_CASES if t == task)
    images = IMAGES * 2
    expected = [local(task)(image, **kwargs) for image in images]
    if task == "object-detection":
        assert all(expected), "the batching check needs boxes on every image"
    pipe = client.pipeline(task, model=task, **kwargs)
    until_batched(server, task, lambda: assert_same(concurrently(pipe, images), expected), len(images))


def test_image_input_forms(client: Client, local: Any, tmp_path: Path) -> None:
    import base64

    task = "image-classification"
    image = IMAGES[1]
    path = tmp_path / "image.png"
    image.save(path)
    encoded = base64.b64encode(path.read_bytes()).decode()
    expected = local(task)(image)
    pipe = client.pipeline(task, model=task)
    for form in (
        str(path),
        path,
        path.read_bytes(),
        encoded,
        f"data:image/png;base64,{encoded}",
        np.asarray(image),
    ):
        assert_same(pipe(form), expected)
    assert_same(list(pipe(iter([image, str(path)]))), [expected, expected])


# ------------------------------------------------------------------------------------------- multimodal


def _chat(image: Any, text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}]


ITT_CASES: list[dict[str, Any]] = [
    {},
    {"max_new_tokens": 5},
    {"return_full_text": False},
    {"generate_kwargs": {"num_beams": 2, "max_new_tokens": 4, "repetition_penalty": 1.3}},
]


@pytest.mark.parametrize("kwargs", ITT_CASES, ids=repr)
def test_image_text_to_text(client: Client, local: Any, kwargs: dict[str, Any]) -> None:
    task = "image-text-to-text"
    pipe, here = client.pipeline(task, model=task), local(task)
    assert_same(
        pipe(images=IMAGES[0], text="<image> what is this"),
        here(images=IMAGES[0], text="<image> what is this"),
    )
    chat = _chat(IMAGES[1], "describe the photo")
    assert_same(pipe(text=chat, **kwargs), here(text=chat, **kwargs))
    chats = [_chat(IMAGES[0], "hello"), _chat(IMAGES[3], "what color")]
    assert_same(pipe(text=chats, **kwargs), here(text=chats, **kwargs))


def test_image_text_to_text_continues_an_assistant_message(client: Client, local: Any) -> None:
    task = "image-text-to-text"
    chat = [
        *_chat(IMAGES[0], "name it"),
        {"role": "assistant", "content": [{"type": "text", "text": "it is a"}]},
    ]
    remote = client.pipeline(task, model=task)(chat)
    assert_same(remote, local(task)(chat))


def test_image_text_to_text_stream_pieces_add_up(client: Client, local: Any) -> None:
    task = "image-text-to-text"
    chat = _chat(IMAGES[2], "what is this")
    pieces = list(client.pipeline(task, model=task).stream(text=chat, max_new_tokens=8))
    expected = local(task)(text=chat, max_new_tokens=8, return_full_text=False)[0]["generated_text"]
    assert len(pieces) >= 1
    assert "".join(pieces) == expected


def test_image_text_to_text_cancelled_stream_frees_the_worker(
    server: ServerThread, client: Client, local: Any
) -> None:
    """A stream whose caller goes away stops at the next token: its generation ends a few tokens after the
    caller left, long before its 1024 tokens (limits.max_new_tokens; the tiny model never stops early),
    counted as the model's forward passes, and the next request is served right."""
    task = "image-text-to-text"
    pipe, chat = client.pipeline(task, model=task), _chat(IMAGES[2], "what is this")
    model = server.app.state.registry.instances[task].pipeline.model
    forward, steps = model.forward, [0]

    @functools.wraps(forward)  # generate checks its arguments against the forward's signature
    def counted(*args: Any, **kwargs: Any) -> Any:
        steps[0] += 1
        return forward(*args, **kwargs)

    def ended() -> float:
        """Work ended: computed to its end, or stopped as abandoned (counted as skipped)."""
        done = server.metric("pipelined_pipeline_calls_total", model=task)
        return done + server.metric("pipelined_requests_skipped_total", model=task, reason="cancelled")

    before = ended()
    model.forward = counted
    try:
        stream = pipe.stream(text=chat, max_new_tokens=1024)
        next(stream)
        stream.close()  # cancels the call
        # Tokens generated until here depend on how soon this (loaded) client closed: not the server's.
        at_close = steps[0]
        wait_for(lambda: ended() == before + 1, timeout_s=120, what="the abandoned generation to end")
    finally:
        del model.forward
    after_close = steps[0] - at_close
    assert at_close >= 1 and steps[0] < 1024, f"{steps[0]} tokens: the generation ran to its end"
    assert after_close < 1024 // 4, f"{after_close} tokens generated after the caller left"
    assert_same(pipe(text=chat, max_new_tokens=3), local(task)(text=chat, max_new_tokens=3))


def test_image_text_to_text_batching(server: ServerThread, client: Client, local: Any) -> None:
    task = "image-text-to-text"
    chats = [_chat(image, "what is this") for image in [IMAGES[0], IMAGES[2], IMAGES[0], IMAGES[2]]]
    expected = [local(task)(text=c) for c in chats]
    pipe = client.pipeline(task, model=task)
    until_batched(server, task, lambda: assert_same(concurrently(pipe, chats), expected), len(chats))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"top_k": 3}, {"top_k": 2, "max_answer_len": 1}, {"handle_impossible_answer": True}],
    ids=repr,
)
def test_document_question_answering(client: Client, local: Any, kwargs: dict[str, Any]) -> None:
    task = "document-question-answering"
    pipe, here = client.pipeline(task, model=task), local(task)
    remote = pipe(IMAGES[0], "what is the total", word_boxes=WORDS, **kwargs)
    assert_same(remote, here(IMAGES[0], "what is the total", word_boxes=WORDS, **kwargs))
    batch = [
        {"image": IMAGES[1], "question": "what date", "word_boxes": WORDS},
        {"image": None, "question": "total", "word_boxes": WORDS[:3]},
    ]
    assert_same(pipe(batch, **kwargs), here(batch, **kwargs))


# ------------------------------------------------------------------------------------------------ audio

CLIPS = [tiny_audio(seconds, seed=40 + i) for i, seconds in enumerate([1.0, 0.7, 1.0, 1.3])]


@pytest.mark.parametrize(
    ("task", "kwargs"),
    [
        ("audio-classification", {}),
        ("audio-classification", {"top_k": 2}),
        ("audio-classification", {"function_to_apply": "sigmoid"}),
        ("zero-shot-audio-classification", {"candidate_labels": ["music", "speech", "noise"]}),
        (
            "zero-shot-audio-classification",
            {"candidate_labels": ["music", "speech"], "hypothesis_template": "the sound of {}"},
        ),
    ],
    ids=repr,
)
def test_audio_classification(client: Client, local: Any, task: str, kwargs: dict[str, Any]) -> None:
    pipe = client.pipeline(task, model=task)
    assert_same(pipe(CLIPS[0], **kwargs), local(task)(CLIPS[0].copy(), **kwargs))
    assert_same(pipe(CLIPS, **kwargs), local(task)([c.copy() for c in CLIPS], **kwargs))
    if task == "audio-classification":
        # Scores that depend on the clip (the fixture's head is calibrated), or equal outputs would prove little.
        tops = {round(r[0]["score"], 3) for r in local(task)([c.copy() for c in CLIPS], **kwargs)}
        assert len(tops) > 1, tops


@pytest.mark.parametrize("task", ["audio-classification", "zero-shot-audio-classification"])
def test_audio_batching_never_changes_a_result(
    server: ServerThread, client: Client, local: Any, task: str
) -> None:
    kwargs = {"candidate_labels": ["music", "speech"]} if task.startswith("zero") else {}
    clips = CLIPS * 2
    expected = [local(task)(c.copy(), **kwargs) for c in clips]
    pipe = client.pipeline(task, model=task, **kwargs)
    until_batched(server, task, lambda: assert_same(concurrently(pipe, clips), expected), len(clips))


def test_text_to_audio(client: Client, local: Any) -> None:
    task = "text-to-audio"
    pipe, here = client.pipeline(task, model=task), local(task)
    quantum = 1.0 / 32767 + 1e-7  # the wire carries 16-bit PCM
    texts = ["hello world", "a red car", "what is the date?"]
    for text in texts:
        expected = here(text)
        expected["audio"] = np.clip(expected["audio"], -1, 1)
        assert_same(pipe(text), expected, audio_atol=quantum)
    remote = pipe(texts)
    assert [r["audio"].shape for r in remote] == [here(t)["audio"].shape for t in texts]
