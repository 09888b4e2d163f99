"""Fixtures of the console tests: a workspace with data, and a client on the console."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from slmops.store import Workspace
from slmops.ui import create_console
from tests.ui.data import ConsoleData, build

KEY = "console-key-0123456789abcdef"


@pytest.fixture
def data(workspace: Workspace) -> ConsoleData:
    return build(workspace.engine)


@pytest.fixture
def client(workspace: Workspace, data: ConsoleData) -> Iterator[TestClient]:
    with TestClient(create_console(workspace), base_url="http://127.0.0.1") as test_client:
        yield test_client


@pytest.fixture
def keyed_client(workspace: Workspace, data: ConsoleData) -> Iterator[TestClient]:
    """The console started with an API key (the client holds no key until a test adds one)."""
    with TestClient(
        create_console(workspace, api_keys=[KEY]), base_url="http://127.0.0.1"
    ) as test_client:
        yield test_client
