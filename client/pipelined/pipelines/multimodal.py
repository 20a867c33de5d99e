"""image-text-to-text and document-question-answering over gRPC, with the local pipelines' results.

image-text-to-text: the server returns only the new text; the full text (`return_full_text=True`, the
default) or the continued chat is rebuilt here from the caller's own prompt, the way the pipeline does,
so `input_text` and chats hold the caller's objects (images included) without sending them back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .. import _transport
from ..v1 import common_pb2, multimodal_pb2
from ..wire.images import image_input, is_single_image
from .base import RemotePipeline

_GENERATION = (
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
    "repetition_penalty",
)


def _is_chat(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and isinstance(value[0], list | tuple | dict)


def _chat_proto(messages: list[dict[str, Any]]) -> multimodal_pb2.MultimodalChat:
    chat = multimodal_pb2.MultimodalChat()
    for message in messages:
        if "role" not in message or "content" not in message:
            raise ValueError(
                "When passing chat dicts as input, each dict must have a 'role' and 'content' key."
            )
        proto = chat.messages.add(role=message["role"])
        content = message["content"]
        if isinstance(content, str):
            proto.text = content
            continue
        for part in content:
            if part.get("type") == "text":
                proto.parts.add(text=part["text"])
            elif part.get("type") == "image":
                source = next((part[k] for k in ("image", "url", "path", "base64") if k in part), None)
                if source is None:
                    raise ValueError(f"an image part needs 'image', 'url', 'path' or 'base64': {part!r}")
                proto.parts.add(image=image_input(source))
            else:
                raise ValueError(f"unsupported chat content part type {part.get('type')!r} over gRPC")
    return chat


class _Prompt:
    """One prompt as the caller gave it: a chat (list of messages) or images plus text."""

    def __init__(self, chat: list[dict[str, Any]] | None = None, images: Any = None, text: str = "") -> None:
        self.chat, self.images, self.text = chat, images, text

    def proto(self) -> multimodal_pb2.ImageTextPrompt:
        if self.chat is not None:
            return multimodal_pb2.ImageTextPrompt(chat=_chat_proto(self.chat))
        images = [self.images] if is_single_image(self.images) else list(self.images or [])
        return multimodal_pb2.ImageTextPrompt(
            input=multimodal_pb2.ImageTextInput(images=[image_input(i) for i in images], text=self.text)
        )

    def record(self, new_text: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        """The pipeline's output for this prompt, rebuilt from the new text."""
        full = kwargs.get("return_full_text")
        full = True if full is None else full
        if self.chat is None:
            return [{"input_text": self.text, "generated_text": self.text + new_text if full else new_text}]
        generated: Any = new_text
        if full:
            continue_final = kwargs.get("continue_final_message")
            if continue_final is None:
                continue_final = self.chat[-1]["role"] == "assistant"
            if continue_final:
                last = self.chat[-1]
                content = last["content"]
                if isinstance(content, str):
                    content = content + new_text
                else:
                    extended = dict(content[-1].items())
                    extended["text"] += new_text
                    content = [*content[:-1], extended]
                generated = [*list(self.chat)[:-1], {"role": last["role"], "content": content}]
            else:
                generated = [*list(self.chat), {"role": "assistant", "content": new_text}]
        return [{"input_text": self.chat, "generated_text": generated}]


def _prompts(images: Any, text: Any) -> tuple[list[_Prompt], bool]:
    """The prompts of one call and whether the call was for a single prompt (as the pipeline reads them)."""
    if text is None and _is_chat(images):
        images, text = None, images
    if _is_chat(text):
        if images is not None:
            raise ValueError("Invalid input: you passed `chat` and `images` as separate input arguments.")
        if isinstance(text[0], dict):
            return [_Prompt(chat=list(text))], True
        return [_Prompt(chat=list(chat)) for chat in text], False
    if text is None and isinstance(images, dict):
        return [_Prompt(images=images.get("images"), text=images.get("text", ""))], True
    if text is None and isinstance(images, list | tuple) and images and isinstance(images[0], dict):
        return [_Prompt(images=i.get("images"), text=i.get("text", "")) for i in images], False
    if text is None:
        raise ValueError("You must provide text for this pipeline.")
    if isinstance(text, str):
        return [_Prompt(images=images, text=text)], True
    if not isinstance(images, list | tuple) or len(images) != len(text):
        raise ValueError("a list of texts needs a list of as many images (one image or list of images each)")
    return [_Prompt(images=i, text=t) for i, t in zip(images, text, strict=True)], False


