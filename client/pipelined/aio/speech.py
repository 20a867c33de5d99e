"""asyncio twin of automatic-speech-recognition: the remote-pipeline twin (`await pipe(x)`,
`pipe.iterate(xs)`), plus `async for r in pipe.stream_file(x)` and live `pipe.stream(chunks)`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

from .. import _transport, streaming
from ..errors import StreamInterrupted, Unavailable
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
        self,
        chunks: Iterable[Any] | AsyncIterable[Any],
        *,
        deadline_s: float | None = None,
        reconnect: int = 0,
        **options: Any,
    ) -> AsyncIterator[streaming.StreamingResult]:
        """Live recognition (see the synchronous `stream`, `reconnect` included); `chunks` may be sync
        or async. A sync iterator is read on a worker thread, so sources that pace themselves
        (FileSource, MicrophoneSource) do not block the event loop."""
        iterator = chunks.__aiter__() if isinstance(chunks, AsyncIterable) else threaded(chunks)
        first = await anext(iterator, None)
        config = streaming.streaming_config(
            self.sync.model, self.sync.stream_options(options), source=chunks, first=first
        )
        config.admission_response = True

        async def audio() -> AsyncIterator[Any]:
            if first is None:
                return
            yield first
            async for chunk in iterator:
                yield chunk

        replay = streaming.ReplayBuffer(config, audio())

        admitted, ended = asyncio.Event(), asyncio.Event()

        async def requests() -> AsyncIterator[speech_pb2.StreamingRecognizeRequest]:
            yield speech_pb2.StreamingRecognizeRequest(streaming_config=config)
            # Audio waits for the server's first response, which says the stream was admitted: with grpc's
            # asyncio client, a write in flight when a refusal ends the call turns the refusal into INTERNAL
            # "Internal error from Core", losing its status and retry hint. A server older than
            # `admission_response` sends none before audio: after ADMISSION_WAIT_S the audio goes anyway.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(admitted.wait(), streaming.ADMISSION_WAIT_S)
            if ended.is_set():
                return
            async for data in replay.achunks():
                yield speech_pb2.StreamingRecognizeRequest(audio=data)

        client = self.sync.client
        for attempt in range(reconnect + 1):
            offset = replay.resume_offset_s()
            admitted.clear()
            ended.clear()
            try:
                # A live stream lasts as long as its audio: the client's per-call timeout is not its deadline.
                async for response in _transport.astream(
                    client.speech.StreamingRecognize(requests(), timeout=deadline_s)
                ):
                    admitted.set()
                    for result in streaming.resumed_results(response, replay, offset):
                        yield result
                return
            except Unavailable as error:
                if attempt == reconnect:
                    raise StreamInterrupted(error.message, replay.resume_offset_s()) from None
            finally:
                # Ended before its first response (refused): the held-back audio is never sent.
                ended.set()
                admitted.set()
            await asyncio.sleep(min(0.25 * 2**attempt, 4.0))
