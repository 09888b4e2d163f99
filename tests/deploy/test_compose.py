"""compose.yaml: valid against the Compose Specification, every file it names exists, every
service is health-checked, secrets come from outside, and the services agree with each other
(Prometheus scrapes the port serve listens on, Grafana loads the shipped dashboard, ...).

compose-spec.json beside this file is the official schema, copied unchanged from
github.com/compose-spec/compose-spec, schema/compose-spec.json at commit
170098ba07d9f53c383a41bfd4c5166b0a4529a6 (2026-06-23; the file last changed in a08f8d51,
2025-10-28), sha256 1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.common import (
    COMPOSE,
    DEPLOY,
    ENV_EXAMPLE,
    ROOT,
    load_yaml,
    tool,
    unguarded_routes,
)

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (pip) validates compose.yaml")

SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "1f91e091f16b2dd50ab8860e02bb391d22df553d91c145eacedb1b6eff9c3f0e"
SERVICES = {
    "slmops", "console", "postgres", "minio", "minio-init", "jaeger", "prometheus", "grafana",
    "ray-head", "ray-worker",
}  # fmt: skip
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY")
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")


@functools.cache
def _compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def compose() -> dict[str, Any]:
    """compose.yaml as data (YAML merge keys resolved), a fresh copy each time."""
    return copy.deepcopy(_compose())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def validator() -> Any:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft7Validator(schema)


def test_vendored_schema_is_the_recorded_copy():
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text(encoding="utf-8"))["title"] == "Compose Specification"


def test_compose_file_follows_the_compose_specification():
    errors = sorted(validator().iter_errors(compose()), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_check_catches_mistakes():
    broken = copy.deepcopy(compose())
    broken["services"]["slmops"]["helthcheck"] = broken["services"]["slmops"].pop("healthcheck")
    assert list(validator().iter_errors(broken)), "a misspelt key must fail validation"
    broken = copy.deepcopy(compose())
    broken["services"]["postgres"]["depends_on"] = {"minio": {"condition": "when_ready"}}
    assert list(validator().iter_errors(broken)), "an unknown depends_on condition must fail"


def test_the_stack_has_every_service():
    assert set(services()) == SERVICES


def test_every_long_running_service_is_health_checked():
    for name, service in services().items():
        if service.get("restart") == "no":  # one-shot jobs end; they are waited for instead
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_depends_on_conditions_can_be_met():
    all_services = services()
    for name, service in all_services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in all_services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in all_services[target], f"{name}: {target} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert all_services[target].get("restart") == "no", f"{target} is not a one-shot"
    order = {n: set(s.get("depends_on", {})) for n, s in all_services.items()}
    assert "postgres" in order["slmops"] and "minio-init" in order["slmops"]
    assert "slmops" in order["console"], "serve migrates the schema before the console opens it"
    assert "ray-head" in order["ray-worker"]


def test_files_named_by_the_stack_exist():
    for name, service in services().items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        for volume in service.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume["source"]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"


def test_published_ports_listen_on_loopback_only():
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_no_secret_is_written_into_compose_yaml():
    for name, service in services().items():
        for key, value in environment(service).items():
            if key.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}.{key}"
            elif SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:\?[^}]*)?\}", value), f"{name}.{key}={value}"
            elif re.search(r"://[^/@\s]+:[^/@\s]+@", value):  # credentials inside a URL
                assert re.search(r"://[^/@\s]+:\$\{[A-Z0-9_]+[^}]*\}@", value), f"{name}.{key}"
    for name, secret in compose()["secrets"].items():
        assert set(secret) <= {"environment", "file"}, f"secret {name} must come from outside"


def env_example() -> dict[str, str]:
    """Variables named in deploy/.env.example (commented-out ones too) -> their values."""
    found: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def test_env_example_lists_every_variable_and_holds_no_secret():
    documented = env_example()
    used = set(INTERPOLATION.findall(COMPOSE.read_text(encoding="utf-8")))
    used |= {s["environment"] for s in compose()["secrets"].values() if "environment" in s}
    assert used <= set(documented), f"missing from .env.example: {sorted(used - set(documented))}"
    for variable, value in documented.items():
        if SECRET_NAME.search(variable) and variable != "MINIO_ROOT_USER":
            assert value == "", f"{variable} must be left empty in .env.example"
    gitignore = (DEPLOY / ".gitignore").read_text(encoding="utf-8").split()
    assert ".env" in gitignore


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def healthcheck_url(service: dict[str, Any]) -> str:
    match = re.search(r"https?://[^'\" ]+", " ".join(service["healthcheck"]["test"]))
    assert match, service["healthcheck"]
    return match.group(0)


def test_serve_and_console_listen_with_keys_from_the_secret():
    all_services = services()
    secrets = compose()["secrets"]
    for name, subcommand in (("slmops", "serve"), ("console", "ui")):
        service = all_services[name]
        command = service["command"]
        assert command[0] == subcommand and option(command, "--host") == "0.0.0.0"
        keys = option(command, "--keys-file")
        assert keys.startswith("/run/secrets/")
        assert Path(keys).name in service["secrets"] and Path(keys).name in secrets
        url = urlsplit(healthcheck_url(service))
        assert url.hostname == "127.0.0.1" and str(url.port) == option(command, "--port")
        published = {p.rsplit(":", 1)[1] for p in service["ports"]}
        assert option(command, "--port") in published
    serve_check = urlsplit(healthcheck_url(all_services["slmops"])).path
    assert serve_check in unguarded_routes(), f"{serve_check} is not an open route of serve"
    login = (ROOT / "src" / "slmops" / "ui" / "login.py").read_text(encoding="utf-8")
    assert f'@routes.get("{urlsplit(healthcheck_url(all_services["console"])).path}"' in login


def test_slmops_settings_are_real_settings():
    from slmops.store.settings import Settings

    for name in ("slmops", "console"):
        for key in environment(services()[name]):
            if key.startswith("SLMOPS_") and key != "SLMOPS_HOME":
                field = key.removeprefix("SLMOPS_").lower()
                assert field in Settings.model_fields, f"{key} is not a workspace setting"


def test_metadata_in_postgres_artifacts_in_minio_traces_to_jaeger():
    all_services = services()
    env = environment(all_services["slmops"])
    database = urlsplit(re.sub(r"\$\{[^}]*\}", "VALUE", env["SLMOPS_DATABASE_URL"]))
    postgres = environment(all_services["postgres"])
    assert database.scheme == "postgresql+psycopg" and database.hostname == "postgres"
    assert database.username == postgres["POSTGRES_USER"]
    assert database.path == "/" + postgres["POSTGRES_DB"]
    assert env["SLMOPS_ARTIFACTS_URL"].startswith("s3://${SLMOPS_S3_BUCKET")
    assert "${SLMOPS_S3_BUCKET" in environment(all_services["minio-init"])["SLMOPS_S3_BUCKET"]
    assert "mc mb --ignore-existing" in " ".join(all_services["minio-init"]["command"])
    assert urlsplit(env["AWS_ENDPOINT_URL"]).hostname == "minio"
    otlp = urlsplit(env["SLMOPS_OTLP_ENDPOINT"])
    assert (otlp.hostname, otlp.port, otlp.path) == ("jaeger", 4318, "/v1/traces")


def test_prometheus_scrapes_the_servers_metrics():
    prometheus = services()["prometheus"]
    config_file = next(a.split("=", 1)[1] for a in prometheus["command"] if "config.file" in a)
    mounted = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert config_file in mounted, "the config file Prometheus reads is not mounted"
    config = load_yaml(ROOT / mounted[config_file])
    port = option(services()["slmops"]["command"], "--port")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["slmops"]
    assert job.get("metrics_path", "/metrics") in unguarded_routes()
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    assert f"slmops:{port}" in targets
    for group in (g for j in jobs.values() for g in j["static_configs"]):
        for target in group["targets"]:
            host = target.split(":")[0]
            assert host in services() or host == "localhost", f"unknown scrape target {target}"


def test_grafana_is_provisioned_with_the_shipped_dashboard():
    grafana = services()["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    dashboard_mount = next(t for t, s in mounts.items() if s.endswith("slmops-monitor.json"))
    assert (ROOT / mounts[dashboard_mount]) == DEPLOY / "grafana" / "slmops-monitor.json"
    (provider,) = load_yaml(provisioning / "dashboards" / "slmops.yml")["providers"]
    assert Path(dashboard_mount).parent == Path(provider["options"]["path"])
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and datasource["isDefault"] is True
    assert str(url.port) == services()["prometheus"]["ports"][0].rsplit(":", 1)[1]
    dashboard = json.loads((DEPLOY / "grafana" / "slmops-monitor.json").read_text("utf-8"))
    assert {i["pluginId"] for i in dashboard["__inputs"]} == {datasource["type"]}
    assert environment(grafana)["GF_SECURITY_ADMIN_PASSWORD__FILE"].startswith("/run/secrets/")


def test_ray_head_and_worker_form_one_cluster():
    head, worker = services()["ray-head"], services()["ray-worker"]
    assert head["image"] == worker["image"] and "rayproject/ray:" in head["image"]
    assert head["command"][:3] == ["ray", "start", "--head"] and "--block" in head["command"]
    assert "--port=6379" in head["command"]
    assert worker["command"][:2] == ["ray", "start"] and "--block" in worker["command"]
    assert "--address=ray-head:6379" in worker["command"]


def test_docker_compose_accepts_the_file(tmp_path):
    docker = tool("docker")
    probe = (
        subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if docker
        else None
    )
    if probe is None or probe.returncode != 0:
        pytest.skip("Docker Compose v2 (`docker compose`) is not installed")
    env_file = tmp_path / ".env"
    values = {k: v or "x" * 24 for k, v in env_example().items()}
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
