from __future__ import annotations

import gzip
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from slmops.core import Function
from slmops.core.runtime import Runtime, use_runtime
from slmops.core.tracing import RedactingSpanExporter, Tracer
from slmops.errors import ConfigError, StepExecutionError
from slmops.store import Workspace
from slmops.store.redaction import KINDS, Redactor
from slmops.store.settings import Settings, load_settings
from slmops.store.traces import get_trace, list_traces

EMAIL = "jane.doe+ops@example.co.uk"
KEY = "sk-proj-Xy12ab34CD56ef78GH90ij12KL34"
ALL = Redactor(KINDS)


@pytest.fixture(autouse=True)
def _no_redaction_env(monkeypatch):
    monkeypatch.delenv("SLMOPS_REDACT", raising=False)
    monkeypatch.delenv("SLMOPS_REDACT_PATTERNS", raising=False)


# --- patterns -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "bob@example.com",
        EMAIL,
        "first.last@sub.mail-host.io",
        "ünïcode@exämple.de",
    ],
)
def test_emails_are_redacted(text):
    assert ALL.redact(f"write to {text}, thanks") == "write to [REDACTED:email], thanks"


@pytest.mark.parametrize(
    "text",
    [
        "+1 (555) 123-4567",
        "+1-555-123-4567",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "+4915112345678",
        "+49 (0)30 1234567",
        "(555) 123-4567",
        "555-123-4567",
        "555.123.4567",
        "555 123 4567",
        "1-555-123-4567",
        "555-1234",
        "020 7946 0958",
        "(020) 7946 0958",
        "06 12 34 56 78",
        "030 12345678",
    ],
)
def test_phone_numbers_are_redacted(text):
    assert ALL.redact(f"call {text}.") == "call [REDACTED:phone]."


@pytest.mark.parametrize(
    "text",
    [
        "in 2024 we shipped",
        "slmops 0.3.36 is out",
        "due 2026-11-30 at noon",
        "due 2026-11-30T12:00:00Z",
        "on 05.01.2026",
        "host 192.168.100.200",
        "at 1700000000 (unix time)",
        "order 0301234567",
        "paid 1,234,567 dollars",
        "v1.2.3 at 12:30",
        "ISBN 978-0-13-468599-1",
        "zip 12345-6789",
        "pi is 3.14159265",
    ],
)
def test_numbers_dates_and_versions_are_not_phone_numbers(text):
    assert ALL.redact(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (KEY, "[REDACTED:api_key]"),
        ("sk-abc123def456ghi789jkl", "[REDACTED:api_key]"),
        ("sk-ant-api03-abcDEF123456ghiJKL789", "[REDACTED:api_key]"),
        ("pk_live_51Habcdefghij1234", "[REDACTED:api_key]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:api_key]"),
        ("gho_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:api_key]"),
        ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "[REDACTED:api_key]"),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:api_key]"),
        ("AKIAIOSFODNN7EXAMPLE", "[REDACTED:api_key]"),
        ("hf_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:api_key]"),
        ("Zx9Qw3Er5Ty7Ui9Op1As3Df5Gh7Jk9Lz2Xc", "[REDACTED:api_key]"),  # no prefix: long token
        ("Authorization: Bearer abc123.def456-ghi", "Authorization: Bearer [REDACTED:api_key]"),
    ],
)
def test_api_keys_are_redacted(text, expected):
    assert ALL.redact(f"use {text} here") == f"use {expected} here"


@pytest.mark.parametrize(
    "text",
    [
        "0123456789abcdef0123456789abcdef",  # a trace id / uuid4 hex / chunk id
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",  # SHA-256
        "550e8400-e29b-41d4-a716-446655440000",  # a UUID
        "paraphrase-multilingual-MiniLM-L12-v2",  # a model name
        "TheBloke-Mistral-7B-Instruct-v0_2-GGUF-q4_k_m",
        "checkpoint-2024-11-30-epoch-3-step-12000",
        "sk-learn is not a key",
        "Bearer authentication is common",
        "abcdefghijklmnopqrstuvwxyzabcdefghijkl",  # long, but letters only
    ],
)
def test_ids_digests_and_names_are_not_api_keys(text):
    assert ALL.redact(text) == text


