"""Every YAML file of the deployment parses, and yamllint (pip) passes it with
deploy/.yamllint. Helm templates are Go templates, not YAML: test_helm.py renders them."""

from __future__ import annotations

import pytest

from tests.deploy.common import CHART, COMPOSE, DEPLOY, ROOT, load_all_yaml, plain_yaml_files

FILES = plain_yaml_files()
CONFIG = DEPLOY / ".yamllint"


def test_the_deployment_yaml_files_are_all_found():
    names = {p.relative_to(ROOT).as_posix() for p in FILES}
    assert {
        "compose.yaml",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/slmops.yml",
        "deploy/helm/slmops/Chart.yaml",
        "deploy/helm/slmops/values.yaml",
    } <= names
    assert not [p for p in FILES if (CHART / "templates") in p.parents]


@pytest.mark.parametrize("path", FILES, ids=[p.relative_to(ROOT).as_posix() for p in FILES])
def test_yaml_parses(path):
    documents = load_all_yaml(path.read_text(encoding="utf-8"))
    assert documents and all(isinstance(d, dict) for d in documents), path


@pytest.fixture(scope="module")
def yamllint_config():
    config = pytest.importorskip("yamllint.config", reason="yamllint (pip) lints the YAML")
    return config.YamlLintConfig(file=str(CONFIG))


def lint(text: str, path: str, config) -> list[str]:
    from yamllint import linter

    return [
        f"{path}:{p.line}:{p.column}: [{p.level}] {p.message} ({p.rule})"
        for p in linter.run(text, config, path)
    ]


def test_yamllint_passes(yamllint_config):
    problems = []
    for path in FILES:
        relative = path.relative_to(ROOT).as_posix()
        if not yamllint_config.is_file_ignored(relative):
            problems += lint(path.read_text(encoding="utf-8"), relative, yamllint_config)
    assert not problems, "\n".join(problems)


def test_yamllint_config_still_catches_mistakes(yamllint_config):
    assert lint("a: 1\na: 2\n", "x.yaml", yamllint_config), "duplicate keys must be reported"
    assert lint("a:\n   - b\n", "x.yaml", yamllint_config), "odd indentation must be reported"
    assert lint("a: yes\n", "x.yaml", yamllint_config), "yes/no booleans must be reported"
    assert yamllint_config.is_file_ignored("deploy/helm/slmops/templates/deployment.yaml")
    assert not yamllint_config.is_file_ignored(COMPOSE.name)
