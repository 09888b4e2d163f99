"""The dependency audit of ``make lint`` (scripts/audit_dependencies.py): OSV range matching,
the ignore file with its expiry dates, the vendored snapshot and its regeneration."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "audit_dependencies.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit_dependencies", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


audit = _load()
Advisory = audit.Advisory


@pytest.fixture
def runtime() -> Iterator[None]:
    """These tests need no workspace (overrides the suite's autouse fixture)."""
    yield None


def advisory(*ranges: list[tuple[str, str]], versions: tuple[str, ...] = (), **kw: object):
    return Advisory(
        id=kw.pop("id", "PYSEC-0000-1"),
        package=kw.pop("package", "demo"),
        ranges=tuple(tuple(r) for r in ranges),
        versions=frozenset(versions),
        **kw,
    )


# --- ranges ------------------------------------------------------------------------------------


def test_introduced_and_fixed_bound_a_half_open_range() -> None:
    adv = advisory([("introduced", "1.2"), ("fixed", "1.4.1")])
    assert [
        v for v in ("1.1.9", "1.2", "1.3", "1.4.0", "1.4.1", "2.0") if audit.affects(adv, v)
    ] == [
        "1.2",
        "1.3",
        "1.4.0",
    ]


def test_last_affected_is_inclusive_and_open_ranges_never_close() -> None:
    last = advisory([("introduced", "0"), ("last_affected", "3.0.2")])
    assert audit.affects(last, "3.0.2") and not audit.affects(last, "3.0.3")
    assert audit.fixed_versions(last, "3.0.2") == []  # no fixed release is known
    never_fixed = advisory([("introduced", "2.0")])
    assert audit.affects(never_fixed, "99.0") and not audit.affects(never_fixed, "1.9")


def test_one_range_with_two_branches_as_the_database_writes_them() -> None:
    # urllib3's PYSEC-2023-192: events out of version order in one range, two branches
    adv = advisory(
        [("introduced", "2.0.0"), ("fixed", "2.0.6"), ("introduced", "0"), ("fixed", "1.26.17")]
    )
    affected = {v: audit.affects(adv, v) for v in ("1.26.16", "1.26.17", "2.0.0", "2.0.5", "2.0.6")}
    assert affected == {
        "1.26.16": True,
        "1.26.17": False,
        "2.0.0": True,
        "2.0.5": True,
        "2.0.6": False,
    }
    assert audit.fixed_versions(adv, "1.26.16") == ["1.26.17", "2.0.6"]
    assert audit.fixed_versions(adv, "2.0.1") == ["2.0.6"]


def test_pre_releases_and_post_releases_order_as_pep_440_says() -> None:
    adv = advisory([("introduced", "0"), ("fixed", "2.0")])
    assert audit.affects(adv, "2.0rc1")  # before the fix
    assert audit.affects(adv, "1.9.post1")
    assert not audit.affects(adv, "2.0.post1")


def test_several_ranges_are_alternatives() -> None:
    adv = advisory(
        [("introduced", "1.0"), ("fixed", "1.1")], [("introduced", "3.0"), ("fixed", "3.2")]
    )
    assert [v for v in ("0.9", "1.0", "2.0", "3.1", "3.2") if audit.affects(adv, v)] == [
        "1.0",
        "3.1",
    ]


def test_listed_versions_match_exactly_or_after_normalisation() -> None:
    adv = advisory(versions=("2.0", "0.3.2d", "1.0-git"))
    assert audit.affects(adv, "2.0") and audit.affects(adv, "2.0.0")  # 2.0 == 2.0.0
    assert audit.affects(adv, "0.3.2d")  # not PEP 440 ("d"): exact text still matches
    assert audit.affects(adv, "1.0-git")
    assert not audit.affects(adv, "2.0.1") and not audit.affects(adv, "1.0")


def test_unparseable_installed_versions_only_match_by_listing() -> None:
    adv = advisory([("introduced", "0"), ("fixed", "5")])
    assert not audit.affects(adv, "not-a-version")
    assert audit.affects(advisory(versions=("not-a-version",)), "not-a-version")


def test_match_canonicalises_names_and_reports_fixes() -> None:
    advisories = [
        advisory(
            [("introduced", "0"), ("fixed", "3.1.5")],
            package="jinja2",
            id="PYSEC-1",
            aliases=("CVE-1",),
        ),
        advisory([("introduced", "0"), ("fixed", "1.0")], package="foo-bar", id="PYSEC-2"),
        advisory([("introduced", "0"), ("fixed", "1.0")], package="absent", id="PYSEC-3"),
    ]
    findings = audit.match({"Jinja2": "3.1.4", "Foo_Bar": "0.5", "other": "1.0"}, advisories)
    assert [(f.package, f.version, f.id, f.fixed) for f in findings] == [
        ("foo-bar", "0.5", "PYSEC-2", ["1.0"]),
        ("jinja2", "3.1.4", "PYSEC-1", ["3.1.5"]),
    ]
    assert findings[1].names == {"PYSEC-1", "CVE-1"}
    assert audit.match({"jinja2": "3.1.5"}, advisories) == []


# --- the ignore file ---------------------------------------------------------------------------


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def finding(**kw: object):
    values = {"package": "demo", "version": "1.0", "id": "PYSEC-1", "aliases": ("CVE-1",)}
    values.update(kw)
    return audit.Finding(**values)


def test_an_entry_accepts_by_id_or_alias_until_it_expires(tmp_path: Path) -> None:
    ignores = audit.load_ignores(
        write(
            tmp_path / "ignore.toml",
            '[[ignore]]\nid = "CVE-1"\nreason = "the CLI path is never used"\n'
            "expires = 2030-01-31\n",
        )
    )
    assert ignores == [audit.Ignore("CVE-1", "the CLI path is never used", date(2030, 1, 31))]
    on_last_day, after = finding(), finding()
    audit.apply_ignores([on_last_day], ignores, date(2030, 1, 31))
    audit.apply_ignores([after], ignores, date(2030, 2, 1))
    assert on_last_day.accepted == "the CLI path is never used"
    assert after.accepted is None  # expired: the finding counts again


def test_an_entry_limited_to_a_package_accepts_nothing_else(tmp_path: Path) -> None:
    ignores = audit.load_ignores(
        write(
            tmp_path / "ignore.toml",
            '[[ignore]]\nid = "PYSEC-1"\npackage = "Demo_Pkg"\nreason = "r"\n'
            'expires = "2030-01-01"\n',
        )
    )
    mine, other = finding(package="demo-pkg"), finding(package="another")
    audit.apply_ignores([mine, other], ignores, date(2029, 1, 1))
    assert mine.accepted == "r" and other.accepted is None


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[ignore]]\nid = "X"\nexpires = 2030-01-01\n', "'reason' must be a non-empty string"),
        ('[[ignore]]\nid = "X"\nreason = "  "\nexpires = 2030-01-01\n', "'reason'"),
        ('[[ignore]]\nid = "X"\nreason = "r"\n', "'expires' must be a date"),
        ('[[ignore]]\nid = "X"\nreason = "r"\nexpires = "soon"\n', "'expires' must be a date"),
        ('[[ignore]]\nreason = "r"\nexpires = 2030-01-01\n', "'id'"),
        ('[[ignore]]\nid = "X"\nreason = "r"\nexpires = 2030-01-01\nuntil = 1\n', "unknown key"),
        ('ignore = "PYSEC-1"\n', "array of tables"),
        ('[ignores]\nid = "X"\n', "unknown key"),
        ("[[ignore]\n", "line 1"),  # not TOML
    ],
)
def test_a_malformed_entry_is_an_error_naming_it(tmp_path: Path, text: str, complaint: str) -> None:
    with pytest.raises(audit.AuditError, match="ignore.toml") as raised:
        audit.load_ignores(write(tmp_path / "ignore.toml", text))
    assert complaint in str(raised.value)


