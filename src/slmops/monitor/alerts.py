"""Alert rules over monitored figures: ``refusal_rate > 0.5 for 15m``.

A rule names a figure (computed by the caller over a window), a comparison, a threshold and
how long the comparison must hold before the rule fires. :func:`evaluate_rules` moves each
rule through ``ok -> pending -> firing -> ok`` and stores exactly one event per transition
into or out of ``firing`` (no alert storms: a rule that stays firing says nothing more).
Events go to the log always and to the rule's webhooks; what each delivery did is stored
with the event.
"""

from __future__ import annotations

import difflib
import logging
import math
import operator
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import Engine, delete, insert, select, update

from slmops.errors import ConfigError, NotFoundError
from slmops.store.schema import alert_events, alert_rules

logger = logging.getLogger("slmops.monitor")

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>[smhd])")
_HEAD = re.compile(r"\s*(?P<figure>[A-Za-z_][\w.:]*)\s*(?P<op>[<>=!]+)?\s*")
DEFAULT_WINDOW_S = 15 * 60.0  # a rule without 'for'
MIN_WINDOW_S = 5 * 60.0  # a rule with 'for' looks at max(for, 5m) unless 'over' says
WEBHOOK_TIMEOUT_S = 5.0

FigureOf = Callable[[str, str, float, float], float | None]
"""figure_of(stack, figure, window_s, now) -> the figure's value, or None when no data."""


class AlertRuleError(ConfigError):
    """An alert rule expression or notify target is malformed."""


# --- rules --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleSpec:
    """A parsed rule: ``figure op threshold``, held ``for_s`` seconds, over ``window_s``."""

    figure: str
    op: str
    threshold: float
    for_s: float
    window_s: float
    expression: str

    def breached(self, value: float | None) -> bool:
        """Whether ``value`` meets the condition; no data (None, NaN) never does."""
        if value is None or math.isnan(value):
            return False
        return OPERATORS[self.op](float(value), self.threshold)


def parse_duration(text: str) -> float:
    """``30s``, ``15m``, ``1.5h``, ``2d`` -> seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise AlertRuleError(
            f"bad duration {text!r}: write a number and a unit s, m, h or d (30s, 15m, 1h, 2d)"
        )
    seconds = float(match["number"]) * _UNITS[match["unit"]]
    if not math.isfinite(seconds):  # 400 digits make float() inf: no rule waits forever
        raise AlertRuleError(f"bad duration {text!r}: too long")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form among ``2d``, ``1h``, ``15m``, ``30s`` (``90m`` for 1.5h)."""
    for unit in ("d", "h", "m"):
        count = seconds / _UNITS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def default_window_s(for_s: float) -> float:
    """The window a rule's figure is computed over when the rule has no ``over``."""
    return max(for_s, MIN_WINDOW_S) if for_s > 0 else DEFAULT_WINDOW_S


