"""SpeechService: Recognize is the shared unary path (unary.py) with the ASR adapter (tasks/asr.py); file
streaming decodes window by window (tasks/asr_longform.py), live streams run a session (streaming/)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc
from pipelined.v1 import speech_pb2, speech_pb2_grpc

from ..errors import DeadlineExpired, ModelNotReady, OutOfRange, QueueFull
from ..registry import ModelInstance
from ..streaming import calibration, relay
from ..streaming.admission import Admission
from ..streaming.options import stream_options
from ..streaming.session import IdleGuard, StreamSession, read_config
from ..streaming.streams import ActiveStreams, Slot
from ..tasks import asr
from ..tasks.asr_longform import segment_stream
from ..tasks.audio_input import decode_audio_input
from ..workers import usable_cores
from .calls import DEADLINE_SLACK_S, CallInfo, ServerState, _dropped, _ended_early, rpc
from .unary import Servicer

log = logging.getLogger(__name__)


class SpeechServicer(Servicer, speech_pb2_grpc.SpeechServiceServicer):
    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        limits = state.config.streaming
        self.streams = ActiveStreams(
            limits.max_streams, limits.max_streams_per_peer, state.metrics, on_closed=self._stream_closed
        )
        siblings = state.siblings
        self.admission = Admission(
            limits.admission_max_utilization,
            limits.max_streams,
            state.metrics,
            publish=siblings.publish if siblings is not None else None,
            # The machine's cores, split between the workers that share them.
            cores=usable_cores() / (siblings.count if siblings is not None else 1),
        )
        state.registry.warm_ups.append(self._calibrate)

    def _stream_closed(self, model: str) -> None:
        """A closed stream frees its headroom now, not at the next audio of another (siblings read it)."""
        instance = self.state.registry.instances.get(model)
        if instance is not None and instance.scheduler is not None:
            self.admission.observe(instance, self.streams.by_model[model])

    async def _calibrate(self, instance: ModelInstance) -> None:
        """A speech model's live-stream cost, measured before it serves (streaming/calibration.py) unless
        streaming.calibrate is off; its stream headroom shows from then on."""
        config = self.state.config
        if instance.spec.task != asr.TASK:
            return
        options = calibration.default_options(instance, config.streaming, config.limits)
        if options is None:  # a model that serves no live stream
            return
        share = None
        try:
            if config.streaming.calibrate:
                share = await calibration.stream_share(instance, options, config.streaming)
        finally:
            self.admission.calibrated(instance, share)

    def _model(self, config: speech_pb2.RecognitionConfig, call: CallInfo) -> ModelInstance:
        instance = self.state.registry.ready(config.model, asr.TASK)
        call.model = instance.name
        return instance

    @rpc(asr.TASK)
    async def Recognize(
        self, request: speech_pb2.RecognizeRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> speech_pb2.RecognizeResponse:
        return await self.unary(asr.ADAPTER, request, context, call)

    async def _relay(
        self,
        sibling: int,
        first: speech_pb2.StreamingRecognizeRequest,
        guard: IdleGuard,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
        slot: Slot,
        refusal: QueueFull,
    ) -> AsyncIterator[speech_pb2.StreamingRecognizeResponse]:
        """A stream this worker cannot admit, carried on by sibling worker `sibling` (streaming/relay.py)."""
        siblings = self.state.siblings
        assert siblings is not None
        handler = asyncio.current_task()
        assert handler is not None
        idle_timeout_s = self.state.config.streaming.idle_timeout_s

        def taken() -> None:  # from here the sibling counts the stream and records the call
            call.recorded_elsewhere = True
            slot.relayed()
            self.state.metrics.streams_relayed.labels(call.model).inc()

        def drop() -> None:
            _dropped(
                context,
                DeadlineExpired(
                    f"a response of this relayed stream waited {idle_timeout_s:g} s for its client to read "
                    "it (streaming.idle_timeout_s): dropped"
                ),
            )
            handler.cancel()

        relayed = siblings.carry(
            sibling,
            first,
            guard,
            metadata=context.invocation_metadata() or (),
            peer=call.peer,
            timeout_s=context.time_remaining(),
            idle_timeout_s=idle_timeout_s,
            on_taken=taken,
            drop=drop,
        )
        try:
            async for response in relayed:
                yield response
        except relay.NotTaken as error:
            # It went away (or began to drain) since it published its headroom.
            log.warning("%s; the stream is refused", error)
            raise refusal from None
        if guard.drained:
            raise ModelNotReady(
                "the server is shutting down: this stream's audio so far was transcribed; reconnect"
            )

    @rpc(asr.TASK)
    async def StreamingRecognizeFile(
        self,
        request: speech_pb2.StreamingRecognizeFileRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
        instance = self._model(request.config, call)
        kwargs = asr.call_kwargs(request.config, asr.model_kind(instance), self.state.config.limits)
        assert instance.scheduler is not None
        instance.scheduler.ensure_room(1)  # a full queue refuses before the audio is decoded
        samples = await asyncio.to_thread(
            decode_audio_input, request.audio, instance.sampling_rate, self.state.config.audio
        )
        async for response in segment_stream(instance, samples, kwargs, context.time_remaining):
            yield response

    @rpc(asr.TASK)
    async def StreamingRecognize(
        self,
        requests: AsyncIterator[speech_pb2.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> AsyncIterator[speech_pb2.StreamingRecognizeResponse]:
        limits = self.state.config.streaming
        # Headers first, before any refusal: a client whose channel may retry (the SDK's) buffers what it
        # sends until the call is committed by the server's headers; a refusal arriving on an uncommitted
        # call failed the buffered sends, and the client saw INTERNAL "Internal error from Core" instead
        # of RESOURCE_EXHAUSTED and its retry hint (48 of 150 refused streams on an idle machine; none
        # with this; under load some still do: the client's write racing the refusal, an open defect).
        # A stream relayed by a sibling worker says at once that this worker took it (streaming/relay.py).
        await context.send_initial_metadata(((relay.TAKEN_KEY, "1"),) if call.relayed else ())
        guard = IdleGuard(requests, limits.idle_timeout_s, self.state.drain_started)
        # The slot is held from the start: streams still waiting for their config count too.
        with self.streams.open(call.peer, lambda: _ended_early(context)) as slot:
            first = await read_config(guard)
            config = first.streaming_config
            instance = self._model(config.config, call)
            options = stream_options(config, instance, self.state.config.limits, limits)
            try:
                self.admission.admit(instance, self.streams.by_model[instance.name])
            except QueueFull as refusal:
                siblings = self.state.siblings
                sibling = None if call.relayed or siblings is None else siblings.pick(instance.name)
                if sibling is None:
                    raise
                async for response in self._relay(sibling, first, guard, context, call, slot, refusal):
                    yield response
                return
            slot.name(instance.name)
            if config.admission_response:
                # A client that holds its audio back until this response (the SDK's asyncio client) never
                # has a write in flight when a refusal ends the call; one that does may see grpc's INTERNAL
                # "Internal error from Core" instead of the refusal and its retry hint (280 of 2,271
                # refusals in bench/soak.py before this).
                yield speech_pb2.StreamingRecognizeResponse(model=instance.name)
            session = StreamSession(
                instance,
                options,
                limits,
                self.state.config.audio,
                self.state.metrics,
                on_audio=lambda seconds: self.admission.received(
                    instance, seconds, self.streams.by_model[instance.name]
                ),
                on_dropped=lambda error: _dropped(context, error),
            )
            async for response in session.run(guard):
                yield response
            # At the caller's deadline (deadline_s) the request stream may end as a half-close does; the
            # stream ended there, not because the client was done (it was counted OK).
            remaining = context.time_remaining()
            if remaining is not None and remaining <= DEADLINE_SLACK_S:
                raise DeadlineExpired(
                    "the stream's deadline passed (deadline_s); its audio so far was transcribed"
                )
            if guard.drained:
                raise ModelNotReady(
                    "the server is shutting down: this stream's audio so far was transcribed; reconnect"
                )
            if session.duration_reached:
                raise OutOfRange(
                    f"the stream reached streaming.max_stream_duration_s={limits.max_stream_duration_s:g} s: "
                    "its audio up to there was transcribed; open a new stream to go on"
                )
