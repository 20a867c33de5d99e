"""asyncio twin of pipelined.pipeline: `await pipe(x)`, `async for r in pipe.stream_file(x)`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from .. import asr
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


async def _aiter(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(inputs, AsyncIterable):
        async for item in inputs:
            yield item
    else:
        for item in inputs:
            yield item
