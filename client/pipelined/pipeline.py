"""transformers-like call semantics over gRPC: one input -> one result, a list -> a list, an iterator -> a
generator (bounded requests in flight, results in input order). Call arguments override the defaults
given to `client.pipeline()` for that call only."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from . import asr, streaming
from .errors import from_rpc_error
from .inputs import audio_input, is_single_audio
from .v1 import speech_pb2

if TYPE_CHECKING:
    from .client import Client

DEFAULT_MAX_IN_FLIGHT = 8


class SpeechRecognitionPipeline:
    """`client.pipeline("automatic-speech-recognition")`."""

    task = asr.TASK

    def __init__(
        self, client: Client, model: str | None, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT, **defaults: Any
    ):
        asr.recognition_config(
            model or "", defaults
        )  # fail at construction on unknown defaults, as transformers does
        self.client = client
        self.model = model or ""
        self.defaults = defaults
        self.max_in_flight = max_in_flight

    def _request(self, inputs: Any, kwargs: dict[str, Any]) -> speech_pb2.RecognizeRequest:
        return speech_pb2.RecognizeRequest(
            config=asr.recognition_config(self.model, kwargs), audio=audio_input(inputs)
        )

    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        merged = {**self.defaults, **kwargs}
        if is_single_audio(inputs):
            return self._one(inputs, merged)
        if isinstance(inputs, list | tuple):
            return list(self._many(inputs, merged))
        if isinstance(inputs, Iterable):
            return self._many(inputs, merged)
        raise TypeError(f"unsupported input of type {type(inputs).__name__}")

    def _one(self, inputs: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self.client.speech.Recognize(
                self._request(inputs, kwargs), timeout=self.client.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return asr.result_dict(response, kwargs)

    def _many(self, inputs: Iterable[Any], kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        pending: deque[Any] = deque()
        try:
            for item in inputs:
                pending.append(
                    self.client.speech.Recognize.future(
                        self._request(item, kwargs), timeout=self.client.timeout
                    )
                )
                if len(pending) >= self.max_in_flight:
                    yield self._result(pending.popleft(), kwargs)
            while pending:
                yield self._result(pending.popleft(), kwargs)
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _result(future: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            return asr.result_dict(future.result(), kwargs)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def stream_file(self, inputs: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Long audio: yields each segment (`text`, `timestamp`, optional `words`) as soon as it is decoded."""
        merged = {**self.defaults, **kwargs}
        request = speech_pb2.StreamingRecognizeFileRequest(
            config=asr.recognition_config(self.model, merged), audio=audio_input(inputs)
        )
        try:
            for response in self.client.speech.StreamingRecognizeFile(request, timeout=self.client.timeout):
                yield asr.segment_dict(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def stream(self, chunks: Iterable[Any], **options: Any) -> Iterator[streaming.StreamingResult]:
        """Live recognition: sends audio chunks as the iterator yields them (a microphone, a file replayed
        at real-time pace, ...) and yields interim and final results and speech events as they arrive.

        Options: `sampling_rate`, `encoding` ("linear16"/"float32"), `channels` (else taken from the
        source), `language`, `task`, `return_timestamps="word"`, `interim_results` (True),
        `speech_events` (True), `min_decode_interval_s` (latency/accuracy knob, 1.0), `vad_threshold`,
        `min_silence_s`, `speech_padding_s`, and the generation options.
        """
        merged = {**{k: v for k, v in self.defaults.items() if k in streaming.RECOGNITION_OPTIONS}, **options}
        first, all_chunks = streaming.split_first(chunks)
        config = streaming.streaming_config(self.model, merged, source=chunks, first=first)
        responses = self.client.speech.StreamingRecognize(
            streaming.requests(config, all_chunks), timeout=self.client.timeout
        )
        try:
            for response in responses:
                yield from streaming.results(response)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            responses.cancel()