def test_a_missing_ignore_file_accepts_nothing_and_the_shipped_one_is_valid(
    tmp_path: Path,
) -> None:
    assert audit.load_ignores(tmp_path / "absent.toml") == []
    for entry in audit.load_ignores(audit.IGNORE_FILE):  # AuditError for a malformed entry
        assert entry.reason and entry.expires


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    snapshot = {
        "source": audit.SOURCE,
        "commit": "0123456789abcdef",
        "snapshot_date": "2024-10-10",
        "packages": ["demo", "safe"],
        "advisories": [
            advisory(
                [("introduced", "0"), ("fixed", "1.5")],
                id="PYSEC-1",
                aliases=("CVE-1",),
                summary="demo leaks",
            ).to_json(),
        ],
    }
    snapshot_path = tmp_path / "snapshot.json"
    snapshot_path.write_text(json.dumps(snapshot))
    monkeypatch.setattr(
        audit, "installed_distributions", lambda: {"demo": "1.0", "safe": "2.0", "extra": "1"}
    )
    return {"snapshot": snapshot_path, "ignore": tmp_path / "ignore.toml"}


def run_main(env: dict[str, Path], *extra: str) -> int:
    return audit.main(
        [
            "--offline",
            "--snapshot",
            str(env["snapshot"]),
            "--ignore-file",
            str(env["ignore"]),
            *extra,
        ]
    )


