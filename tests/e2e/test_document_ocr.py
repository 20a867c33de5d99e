"""Document question answering without word boxes: the server reads the page with Tesseract, and the answers
equal the local pipeline's (which runs the same OCR in its preprocess) on the same tiny LayoutLM and page.
Pages are rendered at test time with DejaVu Sans; the module skips, saying why, where Tesseract is absent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from documents import INVOICE, render_page, require_ocr

require_ocr()

import pytesseract  # noqa: E402
import tiny_vision_models as tiny  # noqa: E402
from harness import ServerThread  # noqa: E402
from pipelined import Client, FailedPrecondition, InvalidArgument  # noqa: E402
from pipelined.aio import Client as AioClient  # noqa: E402
from pipelined_server.config import ModelSpec, ServerConfig  # noqa: E402
from pipelined_server.tasks import ocr  # noqa: E402
from test_vision_tasks import WORDS, assert_same  # noqa: E402

TASK = "document-question-answering"
PAGE = render_page()
RENDERED = {word for line in INVOICE for word in line.split()}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build_tiny_layoutlm(tmp_path_factory.mktemp("layoutlm"))


@pytest.fixture(scope="module")
def server(model_dir: Path) -> Iterator[ServerThread]:
    spec = ModelSpec(name="layoutlm", task=TASK, source=str(model_dir))
    thread = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def pipe(server: ServerThread) -> Any:
    return Client(server.target, timeout=120).pipeline(TASK, model="layoutlm")


@pytest.fixture(scope="module")
def local(model_dir: Path) -> Any:
    import transformers

    return transformers.pipeline(TASK, model=str(model_dir))


def test_server_ocr_reads_what_the_pipeline_reads() -> None:
    from transformers.pipelines.document_question_answering import apply_tesseract

    words = ocr.read_words(PAGE)
    assert [w for w, _ in words] == [w for line in INVOICE for w in line.split()]  # Tesseract read the page
    assert words == list(zip(*apply_tesseract(PAGE, lang=None, tesseract_config=""), strict=True))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"top_k": 3},
        {"top_k": 2, "max_answer_len": 2},
        {"handle_impossible_answer": True},
        {"lang": "eng"},
    ],
    ids=repr,
)
def test_page_without_word_boxes_equals_local(pipe: Any, local: Any, kwargs: dict[str, Any]) -> None:
    remote = pipe(PAGE, "What is the total due?", **kwargs)
    assert_same(remote, local(image=PAGE, question="What is the total due?", **kwargs))
    for answer in remote:
        assert set(answer["answer"].split()) <= RENDERED | {""}, answer  # answers are words read off the page


def test_mixed_batch_equals_local(pipe: Any, local: Any) -> None:
    batch = [
        {"image": PAGE, "question": "what is the date"},
        {"image": PAGE, "question": "what is the date", "word_boxes": WORDS},
        {"image": render_page(["Paid in full", "Thank you"]), "question": "paid?"},
    ]
    assert_same(pipe(batch, top_k=2), local(batch, top_k=2))


async def test_asyncio_client(server: ServerThread, local: Any) -> None:
    async with AioClient(server.target, timeout=120) as aio:
        remote = await aio.pipeline(TASK, model="layoutlm")(PAGE, "invoice number", top_k=2)
    assert_same(remote, local(image=PAGE, question="invoice number", top_k=2))


def test_bad_ocr_arguments_then_served(pipe: Any) -> None:
    with pytest.raises(InvalidArgument, match="not installed on this server"):
        pipe(PAGE, "total", lang="klingon")
    with pytest.raises(InvalidArgument, match="not a Tesseract language code"):
        pipe(PAGE, "total", lang="eng --psm 0")
    with pytest.raises(TypeError, match="tesseract_config is not sent over gRPC"):
        pipe(PAGE, "total", tesseract_config="--psm 6")
    with pytest.raises(InvalidArgument, match="needs the page image or its word_boxes"):
        pipe(None, "total")
    # Word boxes need no OCR, so an unknown OCR language is never looked at.
    assert pipe(None, "total", word_boxes=WORDS, lang="klingon")
    assert pipe(PAGE, "total")


def test_without_tesseract_failed_precondition(pipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server runs in this process: pointing pytesseract at a missing binary is what a machine without
    # tesseract-ocr looks like to it.
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    ocr.installed_languages.cache_clear()
    try:
        with pytest.raises(FailedPrecondition, match="tesseract-ocr package is not installed"):
            pipe(PAGE, "total")
        assert pipe(None, "total", word_boxes=WORDS)  # questions with word boxes are still answered
    finally:
        ocr.installed_languages.cache_clear()


def test_ocr_is_bounded_in_time() -> None:
    import io
    import time

    from pipelined.v1 import image_pb2, multimodal_pb2
    from pipelined_server.errors import InvalidInput
    from pipelined_server.images import ImageLimits
    from pipelined_server.tasks import document_qa

    # Tesseract needs over a second for this page: a 10 ms budget kills it.
    with pytest.raises(InvalidInput, match="OCR of the page was stopped"):
        ocr.read_words(PAGE, timeout_s=0.01)
    # A request whose OCR budget is spent reads no more pages.
    buffer = io.BytesIO()
    PAGE.save(buffer, format="PNG")
    question = multimodal_pb2.DocumentQuestion(
        question="total", image=image_pb2.ImageInput(encoded=buffer.getvalue())
    )
    with pytest.raises(InvalidInput, match="took more than"):
        document_qa._load(question, ImageLimits(), "", time.monotonic() - 1)