def _unknown_figure(figure: str, known_figures: Collection[str], expression: str) -> str:
    known = sorted(known_figures)
    message = f"unknown figure {figure!r} in alert rule {expression!r}"
    close = difflib.get_close_matches(figure, known, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message + f" (known figures: {', '.join(known) if known else 'none'})"


def parse_rule(expression: str, known_figures: Collection[str]) -> RuleSpec:
    """Parse ``FIGURE OP NUMBER [for DURATION] [over DURATION]``.

    OP is one of ``> >= < <=``; durations are ``30s``, ``15m``, ``1h``, ``2d``. Without
    ``for`` the rule fires on the first breach; without ``over`` the figure's window is
    15m (no ``for``) or max(for, 5m). FIGURE must be one of ``known_figures``.
    """
    text = expression.strip()
    usage = (
        "write FIGURE OP NUMBER [for DURATION] [over DURATION], e.g. 'refusal_rate > 0.5 for 15m'"
    )
    head = _HEAD.match(text)
    if not text or head is None:
        raise AlertRuleError(
            f"alert rule {expression!r} does not start with a figure name; {usage}"
        )
    figure = head["figure"]
    if figure not in known_figures:
        raise AlertRuleError(_unknown_figure(figure, known_figures, text))
    rest = text[head.end() :].split()
    op = head["op"]
    if op is None:
        got = f"got {rest[0]!r}" if rest else "the rule ends there"
        raise AlertRuleError(
            f"alert rule {text!r}: expected an operator (>, >=, <, <=) after {figure!r}, {got}"
        )
    if op not in OPERATORS:
        raise AlertRuleError(
            f"alert rule {text!r}: unknown operator {op!r}; use one of >, >=, <, <="
        )
    if not rest:
        raise AlertRuleError(f"alert rule {text!r}: a number must follow {op!r}; {usage}")
    try:
        threshold = float(rest[0])
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise AlertRuleError(f"alert rule {text!r}: threshold {rest[0]!r} is not a number")
    clauses: dict[str, float] = {}
    position = 1
    while position < len(rest):
        keyword = rest[position].lower()
        if keyword not in ("for", "over"):
            raise AlertRuleError(
                f"alert rule {text!r}: unexpected {' '.join(rest[position:])!r} after the "
                "threshold; only 'for DURATION' and 'over DURATION' may follow"
            )
        if keyword in clauses:
            raise AlertRuleError(f"alert rule {text!r}: {keyword!r} is given twice")
        if position + 1 >= len(rest):
            raise AlertRuleError(
                f"alert rule {text!r}: {keyword!r} needs a duration, e.g. '{keyword} 15m'"
            )
        try:
            clauses[keyword] = parse_duration(rest[position + 1])
        except AlertRuleError as exc:
            raise AlertRuleError(f"alert rule {text!r}: after {keyword!r}: {exc}") from None
        position += 2
    for_s = clauses.get("for", 0.0)
    window_s = clauses.get("over", default_window_s(for_s))
    if window_s <= 0:
        raise AlertRuleError(f"alert rule {text!r}: the 'over' window must be longer than 0s")
    return RuleSpec(figure, op, threshold, for_s, window_s, text)


def validate_notify(notify: str | Sequence[str]) -> list[str]:
    """Checked, de-duplicated notify targets, ``log`` first (it is always implied).

    A target is ``log`` or ``webhook:http(s)://host/...``.
    """
    targets = ["log"]
    for raw in [notify] if isinstance(notify, str) else notify:
        target = raw.strip()
        if target == "log":
            continue
        if not target.startswith("webhook:"):
            raise AlertRuleError(
                f"unknown notify target {raw!r}; use 'log' or 'webhook:https://host/path'"
            )
        url = target.removeprefix("webhook:").strip()
        problem = _url_problem(url)
        if problem:
            raise AlertRuleError(f"notify target {raw!r}: {problem}")
        target = f"webhook:{url}"
        if target not in targets:
            targets.append(target)
    return targets


def _url_problem(url: str) -> str | None:
    if not url:
        return "the webhook URL is missing, e.g. 'webhook:https://hooks.example.com/alerts'"
    if any(c.isspace() for c in url):
        return f"webhook URL {url!r} contains whitespace"
    try:
        parsed = httpx.URL(url)
        # .host decodes an IDNA name only when read: "http://xn--/" fails here (IDNAError is
        # a ValueError), not in URL().
        host = parsed.host
    except (httpx.InvalidURL, ValueError) as exc:
        return f"webhook URL {url!r} is malformed: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"webhook URL {url!r} must start with http:// or https://"
    if not host:
        return f"webhook URL {url!r} names no host"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return f"webhook URL {url!r} has port {parsed.port}, outside 1-65535"
    return None


# --- storage ------------------------------------------------------------------------------


def add_rule(
    engine: Engine,
    stack: str,
    expression: str,
    notify: str | Sequence[str],
    known_figures: Collection[str],
    now: float | None = None,
) -> int:
    """Store a new rule (state ``ok``) for ``stack``; returns its id."""
    if not stack.strip():
        raise AlertRuleError("an alert rule needs the name of the stack it watches")
    spec = parse_rule(expression, known_figures)
    targets = validate_notify(notify)
    with engine.begin() as connection:
        result = connection.execute(
            insert(alert_rules)
            .values(
                stack=stack,
                expression=spec.expression,
                figure=spec.figure,
                op=spec.op,
                threshold=spec.threshold,
                for_s=spec.for_s,
                window_s=spec.window_s,
                notify=targets,
                state="ok",
                since=None,
                created_at=time.time() if now is None else now,
            )
            .returning(alert_rules.c.id)
        )
        return int(result.scalar_one())


def list_rules(engine: Engine, stack: str | None = None) -> list[dict[str, Any]]:
    """Rules (every column of ``alert_rules``) in the order they were added."""
    query = select(alert_rules).order_by(alert_rules.c.id)
    if stack is not None:
        query = query.where(alert_rules.c.stack == stack)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def get_rule(engine: Engine, rule_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(select(alert_rules).where(alert_rules.c.id == rule_id)).first()
    if row is None:
        raise NotFoundError(f"no alert rule with id {rule_id}; see 'slmops alert list'")
    return dict(row._mapping)


def remove_rule(engine: Engine, rule_id: int) -> None:
    """Delete a rule and its events."""
    with engine.begin() as connection:
        # Explicit, not left to ON DELETE CASCADE: SQLite enforces that only when asked to.
        connection.execute(delete(alert_events).where(alert_events.c.rule_id == rule_id))
        deleted = connection.execute(delete(alert_rules).where(alert_rules.c.id == rule_id))
        if deleted.rowcount == 0:
            raise NotFoundError(f"no alert rule with id {rule_id}; see 'slmops alert list'")


def list_events(
    engine: Engine, rule_id: int | None = None, stack: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Newest events first: the event's columns plus its rule's stack, expression, figure
    and threshold."""
    if rule_id is not None:
        get_rule(engine, rule_id)  # NotFoundError for an unknown rule
    query = (
        select(
            alert_events,
            alert_rules.c.stack,
            alert_rules.c.expression,
            alert_rules.c.figure,
            alert_rules.c.threshold,
        )
        .join(alert_rules, alert_rules.c.id == alert_events.c.rule_id)
        .order_by(alert_events.c.at.desc(), alert_events.c.id.desc())
        .limit(limit)
    )
    if rule_id is not None:
        query = query.where(alert_events.c.rule_id == rule_id)
    if stack is not None:
        query = query.where(alert_rules.c.stack == stack)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


# --- events and their delivery ------------------------------------------------------------


@dataclass
class Event:
    """One stored transition of a rule into (``firing``) or out of (``resolved``) firing."""

    id: int
    rule_id: int
    stack: str
    expression: str
    figure: str
    state: str
    value: float | None
    threshold: float
    at: float
    deliveries: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The JSON body a webhook receives."""
        return {
            "rule_id": self.rule_id,
            "stack": self.stack,
            "expression": self.expression,
            "figure": self.figure,
            "state": self.state,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at,
        }


class Notifier:
    """Logs events and posts them to webhooks. :meth:`deliver` never raises; it returns
    what happened per target (``"ok"`` or the error)."""

    def __init__(
        self,
        *,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        retries: int = 2,
        backoff_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.transport = transport

    def deliver(self, event: Event, targets: Sequence[str]) -> dict[str, str]:
        outcomes = {"log": self._log(event)}
        webhooks = [t for t in targets if t.startswith("webhook:")]
        if webhooks:
            with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
                for target in webhooks:
                    outcomes[target] = self._post(client, target.removeprefix("webhook:"), event)
        for target in targets:
            if target != "log" and target not in outcomes:
                outcomes[target] = "unknown notify target"
        return outcomes

    def _log(self, event: Event) -> str:
        level = logging.WARNING if event.state == "firing" else logging.INFO
        logger.log(
            level,
            "alert %s: rule %d on stack %r (%s), %s = %s",
            event.state,
            event.rule_id,
            event.stack,
            event.expression,
            event.figure,
            "no data" if event.value is None else f"{event.value:g}",
        )
        return "ok"

    def _post(self, client: httpx.Client, url: str, event: Event) -> str:
        attempts = self.retries + 1
        outcome = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = client.post(url, json=event.payload())
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
                continue  # a connection that failed may work on the next try
            except Exception as exc:  # a timeout, a bad URL: retrying will not help
                return f"{type(exc).__name__}: {exc}"
            if response.is_success:
                return "ok"
            outcome = f"HTTP {response.status_code} {response.reason_phrase}".strip()
            if response.status_code < 500:
                return outcome
        return f"{outcome} (after {attempts} attempts)"


# --- the state machine --------------------------------------------------------------------


def _spec_of(rule: dict[str, Any]) -> RuleSpec:
    return RuleSpec(
        rule["figure"],
        rule["op"],
        rule["threshold"],
        rule["for_s"],
        rule["window_s"],
        rule["expression"],
    )


def _transition(
    rule: dict[str, Any], breached: bool, now: float
) -> tuple[str, float | None, str | None] | None:
    """(new state, new since, event state or None), or None when nothing changes."""
    state, since = rule["state"], rule["since"]
    if not breached:
        if state == "firing":
            return "ok", None, "resolved"
        return ("ok", None, None) if state == "pending" else None
    if state == "firing":
        return None
    start = now if state != "pending" or since is None else since
    if now - start >= rule["for_s"]:
        return "firing", start, "firing"
    return ("pending", start, None) if state != "pending" else None


def _undelivered(engine: Engine, stack: str | None, now: float) -> list[tuple[Event, list[str]]]:
    """Events stored but never delivered (the process stopped between the commit and the
    webhook): they are sent with the next evaluation, so no firing goes unannounced."""
    query = (
        select(
            alert_events.c.id,
            alert_events.c.rule_id,
            alert_events.c.state,
            alert_events.c.value,
            alert_events.c.at,
            alert_events.c.deliveries,
            alert_rules.c.stack,
            alert_rules.c.expression,
            alert_rules.c.figure,
            alert_rules.c.threshold,
            alert_rules.c.notify,
        )
        .join(alert_rules, alert_rules.c.id == alert_events.c.rule_id)
        .order_by(alert_events.c.id)
    )
    if stack is not None:
        query = query.where(alert_rules.c.stack == stack)
    pending: list[tuple[Event, list[str]]] = []
    with engine.connect() as connection:
        for row in connection.execute(query.where(alert_events.c.at >= now - 86_400)):
            if row.deliveries:
                continue
            event = Event(
                int(row.id),
                int(row.rule_id),
                row.stack,
                row.expression,
                row.figure,
                row.state,
                row.value,
                row.threshold,
                row.at,
            )
            pending.append((event, list(row.notify or [])))
    return pending


def evaluate_rules(
    engine: Engine,
    figure_of: FigureOf,
    *,
    now: float | None = None,
    notifier: Notifier | None = None,
    stack: str | None = None,
) -> list[Event]:
    """Evaluate every rule (or those of ``stack``) once at ``now``; returns the new events.

    ``figure_of(stack, figure, window_s, now)`` gives a figure's value, None for no data
    (never a breach). A rule whose figure cannot be computed keeps its state. Each
    transition is written with a compare-and-set on the rule's previous state, so of two
    evaluators running at once only one records (and sends) an event.
    """
    now = time.time() if now is None else now
    notifier = notifier or Notifier()
    retried = _undelivered(engine, stack, now)
    events: list[tuple[Event, list[str]]] = []
    for rule in list_rules(engine, stack):
        spec = _spec_of(rule)
        try:
            value = figure_of(rule["stack"], spec.figure, spec.window_s, now)
        except Exception:
            logger.exception(
                "alert rule %d (%s): figure %r could not be computed; its state is kept",
                rule["id"],
                spec.expression,
                spec.figure,
            )
            continue
        value = None if value is None else float(value)
        if value is None and rule["state"] == "firing":
            continue  # no traffic is no recovery: resolving would flap with every quiet gap
        change = _transition(rule, spec.breached(value), now)
        if change is None:
            continue
        new_state, new_since, event_state = change
        previous_since = (
            alert_rules.c.since.is_(None)
            if rule["since"] is None
            else alert_rules.c.since == rule["since"]
        )
        with engine.begin() as connection:
            claimed = connection.execute(
                update(alert_rules)
                .where(
                    alert_rules.c.id == rule["id"],
                    alert_rules.c.state == rule["state"],
                    previous_since,
                )
                .values(state=new_state, since=new_since)
            )
            if claimed.rowcount != 1:
                continue  # another evaluator moved this rule first
            if event_state is None:
                continue
            event_id = connection.execute(
                insert(alert_events)
                .values(rule_id=rule["id"], state=event_state, value=value, at=now, deliveries={})
                .returning(alert_events.c.id)
            ).scalar_one()
        event = Event(
            int(event_id),
            rule["id"],
            rule["stack"],
            spec.expression,
            spec.figure,
            event_state,
            value,
            spec.threshold,
            now,
        )
        events.append((event, list(rule["notify"] or [])))
    for event, targets in [*retried, *events]:  # after commit: no transaction held open
        event.deliveries = notifier.deliver(event, targets)
        with engine.begin() as connection:
            connection.execute(
                update(alert_events)
                .where(alert_events.c.id == event.id)
                .values(deliveries=event.deliveries)
            )
    return [event for event, _ in events]