def test_a_finding_fails_the_audit_with_a_table(fake_env, capsys: pytest.CaptureFixture) -> None:
    assert run_main(fake_env) == 1
    out = capsys.readouterr().out
    assert "advisory-database 0123456789ab of 2024-10-10" in out
    row = next(line for line in out.splitlines() if line.startswith("demo "))
    assert row.split() == ["demo", "1.0", "PYSEC-1", "CVE-1", "1.5", "VULNERABLE"]
    assert "not in the snapshot, so not checked: extra" in out
    assert "1 vulnerable, 0 accepted" in out


def test_an_accepted_finding_passes_and_an_expired_one_fails(fake_env, capsys) -> None:
    future = (date.today() + timedelta(days=30)).isoformat()
    past = (date.today() - timedelta(days=1)).isoformat()
    write(
        fake_env["ignore"],
        f'[[ignore]]\nid = "CVE-1"\nreason = "not reachable"\nexpires = {future}\n',
    )
    assert run_main(fake_env) == 0
    assert "accepted: not reachable" in capsys.readouterr().out
    write(
        fake_env["ignore"],
        f'[[ignore]]\nid = "CVE-1"\nreason = "not reachable"\nexpires = {past}\n',
    )
    assert run_main(fake_env) == 1
    out = capsys.readouterr().out
    assert f"expired ignore entry (accepts nothing now): CVE-1, {past}" in out
    assert "VULNERABLE" in out


def test_json_output_and_errors_exit_2(fake_env, capsys) -> None:
    assert run_main(fake_env, "--json") == 1
    (only,) = json.loads(capsys.readouterr().out)
    assert (only["package"], only["id"], only["fixed"]) == ("demo", "PYSEC-1", ["1.5"])
    write(fake_env["ignore"], '[[ignore]]\nid = "CVE-1"\n')
    assert run_main(fake_env) == 2
    assert "'reason' must be a non-empty string" in capsys.readouterr().err
    fake_env["snapshot"].write_text("{}")
    fake_env["ignore"].unlink()
    assert run_main(fake_env) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_an_unreachable_pypi_falls_back_to_the_snapshot(fake_env, monkeypatch, capsys) -> None:
    monkeypatch.setattr(audit, "_pypi_answers", lambda installed, timeout: False)
    code = audit.main(["--snapshot", str(fake_env["snapshot"]), "--ignore-file", "/nonexistent"])
    assert code == 1
    assert "PyPI's vulnerability API is not reachable from here" in capsys.readouterr().out


def test_pip_audit_skipping_every_package_counts_as_unreachable(monkeypatch) -> None:
    # what a local PyPI mirror gives: every package "not found on PyPI"
    monkeypatch.setattr(audit, "_pypi_answers", lambda installed, timeout: True)
    report = {"dependencies": [{"name": "demo", "skip_reason": "Dependency not found on PyPI"}]}
    monkeypatch.setattr(
        audit.subprocess,
        "run",
        lambda *a, **k: subprocess.CompletedProcess(a, 0, json.dumps(report), ""),
    )
    assert audit.online_audit({"demo": "1.0"}, 5) == (
        None,
        "pip-audit found none of the installed packages on PyPI",
    )
    report = {
        "dependencies": [
            {
                "name": "Demo",
                "version": "1.0",
                "vulns": [
                    {
                        "id": "GHSA-1",
                        "fix_versions": ["1.5"],
                        "aliases": ["CVE-1"],
                        "description": "d",
                    }
                ],
            },
            {"name": "other", "skip_reason": "Dependency not found on PyPI"},
        ]
    }
    findings, source = audit.online_audit({"demo": "1.0"}, 5)
    assert source == "pip-audit (PyPI)"
    assert [(f.package, f.id, f.fixed, f.aliases) for f in findings] == [
        ("demo", "GHSA-1", ["1.5"], ("CVE-1",))
    ]


