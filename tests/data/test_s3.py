"""A workspace whose artifacts (and so its LanceDB corpora) live in S3, served on loopback."""

from __future__ import annotations

import socket

import pytest

from slmops.data.corpus import Corpora
from slmops.store import Workspace

pytestmark = pytest.mark.model


@pytest.fixture
def s3_endpoint(monkeypatch):
    moto_server = pytest.importorskip("moto.server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,  # botocore / s3fs
        "AWS_ENDPOINT": endpoint,
        "AWS_ALLOW_HTTP": "true",  # LanceDB's object store
    }.items():
        monkeypatch.setenv(key, value)
    import boto3

    boto3.client("s3").create_bucket(Bucket="slmops-test")
    yield boto3.client("s3")
    server.stop()


def test_s3_workspace_holds_versioned_corpora(s3_endpoint, tmp_path, docs, monkeypatch):
    monkeypatch.setenv("SLMOPS_ARTIFACTS_URL", "s3://slmops-test/team")
    (docs / "a.md").write_text("Refunds take five business days.\n")
    with Workspace.open(tmp_path / "s3ws") as workspace:
        assert workspace.artifacts.uri("lancedb") == "s3://slmops-test/team/lancedb"
        workspace.artifacts.put_bytes("notes/readme.txt", b"hello")
        corpora = Corpora(workspace)
        assert corpora.ingest("kb", [docs]).version == 1
        (docs / "a.md").write_text("Refunds take ten business days.\n")
        assert corpora.ingest("kb", [docs]).version == 2
        assert "five" in corpora.search("kb@1", "refunds", k=1)[1][0].text
        assert "ten" in corpora.search("kb", "refunds", k=1, mode="hybrid")[1][0].text
    keys = [o["Key"] for o in s3_endpoint.list_objects_v2(Bucket="slmops-test")["Contents"]]
    assert "team/notes/readme.txt" in keys
    assert any(key.startswith("team/lancedb/kb.lance/") for key in keys)
