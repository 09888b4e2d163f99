"""Alert rules: parsing, storage, the ok -> pending -> firing -> ok machine, and delivery
to a real HTTP receiver on loopback."""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from slmops.errors import ConfigError, NotFoundError
from slmops.monitor.alerts import (
    AlertRuleError,
    Notifier,
    add_rule,
    evaluate_rules,
    format_duration,
    get_rule,
    list_events,
    list_rules,
    parse_duration,
    parse_rule,
    remove_rule,
    validate_notify,
)
from slmops.store import Workspace

FIGURES = {"refusal_rate", "p95_latency_ms", "faithfulness", "query_embedding_mmd", "error_rate"}
T0 = 1_700_000_000.0
MIN = 60.0


# --- helpers ------------------------------------------------------------------------------


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records the JSON bodies POSTed to it."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"webhook:http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(200)
    yield server
    server.close()


@pytest.fixture
def failing_receiver() -> Iterator[Receiver]:
    server = Receiver(500)
    yield server
    server.close()


class Figures:
    """A fake figure_of: values set per (stack, figure); records each call."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], float | None] = {}
        self.calls: list[tuple[str, str, float, float]] = []

    def set(self, figure: str, value: float | None, stack: str = "qa") -> None:
        self.values[(stack, figure)] = value

    def __call__(self, stack: str, figure: str, window_s: float, now: float) -> float | None:
        self.calls.append((stack, figure, window_s, now))
        return self.values.get((stack, figure))


@pytest.fixture
def notifier() -> Notifier:
    return Notifier(backoff_s=0.01)


def state_of(workspace: Workspace, rule_id: int) -> tuple[str, float | None]:
    rule = get_rule(workspace.engine, rule_id)
    return rule["state"], rule["since"]


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "figure", "op", "threshold", "for_s", "window_s"),
    [
        ("refusal_rate > 0.5 for 15m", "refusal_rate", ">", 0.5, 900, 900),
        ("p95_latency_ms >= 4000", "p95_latency_ms", ">=", 4000, 0, 900),
        ("faithfulness < 0.6 for 30m over 1h", "faithfulness", "<", 0.6, 1800, 3600),
        ("query_embedding_mmd > 0.05 over 24h", "query_embedding_mmd", ">", 0.05, 0, 86400),
        ("error_rate<=0.01 for 2m", "error_rate", "<=", 0.01, 120, 300),
        ("  refusal_rate>0.5   FOR 30s  ", "refusal_rate", ">", 0.5, 30, 300),
        ("faithfulness < -1.5 over 2d", "faithfulness", "<", -1.5, 0, 172800),
        ("error_rate > 1e-3 over 90m for 1.5h", "error_rate", ">", 0.001, 5400, 5400),
    ],
)
def test_parse_rule_reads_figure_op_threshold_and_durations(
    expression, figure, op, threshold, for_s, window_s
):
    spec = parse_rule(expression, FIGURES)
    assert (spec.figure, spec.op, spec.for_s, spec.window_s) == (figure, op, for_s, window_s)
    assert spec.threshold == pytest.approx(threshold)
    assert spec.expression == expression.strip()


@pytest.mark.parametrize(
    ("expression", "fragments"),
    [
        ("refusal_rat > 0.5", ["unknown figure 'refusal_rat'", "did you mean 'refusal_rate'?"]),
        ("refusal_rate == 0.5", ["unknown operator '=='", ">, >=, <, <="]),
        ("refusal_rate => 0.5", ["unknown operator '=>'"]),
        ("refusal_rate 0.5 for 5m", ["expected an operator", "got '0.5'"]),
        ("refusal_rate", ["expected an operator", "the rule ends there"]),
        ("refusal_rate >", ["a number must follow '>'"]),
        ("refusal_rate > abc", ["threshold 'abc' is not a number"]),
        ("refusal_rate > nan", ["threshold 'nan' is not a number"]),
        ("refusal_rate > inf for 5m", ["threshold 'inf' is not a number"]),
        ("refusal_rate > 0.5 for 15x", ["after 'for'", "bad duration '15x'", "30s, 15m, 1h, 2d"]),
        ("refusal_rate > 0.5 for m", ["bad duration 'm'"]),
        ("refusal_rate > 0.5 over -5m", ["after 'over'", "bad duration '-5m'"]),
        ("refusal_rate > 0.5 for", ["'for' needs a duration"]),
        ("refusal_rate > 0.5 for 15m please", ["unexpected 'please'", "'over DURATION'"]),
        ("refusal_rate > 0.5 and error_rate > 1", ["unexpected 'and error_rate > 1'"]),
        ("refusal_rate > 0.5 for 5m for 10m", ["'for' is given twice"]),
        ("refusal_rate > 0.5 over 0s", ["'over' window must be longer than 0s"]),
        ("", ["does not start with a figure name", "FIGURE OP NUMBER"]),
        ("> 0.5", ["does not start with a figure name"]),
    ],
)
def test_parse_rule_says_what_is_wrong(expression, fragments):
    with pytest.raises(AlertRuleError) as caught:
        parse_rule(expression, FIGURES)
    assert isinstance(caught.value, ConfigError)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_unknown_figure_lists_the_known_ones_and_suggests_only_a_close_one():
    with pytest.raises(AlertRuleError) as caught:
        parse_rule("zzz > 1", FIGURES)
    message = str(caught.value)
    assert "did you mean" not in message
    assert "known figures: error_rate, faithfulness, p95_latency_ms" in message
    with pytest.raises(AlertRuleError, match="known figures: none"):
        parse_rule("refusal_rate > 1", [])
    # the caller decides which figures exist
    assert parse_rule("tokens_per_s < 10", ["tokens_per_s"]).figure == "tokens_per_s"


def test_breached_compares_and_treats_no_data_as_not_breached():
    above = parse_rule("refusal_rate > 0.5", FIGURES)
    assert above.breached(0.51)
    assert not above.breached(0.5)
    assert not above.breached(None)
    assert not above.breached(math.nan)
    assert parse_rule("refusal_rate >= 0.5", FIGURES).breached(0.5)
    assert parse_rule("faithfulness < 0.6", FIGURES).breached(0.59)
    assert not parse_rule("faithfulness < 0.6", FIGURES).breached(0.6)
    assert parse_rule("faithfulness <= 0.6", FIGURES).breached(0.6)
    assert not parse_rule("faithfulness <= 0.6", FIGURES).breached(0.61)


def test_durations_round_trip():
    assert [parse_duration(d) for d in ("30s", "15m", "1h", "2d", "1.5h")] == [
        30,
        900,
        3600,
        172800,
        5400,
    ]
    assert [format_duration(s) for s in (30, 900, 3600, 172800, 5400, 0.5)] == [
        "30s",
        "15m",
        "1h",
        "2d",
        "90m",
        "0.5s",
    ]


# --- notify targets -----------------------------------------------------------------------


def test_notify_targets_are_validated_deduplicated_and_log_is_implied():
    assert validate_notify([]) == ["log"]
    assert validate_notify("log") == ["log"]
    assert validate_notify(
        [
            "webhook:https://hooks.example.com/alerts",
            "log",
            " webhook:http://127.0.0.1:9000/x ",
            "webhook:https://hooks.example.com/alerts",
        ]
    ) == ["log", "webhook:https://hooks.example.com/alerts", "webhook:http://127.0.0.1:9000/x"]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("webhook:ftp://files.example.com/x", "must start with http:// or https://"),
        ("webhook:http://", "names no host"),
        ("webhook:", "the webhook URL is missing"),
        ("webhook:hooks.example.com/x", "must start with http:// or https://"),
        ("webhook:https://exa mple.com/", "contains whitespace"),
        ("webhook:http://example.com:99999/", "port 99999, outside 1-65535"),
        ("webhook:http://example.com:0/", "port 0, outside 1-65535"),
        ("webhook:http://example.com:abc/", "is malformed: Invalid port"),
        ("email:ops@example.com", "unknown notify target 'email:ops@example.com'"),
        ("https://hooks.example.com/x", "use 'log' or 'webhook:https://host/path'"),
    ],
)
def test_bad_notify_targets_are_refused(target, fragment, workspace):
    with pytest.raises(AlertRuleError) as caught:
        validate_notify(["log", target])
    assert fragment in str(caught.value)
    with pytest.raises(AlertRuleError):
        add_rule(workspace.engine, "qa", "refusal_rate > 0.5", [target], FIGURES)
    assert list_rules(workspace.engine) == []


# --- storage ------------------------------------------------------------------------------


def test_rules_are_added_listed_and_removed(workspace):
    engine = workspace.engine
    first = add_rule(
        engine, "qa", "refusal_rate > 0.5 for 15m", ["webhook:https://h.example/a"], FIGURES, T0
    )
    second = add_rule(engine, "chat", "p95_latency_ms >= 4000", [], FIGURES, now=T0 + 1)
    assert second > first
    rules = list_rules(engine)
    assert [r["id"] for r in rules] == [first, second]
    assert rules[0] | {"id": 0} == {
        "id": 0,
        "stack": "qa",
        "expression": "refusal_rate > 0.5 for 15m",
        "figure": "refusal_rate",
        "op": ">",
        "threshold": 0.5,
        "for_s": 900.0,
        "window_s": 900.0,
        "notify": ["log", "webhook:https://h.example/a"],
        "state": "ok",
        "since": None,
        "created_at": T0,
    }
    assert [r["id"] for r in list_rules(engine, stack="chat")] == [second]
    assert list_rules(engine, stack="nope") == []

    remove_rule(engine, first)
    assert [r["id"] for r in list_rules(engine)] == [second]
    with pytest.raises(NotFoundError, match=f"no alert rule with id {first}"):
        remove_rule(engine, first)


def test_unknown_rule_ids_are_errors(workspace):
    with pytest.raises(NotFoundError, match="no alert rule with id 404"):
        remove_rule(workspace.engine, 404)
    with pytest.raises(NotFoundError, match="no alert rule with id 404"):
        get_rule(workspace.engine, 404)
    with pytest.raises(NotFoundError, match="no alert rule with id 404"):
        list_events(workspace.engine, rule_id=404)


def test_a_bad_rule_is_not_stored(workspace):
    with pytest.raises(AlertRuleError, match="unknown figure"):
        add_rule(workspace.engine, "qa", "refusal_rat > 0.5", [], FIGURES)
    with pytest.raises(AlertRuleError, match="name of the stack"):
        add_rule(workspace.engine, " ", "refusal_rate > 0.5", [], FIGURES)
    assert list_rules(workspace.engine) == []


# --- the state machine --------------------------------------------------------------------


def test_a_rule_fires_once_after_holding_and_resolves_once(workspace, receiver, notifier):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "refusal_rate > 0.5 for 15m", [receiver.target], FIGURES, T0)
    figures = Figures()

    def evaluate(at: float) -> list[Any]:
        return evaluate_rules(engine, figures, now=at, notifier=notifier)

    figures.set("refusal_rate", 0.2)
    assert evaluate(T0) == []
    assert state_of(workspace, rule) == ("ok", None)
    assert figures.calls == [("qa", "refusal_rate", 900.0, T0)]

    figures.set("refusal_rate", 0.7)
    assert evaluate(T0 + 1 * MIN) == []
    assert state_of(workspace, rule) == ("pending", T0 + 1 * MIN)

    assert evaluate(T0 + 11 * MIN) == []  # held 10 of 15 minutes
    assert state_of(workspace, rule) == ("pending", T0 + 1 * MIN)
    assert list_events(engine) == []
    assert receiver.bodies == []

    [fired] = evaluate(T0 + 16 * MIN)
    assert (fired.rule_id, fired.state, fired.value, fired.at) == (rule, "firing", 0.7, T0 + 960)
    assert fired.deliveries == {"log": "ok", receiver.target: "ok"}
    assert state_of(workspace, rule) == ("firing", T0 + 1 * MIN)
    assert receiver.bodies == [
        {
            "rule_id": rule,
            "stack": "qa",
            "expression": "refusal_rate > 0.5 for 15m",
            "figure": "refusal_rate",
            "state": "firing",
            "value": 0.7,
            "threshold": 0.5,
            "at": T0 + 16 * MIN,
        }
    ]

    figures.set("refusal_rate", 0.9)
    assert evaluate(T0 + 21 * MIN) == []  # still firing: nothing more
    assert evaluate(T0 + 26 * MIN) == []
    assert len(receiver.bodies) == 1
    assert len(list_events(engine)) == 1

    figures.set("refusal_rate", 0.1)
    [resolved] = evaluate(T0 + 30 * MIN)
    assert (resolved.state, resolved.value) == ("resolved", 0.1)
    assert state_of(workspace, rule) == ("ok", None)
    assert [b["state"] for b in receiver.bodies] == ["firing", "resolved"]
    assert receiver.bodies[1]["value"] == 0.1
    assert evaluate(T0 + 31 * MIN) == []  # ok stays quiet
    assert len(receiver.bodies) == 2

    events = list_events(engine)
    assert [(e["state"], e["at"]) for e in events] == [
        ("resolved", T0 + 30 * MIN),
        ("firing", T0 + 16 * MIN),
    ]
    assert events[0]["stack"] == "qa"
    assert events[0]["expression"] == "refusal_rate > 0.5 for 15m"
    assert events[0]["deliveries"] == {"log": "ok", receiver.target: "ok"}


def test_pending_that_recovers_says_nothing(workspace, receiver, notifier):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "refusal_rate > 0.5 for 15m", [receiver.target], FIGURES)
    figures = Figures()
    figures.set("refusal_rate", 0.9)
    evaluate_rules(engine, figures, now=T0, notifier=notifier)
    assert state_of(workspace, rule) == ("pending", T0)
    figures.set("refusal_rate", 0.1)
    assert evaluate_rules(engine, figures, now=T0 + 10 * MIN, notifier=notifier) == []
    assert state_of(workspace, rule) == ("ok", None)
    assert list_events(engine) == []
    assert receiver.bodies == []


def test_flapping_below_the_hold_time_never_fires(workspace, receiver, notifier):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "refusal_rate > 0.5 for 15m", [receiver.target], FIGURES)
    figures = Figures()
    # breached for 10 minutes, fine for one check, breached again: the clock restarts
    for minute, value in [(0, 0.9), (10, 0.9), (11, 0.1), (12, 0.9), (20, 0.9), (26, 0.9)]:
        figures.set("refusal_rate", value)
        assert evaluate_rules(engine, figures, now=T0 + minute * MIN, notifier=notifier) == []
    assert state_of(workspace, rule) == ("pending", T0 + 12 * MIN)
    [fired] = evaluate_rules(engine, figures, now=T0 + 27 * MIN, notifier=notifier)
    assert fired.state == "firing"
    assert len(receiver.bodies) == 1


def test_without_for_each_transition_is_one_event(workspace, receiver, notifier):
    engine = workspace.engine
    add_rule(engine, "qa", "p95_latency_ms >= 4000", [receiver.target], FIGURES)
    figures = Figures()
    states = []
    for minute, value in enumerate([4000, 5000, 100, 100, 4500, 200]):
        figures.set("p95_latency_ms", value)
        events = evaluate_rules(engine, figures, now=T0 + minute * MIN, notifier=notifier)
        states.append([e.state for e in events])
    assert states == [["firing"], [], ["resolved"], [], ["firing"], ["resolved"]]
    assert [b["state"] for b in receiver.bodies] == ["firing", "resolved", "firing", "resolved"]
    assert len(list_events(engine)) == 4
    assert len(list_events(engine, limit=3)) == 3


def test_no_data_is_not_a_breach(workspace, notifier):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "faithfulness < 0.6", [], FIGURES)
    figures = Figures()  # no value at all: figure_of returns None
    assert evaluate_rules(engine, figures, now=T0, notifier=notifier) == []
    assert state_of(workspace, rule) == ("ok", None)
    figures.set("faithfulness", 0.3)
    [fired] = evaluate_rules(engine, figures, now=T0 + MIN, notifier=notifier)
    assert fired.state == "firing"
    figures.set("faithfulness", None)  # traffic stopped: no recovery, no flapping
    assert evaluate_rules(engine, figures, now=T0 + 2 * MIN, notifier=notifier) == []
    assert state_of(workspace, rule)[0] == "firing"
    figures.set("faithfulness", 0.9)
    [resolved] = evaluate_rules(engine, figures, now=T0 + 3 * MIN, notifier=notifier)
    assert (resolved.state, resolved.value) == ("resolved", 0.9)


def test_an_event_stored_but_never_delivered_is_sent_next_time(workspace, receiver):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "faithfulness < 0.6", [receiver.target], FIGURES)
    figures = Figures()
    figures.set("faithfulness", 0.3)

    class Crashing(Notifier):
        def deliver(self, event, targets):
            raise KeyboardInterrupt  # the process stops between the commit and the webhook

    with pytest.raises(KeyboardInterrupt):
        evaluate_rules(engine, figures, now=T0, notifier=Crashing())
    assert state_of(workspace, rule)[0] == "firing" and receiver.bodies == []
    assert evaluate_rules(engine, figures, now=T0 + MIN, notifier=Notifier()) == []
    assert [b["state"] for b in receiver.bodies] == ["firing"]
    assert list_events(engine)[0]["deliveries"] != {}


def test_rules_see_their_own_stack_and_window(workspace, notifier):
    engine = workspace.engine
    qa = add_rule(engine, "qa", "faithfulness < 0.6 for 30m over 1h", [], FIGURES)
    chat = add_rule(engine, "chat", "query_embedding_mmd > 0.05 over 24h", [], FIGURES)
    figures = Figures()
    figures.set("faithfulness", 0.2, stack="qa")
    figures.set("query_embedding_mmd", 0.01, stack="chat")
    figures.set("query_embedding_mmd", 0.5, stack="qa")  # another stack's figure: ignored
    evaluate_rules(engine, figures, now=T0, notifier=notifier)
    assert sorted(figures.calls) == [
        ("chat", "query_embedding_mmd", 86400.0, T0),
        ("qa", "faithfulness", 3600.0, T0),
    ]
    assert state_of(workspace, qa) == ("pending", T0)
    assert state_of(workspace, chat) == ("ok", None)

    figures.calls.clear()
    evaluate_rules(engine, figures, now=T0 + 31 * MIN, notifier=notifier, stack="chat")
    assert figures.calls == [("chat", "query_embedding_mmd", 86400.0, T0 + 31 * MIN)]
    assert state_of(workspace, qa) == ("pending", T0)  # not evaluated


def test_events_are_listed_per_rule_and_stack_and_removed_with_their_rule(workspace, notifier):
    engine = workspace.engine
    qa = add_rule(engine, "qa", "error_rate > 0.1", [], FIGURES)
    chat = add_rule(engine, "chat", "error_rate > 0.1", [], FIGURES)
    figures = Figures()
    figures.set("error_rate", 0.5, stack="qa")
    figures.set("error_rate", 0.5, stack="chat")
    assert len(evaluate_rules(engine, figures, now=T0, notifier=notifier)) == 2
    assert [e["rule_id"] for e in list_events(engine, rule_id=qa)] == [qa]
    assert [e["stack"] for e in list_events(engine, stack="chat")] == ["chat"]
    assert list_events(engine, stack="nope") == []
    remove_rule(engine, qa)
    assert [e["rule_id"] for e in list_events(engine)] == [chat]


def test_two_evaluators_at_once_fire_only_once(workspace, receiver, notifier):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "refusal_rate > 0.5", [receiver.target], FIGURES)
    inner_events: list[Any] = []

    def figure_of(stack: str, figure: str, window_s: float, now: float) -> float:
        if not inner_events:  # a second evaluator runs between our read and our write
            inner_events.extend(evaluate_rules(engine, lambda *_: 0.9, now=now, notifier=notifier))
        return 0.9

    outer_events = evaluate_rules(engine, figure_of, now=T0, notifier=notifier)
    assert [e.state for e in inner_events] == ["firing"]
    assert outer_events == []
    assert state_of(workspace, rule) == ("firing", T0)
    assert len(list_events(engine)) == 1
    assert len(receiver.bodies) == 1


def test_a_figure_that_fails_keeps_the_state_and_spares_other_rules(workspace, notifier, caplog):
    engine = workspace.engine
    broken = add_rule(engine, "broken", "error_rate > 0.1", [], FIGURES)
    fine = add_rule(engine, "qa", "error_rate > 0.1", [], FIGURES)
    values = {"broken": 0.5, "qa": 0.5}

    def figure_of(stack: str, figure: str, window_s: float, now: float) -> float:
        if stack == "broken" and now > T0:
            raise RuntimeError("database went away")
        return values[stack]

    evaluate_rules(engine, figure_of, now=T0, notifier=notifier)
    assert state_of(workspace, broken)[0] == "firing"
    values["qa"] = 0.0
    with caplog.at_level(logging.ERROR, logger="slmops.monitor"):
        [event] = evaluate_rules(engine, figure_of, now=T0 + MIN, notifier=notifier)
    assert (event.rule_id, event.state) == (fine, "resolved")
    assert state_of(workspace, broken)[0] == "firing"  # not resolved by an error
    assert "could not be computed" in caplog.text


# --- delivery -----------------------------------------------------------------------------


def test_a_failing_webhook_is_recorded_and_nothing_raises(workspace, failing_receiver, notifier):
    engine = workspace.engine
    add_rule(engine, "qa", "refusal_rate > 0.5", [failing_receiver.target], FIGURES)
    [event] = evaluate_rules(engine, lambda *_: 0.9, now=T0, notifier=notifier)
    outcome = event.deliveries[failing_receiver.target]
    assert outcome.startswith("HTTP 500")
    assert outcome.endswith("(after 3 attempts)")
    assert event.deliveries["log"] == "ok"
    assert len(failing_receiver.bodies) == 3  # the first try and 2 retries
    assert list_events(engine)[0]["deliveries"] == event.deliveries


def test_an_unreachable_webhook_is_recorded(workspace, notifier):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target = f"webhook:http://127.0.0.1:{port}/hook"
    add_rule(workspace.engine, "qa", "refusal_rate > 0.5", [target], FIGURES)
    [event] = evaluate_rules(workspace.engine, lambda *_: 0.9, now=T0, notifier=notifier)
    assert event.deliveries[target].startswith("ConnectError")
    assert event.deliveries[target].endswith("(after 3 attempts)")
    assert list_events(workspace.engine)[0]["deliveries"][target] == event.deliveries[target]


def test_events_are_logged_warning_when_firing_and_info_when_resolved(workspace, notifier, caplog):
    engine = workspace.engine
    rule = add_rule(engine, "qa", "refusal_rate > 0.5", [], FIGURES)
    with caplog.at_level(logging.INFO, logger="slmops.monitor"):
        evaluate_rules(engine, lambda *_: 0.9, now=T0, notifier=notifier)
        evaluate_rules(engine, lambda *_: 0.1, now=T0 + MIN, notifier=notifier)
    records = [r for r in caplog.records if r.name == "slmops.monitor"]
    assert [(r.levelno, r.getMessage()) for r in records] == [
        (
            logging.WARNING,
            f"alert firing: rule {rule} on stack 'qa' (refusal_rate > 0.5), refusal_rate = 0.9",
        ),
        (
            logging.INFO,
            f"alert resolved: rule {rule} on stack 'qa' (refusal_rate > 0.5), refusal_rate = 0.1",
        ),
    ]
