"""asyncio twin of automatic-speech-recognition: the remote-pipeline twin (`await pipe(x)`,
`pipe.iterate(xs)`), plus `async for r in pipe.stream_file(x)` and live `pipe.stream(chunks)`."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from .. import _transport, streaming
from ..pipelines.speech import SpeechRecognitionPipeline
from ..v1 import speech_pb2
from ..wire.speech import segment_dict
from .base import AsyncPipeline, threaded


class AsyncSpeechRecognitionPipeline(AsyncPipeline):
    sync: SpeechRecognitionPipeline

    async def stream_file(self, inputs: Any, **kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        """Long audio: yields each segment as soon as it is decoded."""
        client = self.sync.client
        timeout = self.sync.call_timeout(kwargs)
        request = self.sync.stream_file_request(inputs, kwargs)
        async for response in _transport.aopened_stream(
            lambda: client.speech.StreamingRecognizeFile(request, timeout=timeout), self.sync.waiting()
        ):
            yield segment_dict(response)

    async def stream(
        self, chunks: Iterable[Any] | AsyncIterable[Any], *, deadline_s: float | None = None, **options: Any
    ) -> AsyncIterator[streaming.StreamingResult]:
        """Live recognition (see the synchronous `stream`); `chunks` may be sync or async. A sync iterator
        is read on a worker thread, so sources that pace themselves (FileSource, MicrophoneSource) do not
        block the event loop."""
        iterator = chunks.__aiter__() if isinstance(chunks, AsyncIterable) else threaded(chunks)
        first = await anext(iterator, None)
        config = streaming.streaming_config(
            self.sync.model, self.sync.stream_options(options), source=chunks, first=first
        )

        async def requests() -> AsyncIterator[speech_pb2.StreamingRecognizeRequest]:
            yield speech_pb2.StreamingRecognizeRequest(streaming_config=config)
            if first is None:
                return
            encoding = config.audio_format.encoding
            yield speech_pb2.StreamingRecognizeRequest(audio=streaming.chunk_bytes(first, encoding))
            async for chunk in iterator:
                yield speech_pb2.StreamingRecognizeRequest(audio=streaming.chunk_bytes(chunk, encoding))

        client = self.sync.client
        # A live stream lasts as long as its audio: the client's per-call timeout is not its deadline.
        async for response in _transport.astream(
            client.speech.StreamingRecognize(requests(), timeout=deadline_s)
        ):
            for result in streaming.results(response):
                yield result
