"""The tls, auth, grpc and logging sections: parsed, checked with key paths, merged with flags, and turned
into the gRPC server's channel options."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from pipelined_server.app import server_options
from pipelined_server.cli import build_config, parse_args
from pipelined_server.config import check_files, parse_config
from pipelined_server.errors import ConfigError
from pipelined_server.logs import JsonFormatter, request_id

MODEL = {"name": "a", "source": "embedded:whisper-tiny.en"}


def test_sections_and_their_defaults() -> None:
    config = parse_config(
        {
            "models": [MODEL],
            "tls": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
            "auth": {"tokens_file": "tokens.yaml"},
            "grpc": {"max_connection_age_s": 60, "max_concurrent_rpcs": 10},
            "logging": {"format": "json"},
        }
    )
    assert config.tls.enabled and config.tls.client_ca_file == "ca.pem"
    assert config.grpc.max_connection_age_s == 60 and config.grpc.keepalive_time_s == 60
    assert config.logging.format == "json" and config.logging.access_log
    plain = parse_config({"models": [MODEL]})
    assert not plain.tls.enabled and not plain.auth.tokens_file


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"tls": {"cert_file": "s.pem"}}, "tls.key_file"),
        ({"tls": {"client_ca_file": "ca.pem"}}, "tls.client_ca_file"),
        ({"tls": {"cert": "s.pem"}}, "tls.cert"),
        ({"grpc": {"max_connection_age_s": -1}}, "grpc.max_connection_age_s"),
        ({"grpc": {"keepalive_time_s": 0}}, "grpc.keepalive_time_s"),
        ({"grpc": {"max_concurrent_streams": 0}}, "grpc.max_concurrent_streams"),
        ({"logging": {"format": "xml"}}, "logging.format"),
        ({"auth": {"tokens": "x"}}, "auth.tokens"),
    ],
)
def test_bad_sections_name_the_key(section: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        parse_config({"models": [MODEL], **section})


def test_missing_files_are_refused_at_start(tmp_path: Path) -> None:
    cert = tmp_path / "s.pem"
    cert.write_text("x")
    config = parse_config(
        {"models": [MODEL], "tls": {"cert_file": str(cert), "key_file": str(tmp_path / "nope.key")}}
    )
    with pytest.raises(ConfigError, match=r"tls\.key_file: no such file"):
        check_files(config)


def test_flags_set_keys_of_the_files_sections(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(
        "models: [{name: a, source: 'embedded:whisper-tiny.en'}]\n"
        "tls: {cert_file: file.pem, key_file: file.key, client_ca_file: ca.pem}\n"
    )
    args = parse_args(["--config", str(file), "--tls-cert", "flag.pem", "--tls-key", "flag.key"])
    args.auth_tokens_file = "t.yaml"
    config = build_config(args, environ={})
    assert (config.tls.cert_file, config.tls.key_file, config.tls.client_ca_file) == (
        "flag.pem",
        "flag.key",
        "ca.pem",
    )
    assert config.auth.tokens_file == "t.yaml"
    env = build_config(
        parse_args(["--config", str(file)]), environ={"PIPELINED_GRPC__MAX_CONNECTION_AGE_S": "30"}
    )
    assert env.grpc.max_connection_age_s == 30


def test_server_options_follow_the_grpc_section() -> None:
    config = parse_config(
        {
            "models": [MODEL],
            "grpc": {"max_connection_age_s": 30, "max_connection_age_grace_s": 5, "max_connection_idle_s": 0},
        }
    )
    options = dict(server_options(config))
    assert options["grpc.max_connection_age_ms"] == 30_000
    assert options["grpc.max_connection_age_grace_ms"] == 5_000
    assert "grpc.max_connection_idle_ms" not in options  # 0: never
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    # Past the per-connection limit calls are reset (UNAVAILABLE to the client): the server-wide limit,
    # which answers RESOURCE_EXHAUSTED, must come first.
    assert options["grpc.max_concurrent_streams"] == 4096 > config.grpc.max_concurrent_rpcs
    # The SDK's keepalive stays within the server's enforcement.
    from pipelined._channel import KEEPALIVE_OPTIONS

    assert (
        dict(KEEPALIVE_OPTIONS)["grpc.keepalive_time_ms"]
        >= options["grpc.http2.min_ping_interval_without_data_ms"]
    )


def test_request_ids_are_echoed_only_when_plain() -> None:
    assert request_id((("x-request-id", "abc-123"),)) == "abc-123"
    for bad in ("a b", "x" * 65, "line\nbreak", ""):
        made = request_id((("x-request-id", bad),))
        assert made != bad and len(made) == 32


def test_json_log_lines() -> None:
    record = logging.LogRecord("pipelined.access", logging.INFO, "", 0, "m", (), None)
    record.access = {"method": "Recognize", "status": "OK"}
    line = json.loads(JsonFormatter().format(record))
    assert line["method"] == "Recognize" and line["status"] == "OK" and line["level"] == "INFO"
