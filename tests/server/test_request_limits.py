"""The per-request bounds shared by the typed adapters and the generic call (config `limits`)."""

from __future__ import annotations

import pytest
from pipelined_server.config import InputLimits
from pipelined_server.errors import InvalidInput
from pipelined_server.tasks.checks import check_chunking, check_generation, check_template
from pipelined_server.tasks.generic_parameters import allowed_parameters, check_parameters

LIMITS = InputLimits()


@pytest.mark.parametrize("template", ["This is {}.", "{}", "Label: {} !"])
def test_templates_with_one_placeholder_pass(template: str) -> None:
    check_template(template)
    assert template.format("x")  # what the pipeline does with it


@pytest.mark.parametrize(
    "template", ["{{}}{:>100000000}", "{0}", "{x.y}", "{} {}", "{}}", "{{}}", "none", "{!r}", "{:>9}"]
)
def test_templates_that_format_would_expand_are_refused(template: str) -> None:
    with pytest.raises(InvalidInput, match="exactly one"):
        check_template(template)


def test_chunking_bounds() -> None:
    check_chunking(30, None, LIMITS)
    check_chunking(1.0, 0.25, LIMITS)
    check_chunking(2.0, [0.5, 0.5], LIMITS)
    for chunk, stride, needle in [
        (0.01, None, "min_chunk_length_s"),
        (1.0, 0.3, "min_chunk_step_s"),
        (2.0, [1.0, 0.8], "min_chunk_step_s"),
        (float("nan"), None, "non-negative"),
        ("1", None, "non-negative"),
    ]:
        with pytest.raises(InvalidInput, match=needle):
            check_chunking(chunk, stride, LIMITS)


def test_generation_bounds_name_the_limit() -> None:
    check_generation({"max_new_tokens": LIMITS.max_new_tokens, "num_beams": 2}, LIMITS)
    for kwargs, needle in [
        ({"max_new_tokens": LIMITS.max_new_tokens + 1}, "limits.max_new_tokens"),
        ({"num_beams": 1000}, "limits.max_num_beams"),
        ({"num_return_sequences": 100}, "limits.max_num_return_sequences"),
        ({"num_beams": 2.5}, "integer"),
        ({"num_beams": True}, "integer"),
        ({"num_beams": 2, "num_return_sequences": 3}, "<= num_beams"),
    ]:
        with pytest.raises(InvalidInput, match=needle):
            check_generation(kwargs, LIMITS)


def test_generic_parameters_come_from_an_allow_list() -> None:
    assert "num_workers" not in allowed_parameters("feature-extraction")
    assert {"sequential", "truncation"} <= allowed_parameters("table-question-answering")
    check_parameters({"generate_kwargs": {"max_new_tokens": 4}}, "automatic-speech-recognition", LIMITS)
    for params, task, needle in [
        ({"num_workers": 4}, "feature-extraction", "num_workers"),
        ({"device": "cuda"}, "text-classification", "device"),
        ({"generate_kwargs": {"max_length": 10**9}}, "automatic-speech-recognition", "max_length"),
        ({"generate_kwargs": {"num_beams": 99}}, "automatic-speech-recognition", "max_num_beams"),
        ({"chunk_length_s": 0.01}, "automatic-speech-recognition", "min_chunk_length_s"),
        ({"candidate_labels": [str(i) for i in range(999)]}, "zero-shot-classification", "max_candidate"),
        ({"hypothesis_template": "{:>99}"}, "zero-shot-classification", "exactly one"),
        ({"batch_size": 10**6}, "text-classification", "max_batch_size"),
    ]:
        with pytest.raises(InvalidInput, match=needle):
            check_parameters(params, task, LIMITS)


def test_limits_that_admit_nothing_fail_at_start() -> None:
    with pytest.raises(ValueError, match="max_num_beams"):
        InputLimits(max_num_beams=0)
    with pytest.raises(ValueError, match="in_flight"):
        InputLimits(max_decoded_bytes_per_request=10, max_decoded_bytes_in_flight=5)