# --- the snapshot ------------------------------------------------------------------------------

OSV = """\
id: {id}
aliases: [CVE-2024-1]
summary: {summary}
{extra}
affected:
- package: {{name: {name}, ecosystem: PyPI}}
  ranges:
  - type: ECOSYSTEM
    events: [{{introduced: "0"}}, {{fixed: "1.2"}}]
  - type: GIT
    repo: https://example.invalid/demo
    events: [{{introduced: abc}}, {{fixed: def}}]
  versions: ["1.0", "1.1", "0.9-legacy"]
- package: {{name: {name}, ecosystem: npm}}
  ranges: [{{type: SEMVER, events: [{{introduced: "0"}}]}}]
"""


def osv_tree(root: Path) -> Path:
    for folder, ident, name, extra in [
        ("demo", "PYSEC-2024-1", "Demo", ""),
        ("demo", "PYSEC-2024-2", "demo", "withdrawn: '2024-05-01T00:00:00Z'"),
        ("other", "PYSEC-2024-3", "not-ours", ""),
    ]:
        (root / "vulns" / folder).mkdir(parents=True, exist_ok=True)
        (root / "vulns" / folder / f"{ident}.yaml").write_text(
            OSV.format(id=ident, name=name, summary=f"{ident} is bad. More text.", extra=extra)
        )
    return root


def test_regenerating_keeps_only_our_live_pypi_advisories(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    target = tmp_path / "out" / "advisories.json"
    snapshot = audit.regenerate(osv_tree(tmp_path / "db"), {"demo"}, target)
    assert snapshot["commit"] == "unknown"  # a plain folder, not a git checkout
    assert json.loads(target.read_text()) == snapshot
    (only,) = snapshot["advisories"]
    assert only == {
        "id": "PYSEC-2024-1",
        "package": "demo",
        "aliases": ["CVE-2024-1"],
        "summary": "PYSEC-2024-1 is bad.",
        "ranges": [[{"introduced": "0"}, {"fixed": "1.2"}]],  # the GIT range is dropped
        "versions": ["0.9-legacy"],  # 1.0 and 1.1 are inside the range already
    }
    loaded = audit.load_snapshot(target)
    assert [f.id for f in audit.match({"demo": "0.9-legacy"}, loaded.advisories)] == [
        "PYSEC-2024-1"
    ]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_regenerating_from_a_bare_clone_records_its_commit(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    work = osv_tree(tmp_path / "db")

    def git(*args: str, cwd: Path = work) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=cwd,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "advisories")
    commit = git("rev-parse", "HEAD")
    git("clone", "-q", "--bare", str(work), str(tmp_path / "bare.git"), cwd=tmp_path)
    snapshot = audit.regenerate(tmp_path / "bare.git", {"demo"}, tmp_path / "a.json")
    assert snapshot["commit"] == commit
    assert snapshot["snapshot_date"] == date.today().isoformat()
    assert [a["id"] for a in snapshot["advisories"]] == ["PYSEC-2024-1"]


def test_the_vendored_snapshot_covers_every_declared_dependency() -> None:
    snapshot = audit.load_snapshot()
    assert len(snapshot.commit) == 40 and date.fromisoformat(snapshot.date)
    assert audit.SNAPSHOT.stat().st_size < 200_000  # a filtered snapshot, not the database
    missing = audit.dependency_closure() - snapshot.packages
    assert not missing, (
        f"{sorted(missing)} are dependencies now but not in {audit.SNAPSHOT.name}: run "
        "python scripts/audit_dependencies.py --regenerate PATH-TO-pypa/advisory-database"
    )