def test_only_the_configured_kinds_are_redacted():
    text = f"{EMAIL} / +44 20 7946 0958 / {KEY}"
    assert Redactor(["email"]).redact(text) == f"[REDACTED:email] / +44 20 7946 0958 / {KEY}"
    assert Redactor(["phone", "api_key"]).redact(text) == (
        f"{EMAIL} / [REDACTED:phone] / [REDACTED:api_key]"
    )


def test_custom_patterns_run_first_and_empty_matches_do_nothing():
    redactor = Redactor(["email"], [r"CUST-\d{6}", r"(?i)project\s+falcon", "x*"])
    assert redactor.redact("CUST-123456 on Project  Falcon mailed a@b.io") == (
        "[REDACTED:custom] on [REDACTED:custom] mailed [REDACTED:email]"
    )


def test_redaction_inside_json_text_keeps_it_valid():
    text = json.dumps({"q": f"hi\n{EMAIL}\n555-123-4567\n{KEY}"})
    redacted = ALL.redact(text)
    assert json.loads(redacted) == {
        "q": "hi\n[REDACTED:email]\n[REDACTED:phone]\n[REDACTED:api_key]"
    }
    assert ALL.redact_json(text) == json.dumps(json.loads(redacted))
    unchanged = json.dumps({"n": 2024, "version": "0.3.36"}, separators=(",", ":"))
    assert ALL.redact_json(unchanged) is unchanged  # nothing matched: the text as it was
    assert ALL.redact_json(f"[not json {EMAIL}") == "[not json [REDACTED:email]"
    # a custom pattern anchored to a whole value sees the decoded string, not its quotes
    assert Redactor(patterns=["^secret$"]).redact_json('{"a": "secret"}') == (
        '{"a": "[REDACTED:custom]"}'
    )


def test_nested_values_are_redacted_and_keys_kept():
    value = {
        EMAIL: {"to": [EMAIL, ("call 555-123-4567", 3)], "n": 7, "ok": True, "none": None},
        "key": KEY,
    }
    assert ALL.redact_value(value) == {
        EMAIL: {
            "to": ["[REDACTED:email]", ("call [REDACTED:phone]", 3)],
            "n": 7,
            "ok": True,
            "none": None,
        },
        "key": "[REDACTED:api_key]",
    }
    assert list(ALL.redact_value(value, redact_keys=True)) == ["[REDACTED:email]", "key"]


def test_an_empty_redactor_is_falsy_and_changes_nothing():
    assert not Redactor()
    assert not Redactor.from_settings((), ())
    assert Redactor(["phone"]) and Redactor(patterns=["x"])
    assert Redactor().redact(EMAIL) == EMAIL
    assert Redactor().redact_json(f'"{EMAIL}"') == f'"{EMAIL}"'


def test_bad_configuration_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown redaction kind\(s\) 'ssn'; known: email"):
        Redactor(["email", "ssn"])
    with pytest.raises(ConfigError, match=r"redaction pattern '\(unclosed' is not a valid regex"):
        Redactor.from_settings([], ["ok", "(unclosed"])


# --- settings -----------------------------------------------------------------------------


def test_settings_accept_known_kinds_and_valid_patterns(tmp_path):
    (tmp_path / "config.toml").write_text(
        'redact = ["email", "api_key"]\nredact_patterns = ["CUST-\\\\d+"]\n'
    )
    settings = load_settings(tmp_path)
    assert settings.redact == ("email", "api_key")
    assert settings.redact_patterns == (r"CUST-\d+",)
    assert Settings().redact == () and Settings().redact_patterns == ()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ('redact = ["email", "ssn"]\n', r"redact: .*unknown redaction kind\(s\) 'ssn'.*phone"),
        ('redact = "email"\n', "redact: Input should be a valid tuple"),
        ("redact_patterns = ['a(b']\n", r"redact_patterns: .*'a\(b' is not a valid regex"),
    ],
)
def test_settings_refuse_bad_redaction(tmp_path, config, message):
    (tmp_path / "config.toml").write_text(config)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path)


