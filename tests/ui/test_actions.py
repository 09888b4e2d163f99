"""The feedback form's POST and who may send it: validation named per field, redaction,
the API key (bearer or the login session), cross-site posts."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from slmops.monitor.feedback import list_feedback
from slmops.store import Workspace
from slmops.ui import create_console
from slmops.ui.auth import COOKIE_NAME
from tests.ui.conftest import KEY
from tests.ui.data import ConsoleData


def test_valid_feedback_is_stored_and_the_page_says_so(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    posted = client.post(
        f"/traces/{data.slow_id[:12]}/feedback",
        data={
            "rating": "down",
            "comment": "too slow",
            "correction": "Run slmops prompt add qa FILE.",
            "labels": "latency, wrong-source",
            "author": "ana",
        },
        follow_redirects=False,
    )
    assert posted.status_code == 303  # post, redirect, get: a reload posts nothing again
    location = posted.headers["location"]
    assert location.startswith(f"/traces/{data.slow_id}?saved=") and location.endswith("#feedback")
    [stored] = [f for f in list_feedback(workspace.engine) if f["trace_id"] == data.slow_id]
    assert stored["score"] == 0.0 and stored["scale"] == "thumbs"
    assert stored["labels"] == ["latency", "wrong-source"] and stored["source"] == "user"
    assert stored["correction"] == "Run slmops prompt add qa FILE." and stored["author"] == "ana"
    page = client.get(location).text
    assert f"Feedback #{stored['id']} recorded." in page
    assert "too slow" in page and "→ Run slmops prompt add qa FILE." in page
    assert "#latency" in page


def test_invalid_feedback_re_renders_the_form_naming_each_field(
    client: TestClient, workspace: Workspace, data: ConsoleData
):
    before = len(list_feedback(workspace.engine))
    page = client.post(
        f"/traces/{data.slow_id}/feedback",
        data={"rating": "sideways", "labels": "ok, not ok!", "comment": "kept"},
    )
    assert page.status_code == 400
    errors = re.findall(r'class="field-error">([^<]+)', page.text)
    assert "rating: choose thumbs up or thumbs down" in errors
    assert any(e.startswith("labels: label &#39;ok!&#39;") for e in errors)
    assert ">kept</textarea>" in page.text  # what was typed is kept
    empty = client.post(f"/traces/{data.slow_id}/feedback", data={"rating": ""})
    assert empty.status_code == 400
    assert "give at least one of score, comment, correction or labels" in empty.text
    assert len(list_feedback(workspace.engine)) == before


def test_feedback_on_an_unknown_trace_is_404(client: TestClient, data: ConsoleData):
    page = client.post("/traces/0123456789abcdef/feedback", data={"rating": "up"})
    assert page.status_code == 404


def test_feedback_comments_are_redacted_like_the_cli_does(tmp_path: Path):
    home = tmp_path / "redacting"
    home.mkdir()
    (home / "config.toml").write_text('redact = ["email"]\n')
    with Workspace.open(home) as workspace:
        from tests.monitor.traces import make_trace

        trace_id = make_trace(workspace.engine)
        with TestClient(create_console(workspace), base_url="http://127.0.0.1") as client:
            client.post(
                f"/traces/{trace_id}/feedback",
                data={"comment": "mail me at ana@example.com"},
            )
        [stored] = list_feedback(workspace.engine)
    assert stored["comment"] == "mail me at [REDACTED:email]"


def test_with_a_key_pages_need_a_login_and_actions_need_the_key(
    keyed_client: TestClient, workspace: Workspace, data: ConsoleData
):
    client = keyed_client
    page = client.get("/traces?status=error", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=%2Ftraces%3Fstatus%3Derror"
    refused = client.post(f"/traces/{data.slow_id}/feedback", data={"rating": "up"})
    assert refused.status_code == 401
    wrong = client.post(
        f"/traces/{data.slow_id}/feedback",
        data={"rating": "up"},
        headers={"Authorization": "Bearer not-the-key"},
    )
    assert wrong.status_code == 401
    ok = client.post(
        f"/traces/{data.slow_id}/feedback",
        data={"rating": "up", "source": "reviewer"},
        headers={"Authorization": f"Bearer {KEY}"},
        follow_redirects=False,
    )
    assert ok.status_code == 303
    assert [f["source"] for f in list_feedback(workspace.engine, source="reviewer")] == ["reviewer"]


def test_the_login_form_sets_a_session_cookie_that_is_not_the_key(
    keyed_client: TestClient, data: ConsoleData
):
    client = keyed_client
    form = client.get("/login?next=/monitor")
    assert form.status_code == 200 and 'name="key"' in form.text
    wrong = client.post("/login", data={"key": "guess", "next": "/monitor"})
    assert wrong.status_code == 401 and "not this console&#39;s API key" in wrong.text
    signed = client.post("/login", data={"key": KEY, "next": "/monitor"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/monitor"
    cookie = signed.headers["set-cookie"]
    assert f"{COOKIE_NAME}=" in cookie and KEY not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert client.get("/monitor").status_code == 200
    trace = client.get(f"/traces/{data.slow_id}").text
    assert '<option value="reviewer" selected>' in trace  # logged in: a reviewer's label
    assert 'action="/logout"' in trace
    client.post("/logout")
    assert client.get("/monitor", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_the_console(keyed_client: TestClient, data: ConsoleData):
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example"):
        signed = keyed_client.post(
            "/login", data={"key": KEY, "next": target}, follow_redirects=False
        )
        assert signed.headers["location"] == "/", target


def test_a_cross_site_form_post_is_refused(client: TestClient, data: ConsoleData):
    refused = client.post(
        f"/traces/{data.slow_id}/feedback",
        data={"rating": "up"},
        headers={"Origin": "https://evil.example"},
    )
    assert refused.status_code == 403 and "cross-site" in refused.text
    same = client.post(
        f"/traces/{data.slow_id}/feedback",
        data={"rating": "up"},
        headers={"Origin": "http://127.0.0.1"},
        follow_redirects=False,
    )
    assert same.status_code == 303


def test_a_form_too_large_is_refused(client: TestClient, data: ConsoleData):
    page = client.post(f"/traces/{data.slow_id}/feedback", data={"comment": "x" * 70_000})
    assert page.status_code == 413


def test_without_a_key_only_localhost_names_are_answered(workspace: Workspace, data: ConsoleData):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 gets nothing."""
    with TestClient(create_console(workspace), base_url="http://evil.example:8765") as rebound:
        page = rebound.get("/traces")
        assert page.status_code == 403 and "localhost" in page.text
        assert (
            rebound.post(f"/traces/{data.stack_ids[0]}/feedback", data={"rating": "up"}).status_code
            == 403
        )
    for name in ("http://localhost:8765", "http://[::1]:8765", "http://127.0.0.1"):
        with TestClient(create_console(workspace), base_url=name) as local:
            assert local.get("/traces").status_code == 200, name
    with TestClient(
        create_console(workspace, api_keys=[KEY]), base_url="http://console.example"
    ) as keyed:  # with a key, any name: the key decides
        assert keyed.get("/traces", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_a_session_expires_on_the_server(workspace: Workspace):
    from slmops.ui.auth import SESSION_MAX_AGE_S, ConsoleAuth

    auth = ConsoleAuth([KEY])
    token = auth.session_token(KEY, now=1_000_000)
    assert auth.session_valid(token, now=1_000_000 + 60)
    assert not auth.session_valid(token, now=1_000_000 + SESSION_MAX_AGE_S + 1)
    assert not auth.session_valid(token.replace("1000000.", "1000001."), now=1_000_100)
    assert not auth.session_valid("garbage", now=1_000_000)
    assert not ConsoleAuth([KEY]).session_valid(token, now=1_000_060)  # another process' secret
