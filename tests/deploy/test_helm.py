"""The Helm chart (deploy/helm/slmops): rendered by a real Helm engine and linted, the
manifests validated against the Kubernetes schemas, and the pieces checked to fit together.

The engine is the `helm` binary when one is on PATH, else Helm's Go SDK from the pip
package helm-python-sdk; without either, the rendering tests skip. Schema validation uses
kubernetes-validate (pip) and skips without it. The static checks need neither.
"""

from __future__ import annotations

import base64
import re
import tomllib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.deploy.common import (
    CHART,
    COMPOSE,
    DOCKERFILE,
    PYPROJECT,
    HelmRenderer,
    RenderError,
    _split_sources,
    load_yaml,
    manifests,
    unguarded_routes,
)

TEMPLATES = CHART / "templates"
KEYS_FILE = "/etc/slmops/keys/api-keys"
CUSTOM_KINDS = {"RayCluster", "ServiceMonitor"}  # CRDs: checked by hand below
EVERYTHING_ON: dict[str, Any] = {
    "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
    "persistence": {"accessModes": ["ReadWriteMany"], "storageClass": "nfs"},
    "secrets": {"existingSecret": "slmops-credentials"},
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "ray": {"enabled": True},
    "settings": {
        "artifactsUrl": "s3://slmops/artifacts",
        "otlpEndpoint": "http://jaeger-collector:4318/v1/traces",
        "redact": ["email", "api_key"],
        "configToml": "redact_patterns = ['ACME-[0-9]+']\n",
        "extraEnv": {"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "us-east-1"},
    },
    "serve": {"models": ["local:smollm2-135m"], "extraArgs": ["--max-queue", "64"]},
}


# --- without an engine ------------------------------------------------------------------------


def values() -> dict[str, Any]:
    return load_yaml(CHART / "values.yaml")


def template_sources() -> dict[str, str]:
    files = sorted(p for p in TEMPLATES.rglob("*") if p.is_file())
    return {p.name: p.read_text(encoding="utf-8") for p in files}


def test_chart_metadata_follows_the_project():
    chart = load_yaml(CHART / "Chart.yaml")
    version = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["version"]
    assert chart["apiVersion"] == "v2" and chart["name"] == "slmops"
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    assert chart["appVersion"] == version, "the default image tag is the slmops version"


def test_the_chart_has_its_templates():
    names = set(template_sources())
    assert {
        "_helpers.tpl", "NOTES.txt", "deployment.yaml", "console-deployment.yaml",
        "service.yaml", "configmap.yaml", "secret.yaml", "hpa.yaml", "pvc.yaml",
        "servicemonitor.yaml", "raycluster.yaml", "serviceaccount.yaml", "test-connection.yaml",
    } <= names  # fmt: skip


def test_templates_only_read_values_that_exist():
    defaults = values()
    for name, source in template_sources().items():
        for path in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", source):
            node: Any = defaults
            for key in path.strip(".").split("."):
                assert isinstance(node, dict) and key in node, f"{name}: .Values{path} is not set"
                node = node[key]


def test_included_templates_are_defined():
    sources = template_sources()
    defined = set(re.findall(r'define "([^"]+)"', sources["_helpers.tpl"]))
    for name, source in sources.items():
        for used in re.findall(r'include "([^"]+)"', source):
            assert used in defined, f"{name} includes undefined {used}"


def test_versions_agree_with_the_image_and_compose():
    ray = values()["ray"]
    assert ray["image"]["tag"].startswith(ray["rayVersion"] + "-"), "KubeRay needs the real version"
    compose_ray = re.search(r"RAY_IMAGE:-([^}]+)\}", COMPOSE.read_text(encoding="utf-8"))
    image = f"{ray['image']['repository']}:{ray['image']['tag']}"
    assert compose_ray and compose_ray.group(1) == image, "compose and the chart run one Ray"
    uid = re.search(r"^USER (\d+):(\d+)", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert uid, "the Dockerfile sets a numeric USER"
    security = values()["podSecurityContext"]
    assert (str(security["runAsUser"]), str(security["runAsGroup"])) == uid.groups()


# --- rendered ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> HelmRenderer:
    return HelmRenderer()


@pytest.fixture(scope="module")
def default_render(helm: HelmRenderer) -> dict[str, str]:
    return helm.render()


@pytest.fixture(scope="module")
def full_render(helm: HelmRenderer) -> dict[str, str]:
    return helm.render(EVERYTHING_ON)


def by_kind(rendered: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    kinds: dict[str, list[dict[str, Any]]] = {}
    for item in manifests(rendered):
        kinds.setdefault(item["kind"], []).append(item)
    return kinds


def named(rendered: dict[str, str], kind: str, suffix: str) -> dict[str, Any]:
    (match,) = [i for i in by_kind(rendered)[kind] if i["metadata"]["name"].endswith(suffix)]
    return match


@pytest.mark.parametrize("overrides", [{}, EVERYTHING_ON], ids=["defaults", "everything-on"])
def test_helm_lint_strict_passes(helm, overrides):
    assert helm.lint(overrides) == []


def test_helm_template_output_is_split_by_source():
    stream = (
        "---\n# Source: slmops/templates/service.yaml\nkind: Service\nmetadata: {name: a}\n"
        "---\n# Source: slmops/templates/service.yaml\nkind: Service\nmetadata: {name: b}\n"
        "---\n# Source: slmops/templates/pvc.yaml\nkind: PersistentVolumeClaim\n"
    )
    rendered = _split_sources(stream)
    assert set(rendered) == {"slmops/templates/service.yaml", "slmops/templates/pvc.yaml"}
    kinds = [m["kind"] for m in manifests(rendered)]
    assert kinds == ["PersistentVolumeClaim", "Service", "Service"]


def test_defaults_render_serve_and_console_only(default_render):
    kinds = {kind: len(items) for kind, items in by_kind(default_render).items()}
    assert kinds == {
        "ServiceAccount": 1, "ConfigMap": 1, "Secret": 1, "PersistentVolumeClaim": 1,
        "Deployment": 2, "Service": 2, "Pod": 1,  # the Pod is `helm test`'s hook
    }  # fmt: skip
    notes = default_render.get("slmops/templates/NOTES.txt")  # `helm template` prints none
    assert notes is None or "port-forward" in notes


def test_everything_on_adds_hpa_ray_and_service_monitor(full_render):
    kinds = by_kind(full_render)
    assert {"HorizontalPodAutoscaler", "RayCluster", "ServiceMonitor"} <= set(kinds)
    assert "Secret" not in kinds, "an existingSecret replaces the chart's Secret"
    assert len(kinds["ConfigMap"]) == 2, "settings, and the config.toml file"


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (pip) checks manifests against schemas"
    )


@pytest.mark.parametrize("which", ["default_render", "full_render"])
def test_manifests_follow_the_kubernetes_schemas(which, request, kubernetes_validate):
    rendered = request.getfixturevalue(which)
    version = kubernetes_validate.latest_version()
    checked = 0
    for item in manifests(rendered):
        if item["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{item['kind']}/{item['metadata']['name']}: {error.message}")
        checked += 1
    assert checked >= 8


def test_schema_validation_catches_mistakes(default_render, kubernetes_validate):
    deployment = named(default_render, "Deployment", "-serve")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def containers(rendered: dict[str, str]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in by_kind(rendered)["Deployment"]:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            yield deployment, container


@pytest.mark.parametrize("which", ["default_render", "full_render"])
def test_workloads_are_probed_limited_and_non_root(which, request):
    rendered = request.getfixturevalue(which)
    config_maps = {c["metadata"]["name"] for c in by_kind(rendered)["ConfigMap"]}
    for deployment, container in containers(rendered):
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod["metadata"]["labels"].items(), name
        assert container["image"] and ":" in container["image"], name
        assert {"requests", "limits"} <= set(container["resources"]), name
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in ports, f"{name}: {probe}"
        security = pod["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        args = container["args"]
        assert args[args.index("--host") + 1] == "0.0.0.0"
        assert str(ports["http"]) == args[args.index("--port") + 1]
        assert args[args.index("--keys-file") + 1] == KEYS_FILE
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        keys_volume = volumes[mounts[KEYS_FILE.rsplit("/", 1)[0]]]["secret"]
        assert {"key": "api-keys", "path": "api-keys"} in keys_volume["items"]
        assert "/workspace" in mounts and "/tmp" in mounts, "read-only root: writable dirs"
        assert container["envFrom"][0]["configMapRef"]["name"] in config_maps
        if container["name"] == "serve":
            paths = {container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")}
            assert paths == {"/healthz", "/readyz"} and paths <= unguarded_routes()
        else:
            assert container["args"][0] == "ui"
            assert container["livenessProbe"]["httpGet"]["path"] == "/login"


@pytest.mark.parametrize("which", ["default_render", "full_render"])
def test_services_and_monitor_reach_the_pods(which, request):
    rendered = request.getfixturevalue(which)
    pods = [
        (d["spec"]["template"]["metadata"]["labels"], c)
        for d, c in containers(rendered)
    ]  # fmt: skip
    services = by_kind(rendered)["Service"]
    for service in services:
        selector = service["spec"]["selector"]
        targets = [c for labels, c in pods if selector.items() <= labels.items()]
        assert len(targets) == 1, service["metadata"]["name"]
        names = {p["name"] for p in targets[0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    for monitor in by_kind(rendered).get("ServiceMonitor", []):
        (service,) = [
            s for s in services
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]  # fmt: skip
        assert service["metadata"]["name"].endswith("-serve")
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["path"] == "/metrics" and endpoint["path"] in unguarded_routes()
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_autoscaling_takes_over_the_replica_count(full_render):
    serve = named(full_render, "Deployment", "-serve")
    (hpa,) = by_kind(full_render)["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == serve["metadata"]["name"]
    assert "replicas" not in serve["spec"], "the HPA owns the replica count"
    assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu", "memory"}


def test_ray_cluster_for_kuberay(full_render):
    (cluster,) = by_kind(full_render)["RayCluster"]
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    head = spec["headGroupSpec"]
    (head_container,) = head["template"]["spec"]["containers"]
    assert head_container["image"].split(":")[1].startswith(spec["rayVersion"] + "-")
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "KubeRay wants strings"
    assert {p["containerPort"] for p in head_container["ports"]} >= {6379, 8265, 10001}
    (workers,) = spec["workerGroupSpecs"]
    assert workers["minReplicas"] <= workers["replicas"] <= workers["maxReplicas"]
    (worker,) = workers["template"]["spec"]["containers"]
    assert worker["image"] == head_container["image"] and worker["resources"]["limits"]
    settings = named(full_render, "ConfigMap", "-settings")["data"]
    assert settings["RAY_ADDRESS"].startswith(f"ray://{cluster['metadata']['name']}-head-svc.")


def test_settings_and_secrets_reach_slmops(default_render, full_render):
    from slmops.store.settings import Settings

    for rendered in (default_render, full_render):
        data = named(rendered, "ConfigMap", "-settings")["data"]
        for key in data:
            if key.startswith("SLMOPS_") and key != "SLMOPS_HOME":
                assert key.removeprefix("SLMOPS_").lower() in Settings.model_fields, key
    full = named(full_render, "ConfigMap", "-settings")["data"]
    assert full["SLMOPS_REDACT"] == "email,api_key" and full["AWS_REGION"] == "us-east-1"
    serve = named(full_render, "Deployment", "-serve")
    (container,) = serve["spec"]["template"]["spec"]["containers"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert refs["SLMOPS_DATABASE_URL"]["name"] == "slmops-credentials"
    assert container["args"][-2:] == ["--max-queue", "64"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/workspace/config.toml"]["subPath"] == "config.toml"
    (secret,) = by_kind(default_render)["Secret"]
    generated = base64.b64decode(secret["data"]["api-keys"]).decode()
    assert len(generated) >= 16, "a generated key must pass slmops' own length check"


def test_given_api_keys_become_the_keys_file(helm):
    keys = ["k" * 16 + "-first", "k" * 16 + "-second"]
    (secret,) = by_kind(helm.render({"secrets": {"apiKeys": keys}}))["Secret"]
    assert base64.b64decode(secret["data"]["api-keys"]).decode().splitlines() == keys


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"autoscaling": {"enabled": True}}, "shared metadata database"),
        ({"serve": {"replicaCount": 2}, "secrets": {"databaseUrl": "postgresql://h/db"}},
         "ReadWriteOnce"),
        ({"secrets": {"apiKeys": ["too-short"]}}, "at least 16 characters"),
        ({"ray": {"enabled": True, "worker": {"replicas": 9}}}, "ray.worker.replicas"),
    ],
    ids=["replicas-without-database", "replicas-on-rwo-volume", "short-key", "ray-replicas"],
)  # fmt: skip
def test_settings_that_cannot_work_fail_the_render(helm, overrides, message):
    with pytest.raises(RenderError, match=message):
        helm.render(overrides)
