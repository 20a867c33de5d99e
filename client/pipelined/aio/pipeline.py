"""asyncio twin of pipelined.pipeline: `await pipe(x)`, `async for r in pipe.stream_file(x)`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from .. import asr, streaming
from ..errors import from_rpc_error
from ..inputs import audio_input, is_single_audio
from ..pipeline import DEFAULT_MAX_IN_FLIGHT
from ..v1 import speech_pb2

if TYPE_CHECKING:
    from .client import Client


class SpeechRecognitionPipeline:
    task = asr.TASK

    def __init__(
        self, client: Client, model: str | None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, **defaults: Any
    ):
        asr.recognition_config(model or "", defaults)
        self.client = client
        self.model = model or ""
        self.defaults = defaults
        self.max_in_flight = max_in_flight

    async def _one(self, inputs: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        request = speech_pb2.RecognizeRequest(
            config=asr.recognition_config(self.model, kwargs), audio=audio_input(inputs)
        )
        try:
            response = await self.client.speech.Recognize(request, timeout=self.client.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return asr.result_dict(response, kwargs)

    async def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        """One clip -> a dict; a list -> a list (in order, at most `max_in_flight` requests at once)."""
        merged = {**self.defaults, **kwargs}
        if is_single_audio(inputs):
            return await self._one(inputs, merged)
        return [result async for result in self.iterate(inputs, **kwargs)]

    async def iterate(
        self, inputs: Iterable[Any] | AsyncIterable[Any], **kwargs: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Results of a (possibly async) iterable of clips, in input order."""
        merged = {**self.defaults, **kwargs}
        pending: list[asyncio.Task[dict[str, Any]]] = []
        try:
            async for item in _aiter(inputs):
                pending.append(asyncio.ensure_future(self._one(item, merged)))
                if len(pending) >= self.max_in_flight:
                    yield await pending.pop(0)
            while pending:
                yield await pending.pop(0)
        finally:
            for task in pending:
                task.cancel()

    async def stream_file(self, inputs: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        merged = {**self.defaults, **kwargs}
        request = speech_pb2.StreamingRecognizeFileRequest(
            config=asr.recognition_config(self.model, merged), audio=audio_input(inputs)
        )
        try:
            async for response in self.client.speech.StreamingRecognizeFile(
                request, timeout=self.client.timeout
            ):
                yield asr.segment_dict(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def stream(
        self, chunks: Iterable[Any] | AsyncIterable[Any], **options: Any
    ) -> AsyncIterator[streaming.StreamingResult]:
        """Live recognition (see the synchronous `stream`); `chunks` may be sync or async. A sync iterator
        is read on a worker thread, so sources that pace themselves (FileSource, MicrophoneSource) do not
        block the event loop."""
        merged = {**{k: v for k, v in self.defaults.items() if k in streaming.RECOGNITION_OPTIONS}, **options}
        iterator = _threaded(chunks) if not isinstance(chunks, AsyncIterable) else chunks.__aiter__()
        first = await anext(iterator, None)
        config = streaming.streaming_config(self.model, merged, source=chunks, first=first)

        async def requests() -> AsyncIterator[speech_pb2.StreamingRecognizeRequest]:
            yield speech_pb2.StreamingRecognizeRequest(streaming_config=config)
            if first is None:
                return
            encoding = config.audio_format.encoding
            yield speech_pb2.StreamingRecognizeRequest(audio=streaming.chunk_bytes(first, encoding))
            async for chunk in iterator:
                yield speech_pb2.StreamingRecognizeRequest(audio=streaming.chunk_bytes(chunk, encoding))

        call = self.client.speech.StreamingRecognize(requests(), timeout=self.client.timeout)
        try:
            async for response in call:
                for result in streaming.results(response):
                    yield result
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()


async def _threaded(chunks: Iterable[Any]) -> AsyncIterator[Any]:
    iterator = iter(chunks)
    done = object()
    while (item := await asyncio.to_thread(next, iterator, done)) is not done:
        yield item


async def _aiter(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item
