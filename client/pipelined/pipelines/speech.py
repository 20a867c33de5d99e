"""automatic-speech-recognition over gRPC: the shared call semantics of RemotePipeline (one clip -> a dict, a
list -> a list, an iterator -> a generator with bounded requests in flight, results in input order), plus
long-audio segment streaming and live streaming."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from .. import _transport, streaming
from ..errors import StreamInterrupted, Unavailable
from ..v1 import speech_pb2
from ..wire import speech as asr
from ..wire.audio import audio_input, is_single_audio
from .base import RemotePipeline


class SpeechRecognitionPipeline(RemotePipeline):
    """`client.pipeline("automatic-speech-recognition")`."""

    task = asr.TASK
    accepted = frozenset(asr.KNOWN)

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        # Also rejects bad values (an unknown task, uneven strides) before anything is sent.
        asr.clip_config(self.model, kwargs)

    def method(self) -> Any:
        return self.client.speech.Recognize

    def is_single(self, inputs: Any) -> bool:
        return is_single_audio(inputs)

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> speech_pb2.RecognizeRequest:
        return speech_pb2.RecognizeRequest(
            config=asr.clip_config(self.model, kwargs), audio=audio_input(inputs)
        )

    def read_results(self, response: Any, inputs: Any, kwargs: dict[str, Any]) -> list[Any]:
        return [asr.result_dict(response, kwargs)]

    def stream_file_request(
        self, inputs: Any, kwargs: dict[str, Any]
    ) -> speech_pb2.StreamingRecognizeFileRequest:
        # The pipeline's clip-only defaults (chunking, batching) have no use here; this call's own are refused.
        merged = {**{k: v for k, v in self.defaults.items() if k not in asr.CLIP_ONLY}, **kwargs}
        return speech_pb2.StreamingRecognizeFileRequest(
            config=asr.recognition_config(self.model, merged), audio=audio_input(inputs)
        )

    def stream_file(self, inputs: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Long audio: yields each segment (`text`, `timestamp`, optional `words`) as soon as it is decoded."""
        timeout = self.call_timeout(kwargs)
        request = self.stream_file_request(inputs, kwargs)
        for response in _transport.opened_stream(
            lambda: self.client.speech.StreamingRecognizeFile(request, timeout=timeout), self.waiting()
        ):
            yield asr.segment_dict(response)

    def stream_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The live-stream options: the recognition defaults, overridden by this call's."""
        return {**{k: v for k, v in self.defaults.items() if k in streaming.RECOGNITION_OPTIONS}, **options}

    def stream(
        self,
        chunks: Iterable[Any],
        *,
        deadline_s: float | None = None,
        reconnect: int = 0,
        **options: Any,
    ) -> Iterator[streaming.StreamingResult]:
        """Live recognition: sends audio chunks as the iterator yields them (a microphone, a file replayed
        at real-time pace, ...) and yields interim and final results and speech events as they arrive.

        Options: `sampling_rate`, `encoding` ("linear16"/"float32"), `channels` (else taken from the
        source), `language`, `task`, `return_timestamps="word"`, `interim_results` (True),
        `speech_events` (True), `min_decode_interval_s` (latency/compute knob; unset: 1 s, and 0.5 s
        while the server's model is idle), `vad_threshold`,
        `min_silence_s`, `speech_padding_s`, and the generation options. `deadline_s` bounds the whole
        stream (none by default: the client's per-call timeout does not apply to live audio).

        A stream whose server goes away raises `StreamInterrupted` (never retried silently). With
        `reconnect=N` it is resumed up to N times instead: a new stream (on another server of the
        target, when it has several) starts from the end of the last final result, the audio since then
        is sent again, and times keep counting from the start of the first stream.
        """
        merged = self.stream_options(options)
        first, all_chunks = streaming.split_first(chunks)
        config = streaming.streaming_config(self.model, merged, source=chunks, first=first)
        replay = streaming.ReplayBuffer(config, all_chunks)
        for attempt in range(reconnect + 1):
            offset = replay.resume_offset_s()
            responses = self.client.speech.StreamingRecognize(
                # A live stream lasts as long as its audio (hours): the client's per-call timeout is not its deadline.
                streaming.requests(config, replay.chunks()),
                timeout=deadline_s,
            )
            try:
                for response in _transport.stream(responses):
                    yield from streaming.resumed_results(response, replay, offset)
                return
            except Unavailable as error:
                if attempt == reconnect:
                    raise StreamInterrupted(error.message, replay.resume_offset_s()) from None
            # A server restarting in place needs a moment; another replica is picked at once.
            time.sleep(min(0.25 * 2**attempt, 4.0))