class ImageTextToTextPipeline(RemotePipeline):
    """`pipe(images=..., text=...)`, `pipe(chat)` or lists of those; `pipe.stream(...)` yields text pieces."""

    task = "image-text-to-text"
    accepted = frozenset(
        {"max_new_tokens", "generate_kwargs", "return_full_text", "continue_final_message", "timeout"}
    )

    def parse_call(  # type: ignore[override]
        self, images: Any = None, text: Any = None, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        _, merged = super().parse_call(None, **kwargs)
        prompts, single = _prompts(images, text)
        return (prompts[0] if single else prompts), merged

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, _Prompt)

    def method(self) -> Callable[..., Any]:
        return self.client.multimodal.GenerateFromImage

    def _options(self, kwargs: dict[str, Any]) -> common_pb2.DecodingOptions:
        generate = dict(kwargs.get("generate_kwargs") or {})
        if kwargs.get("max_new_tokens") is not None:
            if "max_new_tokens" in generate:
                raise ValueError(
                    "'max_new_tokens' is defined twice, once in 'generate_kwargs' and once as a direct parameter"
                )
            generate["max_new_tokens"] = kwargs["max_new_tokens"]
        unknown = set(generate) - set(_GENERATION)
        if unknown:
            raise TypeError(f"unsupported generate_kwargs over gRPC: {', '.join(sorted(unknown))}")
        options = common_pb2.DecodingOptions()
        for name, value in generate.items():
            if value is not None:
                setattr(options, name, value)
        return options

    def build_request(
        self, inputs: _Prompt, kwargs: dict[str, Any]
    ) -> multimodal_pb2.GenerateFromImageRequest:
        request = multimodal_pb2.GenerateFromImageRequest(
            model=self.model, prompts=[inputs.proto()], generation=self._options(kwargs)
        )
        if kwargs.get("continue_final_message") is not None:
            request.continue_final_message = bool(kwargs["continue_final_message"])
        return request

    def read_results(
        self, response: multimodal_pb2.GenerateFromImageResponse, inputs: _Prompt, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [inputs.record(response.results[0].generated_text, kwargs)]

    def stream_request(
        self, images: Any = None, text: Any = None, **kwargs: Any
    ) -> multimodal_pb2.StreamGenerateFromImageRequest:
        prompt, merged = self.parse_call(images, text, **kwargs)
        if not self.is_single(prompt):
            raise ValueError("stream() takes one prompt")
        unary = self.build_request(prompt, merged)
        request = multimodal_pb2.StreamGenerateFromImageRequest(
            model=self.model, prompt=unary.prompts[0], generation=unary.generation
        )
        if unary.HasField("continue_final_message"):
            request.continue_final_message = unary.continue_final_message
        return request

    def stream(self, images: Any = None, text: Any = None, **kwargs: Any) -> Iterator[str]:
        """Yields the new text of one prompt piece by piece as it is generated."""
        timeout = self.call_timeout(kwargs)
        request = self.stream_request(images, text, **kwargs)
        for response in _transport.opened_stream(
            lambda: self.client.multimodal.StreamGenerateFromImage(request, timeout=timeout), self.waiting()
        ):
            yield response.text


class DocumentQuestionAnsweringPipeline(RemotePipeline):
    """`pipe(image, question, word_boxes=...)` or `pipe({"image", "question", "word_boxes"})` (or a list of
    those dicts). Without `word_boxes`, the server reads the page with Tesseract OCR (in `lang`, e.g. "deu"),
    as the local pipeline does."""

    task = "document-question-answering"
    accepted = frozenset({"top_k", "max_answer_len", "handle_impossible_answer", "timeout", "lang"})

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        if "tesseract_config" in kwargs:
            # Arbitrary Tesseract flags from callers would reach a subprocess on the server (config files, output
            # paths): its OCR runs with Tesseract's defaults, and `lang` picks the language.
            raise TypeError("tesseract_config is not sent over gRPC; `lang` picks the OCR language")
        super().check_arguments(kwargs)

    def parse_call(  # type: ignore[override]
        self, image: Any = None, question: str | None = None, word_boxes: Any = None, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        if isinstance(question, str):
            inputs: Any = {"question": question, "image": image}
            if word_boxes is not None:
                inputs["word_boxes"] = word_boxes
        else:
            inputs = image
        return super().parse_call(inputs, **kwargs)

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, dict)

    def method(self) -> Callable[..., Any]:
        return self.client.multimodal.AnswerDocumentQuestion

    def build_request(
        self, inputs: dict[str, Any], kwargs: dict[str, Any]
    ) -> multimodal_pb2.AnswerDocumentQuestionRequest:
        question = multimodal_pb2.DocumentQuestion(question=inputs["question"])
        if inputs.get("image") is not None:
            question.image.CopyFrom(image_input(inputs["image"]))
        for word, box in inputs.get("word_boxes") or []:
            x0, y0, x1, y1 = (int(v) for v in box)
            question.word_boxes.add(word=word, x0=x0, y0=y0, x1=x1, y1=y1)
        request = multimodal_pb2.AnswerDocumentQuestionRequest(
            model=self.model,
            questions=[question],
            handle_impossible_answer=bool(kwargs.get("handle_impossible_answer")),
            ocr_language=kwargs.get("lang") or "",
        )
        for name in ("top_k", "max_answer_len"):
            if kwargs.get(name) is not None:
                setattr(request, name, int(kwargs[name]))
        return request

    def read_results(
        self, response: multimodal_pb2.AnswerDocumentQuestionResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [
            [
                {"score": a.score, "answer": a.answer, "start": a.start, "end": a.end}
                for a in response.results[0].answers
            ]
        ]


PIPELINES: dict[str, type[RemotePipeline]] = {
    cls.task: cls for cls in (ImageTextToTextPipeline, DocumentQuestionAnsweringPipeline)
}