def test_env_gives_kinds_comma_separated_and_no_patterns(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text('redact = ["email"]\n')
    monkeypatch.setenv("SLMOPS_REDACT", " phone, api_key ,")
    assert load_settings(tmp_path).redact == ("phone", "api_key")
    monkeypatch.setenv("SLMOPS_REDACT", "email,ssn")
    with pytest.raises(ConfigError, match="unknown redaction kind"):
        load_settings(tmp_path)
    monkeypatch.delenv("SLMOPS_REDACT")
    monkeypatch.setenv("SLMOPS_REDACT_PATTERNS", r"CUST-\d+")
    with pytest.raises(ConfigError, match="SLMOPS_REDACT_PATTERNS is not read from the env"):
        load_settings(tmp_path)


# --- traces -------------------------------------------------------------------------------


def echo(text: str) -> str:
    return f"answer for {EMAIL}: use {KEY}"


def fails(text: str) -> str:
    raise ValueError(f"cannot mail {EMAIL}")


def _stored_text(workspace: Workspace, trace_id: str) -> str:
    trace, spans = get_trace(workspace.engine, trace_id)
    return json.dumps([trace, spans], default=str)


def test_stored_traces_are_redacted_end_to_end(tmp_path):
    home = tmp_path / "private"
    home.mkdir()
    (home / "config.toml").write_text('redact = ["email", "api_key"]\n')
    with Workspace.open(home) as workspace:
        runtime = Runtime.from_workspace(workspace)
        assert runtime.tracer.redactor is not None
        with use_runtime(runtime):
            ok = Function(echo).invoke(f"mail {EMAIL} the key {KEY}")
            with pytest.raises(StepExecutionError, match=re.escape(EMAIL)):  # the run is untouched
                Function(fails).invoke(f"mail {EMAIL}")
        runtime.tracer.shutdown()
        assert ok.output == f"answer for {EMAIL}: use {KEY}"
        stored = _stored_text(workspace, ok.trace_id)
        assert EMAIL not in stored and KEY not in stored
        _, [span] = get_trace(workspace.engine, ok.trace_id)
        assert json.loads(span["attributes"]["slmops.input"]) == (
            "mail [REDACTED:email] the key [REDACTED:api_key]"
        )
        assert json.loads(span["attributes"]["slmops.output"]) == (
            "answer for [REDACTED:email]: use [REDACTED:api_key]"
        )
        [failed] = list_traces(workspace.engine, status="error")
        stored = _stored_text(workspace, failed["trace_id"])
        assert EMAIL not in stored and "cannot mail [REDACTED:email]" in stored


def test_without_redaction_traces_keep_the_text(workspace, runtime):
    assert runtime.tracer.redactor is None
    result = Function(echo).invoke(EMAIL)
    assert EMAIL in _stored_text(workspace, result.trace_id)


def test_the_exporter_wrapper_exports_redacted_copies():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(memory, ALL)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "step", attributes={"slmops.input": json.dumps({"q": EMAIL}), "n": 3}
    ) as span:
        span.set_attribute("tags", (KEY, "plain"))
        span.set_attribute("slmops.request_id", "req-" + "a1" * 20)  # an id: left alone
        span.add_event("state", {"note": f"mailed {EMAIL}", "count": 1})
        span.set_status(Status(StatusCode.ERROR, f"failed for {EMAIL}"))
    provider.shutdown()
    [exported] = memory.get_finished_spans()
    assert dict(exported.attributes or {}) == {
        "slmops.input": json.dumps({"q": "[REDACTED:email]"}),
        "n": 3,
        "tags": ("[REDACTED:api_key]", "plain"),
        "slmops.request_id": "req-" + "a1" * 20,
    }
    assert dict(exported.events[0].attributes or {}) == {
        "note": "mailed [REDACTED:email]",
        "count": 1,
    }
    assert exported.status.description == "failed for [REDACTED:email]"
    assert exported.name == "step" and exported.context == span.get_span_context()


class _Collector(BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


def test_spans_exported_over_otlp_are_redacted():
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        tracer = Tracer(
            otlp_endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces",
            redactor=Redactor(["email", "api_key"]),
        )
        with use_runtime(Runtime(tracer=tracer)):
            Function(echo).run(f"mail {EMAIL}")
        tracer.shutdown()  # flushes the batch processor
    finally:
        server.shutdown()
    body = b"".join(_Collector.received)
    assert b"[REDACTED:email]" in body and b"[REDACTED:api_key]" in body
    assert EMAIL.encode() not in body and KEY.encode() not in body
