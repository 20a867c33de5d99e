"""audio-classification, zero-shot-audio-classification and text-to-audio over gRPC, with the local
pipelines' results: score dicts, and {"audio": float32 numpy array, "sampling_rate": int}.

Generated audio travels as 16-bit PCM WAV, so samples equal the local pipeline's within 1/32767 (values
outside [-1, 1] are clipped)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..v1 import audio_tasks_pb2
from ..wire.audio import audio_input, decode_wav, is_single_audio
from ..wire.labels import label_scores, logit_function
from .base import RemotePipeline


class AudioClassificationPipeline(RemotePipeline):
    task = "audio-classification"
    accepted = frozenset({"top_k", "function_to_apply"})

    def is_single(self, inputs: Any) -> bool:
        return is_single_audio(inputs)

    def method(self) -> Callable[..., Any]:
        return self.client.audio_tasks.ClassifyAudio

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> audio_tasks_pb2.ClassifyAudioRequest:
        request = audio_tasks_pb2.ClassifyAudioRequest(
            model=self.model,
            audios=[audio_input(inputs)],
            function_to_apply=logit_function(kwargs.get("function_to_apply")),
        )
        if kwargs.get("top_k") is not None:
            request.top_k = int(kwargs["top_k"])
        return request

    def read_results(
        self, response: audio_tasks_pb2.ClassifyAudioResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [label_scores(response.results[0], score_first=True)]


class ZeroShotAudioClassificationPipeline(AudioClassificationPipeline):
    task = "zero-shot-audio-classification"
    accepted = frozenset({"candidate_labels", "hypothesis_template"})

    def method(self) -> Callable[..., Any]:
        return self.client.audio_tasks.ClassifyAudioZeroShot

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> Any:
        labels = kwargs.get("candidate_labels") or []
        return audio_tasks_pb2.ClassifyAudioZeroShotRequest(
            model=self.model,
            audios=[audio_input(inputs)],
            candidate_labels=[labels] if isinstance(labels, str) else list(labels),
            hypothesis_template=kwargs.get("hypothesis_template") or "",
        )


_GENERATION = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "guidance_scale")


class TextToAudioPipeline(RemotePipeline):
    """`generate_kwargs` (and `forward_params` holding only generation options) map to DecodingOptions and guidance_scale."""

    task = "text-to-audio"
    accepted = frozenset({"generate_kwargs", "forward_params"})

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str)

    def method(self) -> Callable[..., Any]:
        return self.client.audio_tasks.GenerateAudio

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> audio_tasks_pb2.GenerateAudioRequest:
        options = {**(kwargs.get("forward_params") or {}), **(kwargs.get("generate_kwargs") or {})}
        unknown = set(options) - set(_GENERATION)
        if unknown:
            raise TypeError(
                f"unsupported text-to-audio generation option(s) over gRPC: {', '.join(sorted(unknown))}"
            )
        request = audio_tasks_pb2.GenerateAudioRequest(model=self.model, texts=[inputs])
        for name, value in options.items():
            setattr(request if name == "guidance_scale" else request.generation, name, value)
        return request

    def read_results(
        self, response: audio_tasks_pb2.GenerateAudioResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        clip = response.results[0]
        return [{"audio": decode_wav(clip.wav, list(clip.shape)), "sampling_rate": clip.sampling_rate_hertz}]


PIPELINES: dict[str, type[RemotePipeline]] = {
    cls.task: cls
    for cls in (AudioClassificationPipeline, ZeroShotAudioClassificationPipeline, TextToAudioPipeline)
}
