"""Audit the installed Python environment for dependencies with known vulnerabilities.

Run with the environment's own interpreter (``make lint`` runs ``.venv/bin/python``)::

    python scripts/audit_dependencies.py              # pip-audit online, else the snapshot
    python scripts/audit_dependencies.py --offline    # the vendored snapshot only
    python scripts/audit_dependencies.py --regenerate /path/to/advisory-database

The audit first asks PyPI's vulnerability data through pip-audit (a short probe first, so
an offline machine does not wait on timeouts). Where PyPI cannot be reached, or answers for
none of the installed packages (a local mirror), it matches the installed versions against
``security/advisories-pypi.json``: the PyPA advisory database (OSV format) filtered to the
packages of slmops' dependency closure, with the database commit and date it was taken
from. A version is affected when it falls in one of an advisory's ECOSYSTEM ranges
(``introduced`` .. ``fixed`` exclusive, or .. ``last_affected`` inclusive) or is listed in
its ``versions``.

It prints a table of the vulnerable packages with advisory ids and fixed versions, and
exits 1 when any finding is not accepted in ``security/audit-ignore.toml`` (each entry
names an advisory, a reason and an expiry date; an expired entry accepts nothing), 2 when
the snapshot or the ignore file cannot be used, 0 otherwise.

``--regenerate PATH`` rebuilds the snapshot from a checkout (or a bare clone) of
https://github.com/pypa/advisory-database, for the dependency closure of pyproject.toml
(every extra, followed through the installed packages' metadata) and whatever else is
installed in the environment it runs in (needs PyYAML, which the ``test`` extra installs).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "security" / "advisories-pypi.json"
IGNORE_FILE = ROOT / "security" / "audit-ignore.toml"
PYPROJECT = ROOT / "pyproject.toml"
SOURCE = "https://github.com/pypa/advisory-database"
# Installers are in every environment without being anyone's dependency.
TOOLING = ("pip", "setuptools", "wheel")
PROJECT = "slmops"


class AuditError(Exception):
    """The snapshot, the ignore file or the advisory database cannot be used."""


# --- advisories and matching ----------------------------------------------------------------


@dataclass(frozen=True)
class Advisory:
    """One advisory for one package: ECOSYSTEM ranges (each a list of OSV events such as
    ``{"introduced": "0"}``, ``{"fixed": "2.1"}``, ``{"last_affected": "2.0"}``) and
    explicitly listed affected versions."""

    id: str
    package: str
    ranges: tuple[tuple[tuple[str, str], ...], ...] = ()
    versions: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    summary: str = ""

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> Advisory:
        return cls(
            id=str(record["id"]),
            package=canonicalize_name(str(record["package"])),
            ranges=tuple(
                tuple((str(kind), str(value)) for event in events for kind, value in event.items())
                for events in record.get("ranges", [])
            ),
            versions=frozenset(str(v) for v in record.get("versions", [])),
            aliases=tuple(str(a) for a in record.get("aliases", [])),
            summary=str(record.get("summary", "")),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "package": self.package,
            "aliases": list(self.aliases),
            "summary": self.summary,
            "ranges": [[{kind: value} for kind, value in events] for events in self.ranges],
            "versions": sorted(self.versions),
        }


_EVENT_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}


def _sorted_events(events: Iterable[tuple[str, str]]) -> list[tuple[Version, str]]:
    """Events by version (OSV evaluates them in that order); unparseable ones are dropped."""
    parsed = []
    for kind, value in events:
        if kind not in _EVENT_ORDER:
            continue
        try:
            parsed.append((Version(value), kind))
        except InvalidVersion:
            continue
    return sorted(parsed, key=lambda e: (e[0], _EVENT_ORDER[e[1]]))


def in_range(version: Version, events: Iterable[tuple[str, str]]) -> bool:
    """Whether ``version`` is affected by one OSV range, evaluated as the OSV schema says:
    an ``introduced`` at or below it opens the range, a ``fixed`` at or below it or a
    ``last_affected`` below it closes it."""
    affected = False
    for at, kind in _sorted_events(events):
        if kind == "introduced" and version >= at:
            affected = True
        elif (kind == "fixed" and version >= at) or (kind == "last_affected" and version > at):
            affected = False
    return affected


def affects(advisory: Advisory, version: str) -> bool:
    """Whether ``advisory`` applies to ``version`` of its package."""
    if version in advisory.versions:
        return True
    try:
        parsed = Version(version)
    except InvalidVersion:
        return False  # not PEP 440: only an exact listing can name it
    if any(_valid(v) and Version(v) == parsed for v in advisory.versions):
        return True  # "2.0" listed, "2.0.0" installed
    return any(in_range(parsed, events) for events in advisory.ranges)


def _valid(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def fixed_versions(advisory: Advisory, version: str) -> list[str]:
    """The ``fixed`` versions above ``version`` in the ranges that affect it, lowest first
    (empty: no fixed release is known)."""
    try:
        parsed = Version(version)
    except InvalidVersion:
        parsed = None
    fixes: set[Version] = set()
    for events in advisory.ranges:
        if parsed is not None and not in_range(parsed, events):
            continue
        for at, kind in _sorted_events(events):
            if kind == "fixed" and (parsed is None or at > parsed):
                fixes.add(at)
    return [str(v) for v in sorted(fixes)]


@dataclass
class Finding:
    package: str
    version: str
    id: str
    aliases: tuple[str, ...] = ()
    fixed: list[str] = field(default_factory=list)
    summary: str = ""
    accepted: str | None = None  # the ignore entry's reason, when one accepts it

    @property
    def names(self) -> set[str]:
        return {self.id, *self.aliases}


def match(installed: Mapping[str, str], advisories: Iterable[Advisory]) -> list[Finding]:
    """The advisories that apply to the installed versions (names are canonicalized)."""
    versions = {canonicalize_name(name): version for name, version in installed.items()}
    findings = []
    for advisory in advisories:
        version = versions.get(advisory.package)
        if version is not None and affects(advisory, version):
            findings.append(
                Finding(
                    package=advisory.package,
                    version=version,
                    id=advisory.id,
                    aliases=advisory.aliases,
                    fixed=fixed_versions(advisory, version),
                    summary=advisory.summary,
                )
            )
    return sorted(findings, key=lambda f: (f.package, f.id))


# --- the snapshot --------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    commit: str
    date: str  # the advisory database commit's date, YYYY-MM-DD
    packages: frozenset[str]
    advisories: tuple[Advisory, ...]


def load_snapshot(path: Path = SNAPSHOT) -> Snapshot:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Snapshot(
            commit=str(data["commit"]),
            date=str(data["snapshot_date"]),
            packages=frozenset(canonicalize_name(p) for p in data["packages"]),
            advisories=tuple(Advisory.from_json(a) for a in data["advisories"]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuditError(f"advisory snapshot {path} cannot be read: {exc!r}") from None


# --- the ignore file -----------------------------------------------------------------------


@dataclass(frozen=True)
class Ignore:
    id: str
    reason: str
    expires: date
    package: str | None = None

    def accepts(self, finding: Finding, today: date) -> bool:
        return (
            today <= self.expires
            and self.id in finding.names
            and (self.package is None or self.package == finding.package)
        )


_IGNORE_KEYS = {"id", "reason", "expires", "package"}


def load_ignores(path: Path = IGNORE_FILE) -> list[Ignore]:
    """The entries of an ignore file (a missing file has none); every entry needs an ``id``,
    a ``reason`` and an ``expires`` date, and may name a ``package``."""
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise AuditError(f"{path}: {exc}") from None
    unknown_top = set(data) - {"ignore"}
    if unknown_top:
        raise AuditError(f"{path}: unknown key(s) {sorted(unknown_top)}; write [[ignore]] entries")
    entries = data.get("ignore", [])
    if not isinstance(entries, list):
        raise AuditError(f"{path}: 'ignore' must be an array of tables ([[ignore]])")
    ignores = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}, entry {number}"
        if not isinstance(entry, dict):
            raise AuditError(f"{where}: must be a table")
        unknown = set(entry) - _IGNORE_KEYS
        if unknown:
            raise AuditError(f"{where}: unknown key(s) {sorted(unknown)}")
        for key in ("id", "reason"):
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise AuditError(f"{where}: '{key}' must be a non-empty string")
        expires = entry.get("expires")
        if isinstance(expires, str):
            try:
                expires = date.fromisoformat(expires)
            except ValueError:
                expires = None
        if not isinstance(expires, date):
            raise AuditError(f"{where}: 'expires' must be a date, e.g. expires = 2025-06-30")
        package = entry.get("package")
        if package is not None and not isinstance(package, str):
            raise AuditError(f"{where}: 'package' must be a string")
        ignores.append(
            Ignore(
                id=entry["id"].strip(),
                reason=entry["reason"].strip(),
                expires=expires,
                package=canonicalize_name(package) if package else None,
            )
        )
    return ignores


def apply_ignores(findings: Iterable[Finding], ignores: Sequence[Ignore], today: date) -> None:
    """Mark each finding an unexpired entry accepts (``finding.accepted`` = its reason)."""
    for finding in findings:
        for ignore in ignores:
            if ignore.accepts(finding, today):
                finding.accepted = ignore.reason
                break


# --- the environment -----------------------------------------------------------------------


def installed_distributions() -> dict[str, str]:
    """Canonical name -> version of every distribution the running interpreter sees (the
    first of duplicates, as imports would)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def _applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": extra}) for extra in {"", *extras})


def dependency_closure(pyproject: Path = PYPROJECT) -> set[str]:
    """The canonical names of the project's requirements (every extra) and, through the
    installed packages' metadata, theirs, plus the installers."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    declared = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        declared += group
    todo: list[tuple[str, frozenset[str]]] = []
    for text in declared:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) != canonicalize_name(project["name"]):
            todo.append((requirement.name, frozenset(requirement.extras)))
    names = {canonicalize_name(t) for t in TOOLING}
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonicalize_name(name), extras)
        if key in done:
            continue
        done.add(key)
        names.add(key[0])
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # declared but not installed here: audited by name only
        for text in requires:
            try:
                requirement = Requirement(text)
            except InvalidRequirement:
                continue
            if _applies(requirement, extras):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return names


# --- online: pip-audit ---------------------------------------------------------------------


def _pypi_answers(installed: Mapping[str, str], timeout: float) -> bool:
    """Whether PyPI's per-release JSON (what pip-audit asks) answers for a package that is
    surely there; a local mirror answers 404, an offline machine not at all."""
    name = "packaging"
    version = installed.get(name)
    if version is None:
        return True  # nothing to probe with: let pip-audit find out
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def online_audit(installed: Mapping[str, str], timeout: float) -> tuple[list[Finding] | None, str]:
    """pip-audit's findings for this environment, or None (and why) where it cannot ask."""
    if not _pypi_answers(installed, min(timeout, 5.0)):
        return None, "PyPI's vulnerability API is not reachable from here"
    command = [
        sys.executable,
        "-m",
        "pip_audit",
        "--local",
        "--format",
        "json",
        "--progress-spinner",
        "off",
        "--timeout",
        str(int(min(timeout, 15))),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return None, "pip-audit is not installed"
    except subprocess.TimeoutExpired:
        return None, f"pip-audit did not finish within {timeout:.0f} s"
    try:
        report = json.loads(done.stdout)
        dependencies = report["dependencies"]
    except (ValueError, KeyError, TypeError):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"pip-audit failed: {tail[:200]}"
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:
        return None, "pip-audit found none of the installed packages on PyPI"
    findings = [
        Finding(
            package=canonicalize_name(dep["name"]),
            version=str(dep["version"]),
            id=str(vuln["id"]),
            aliases=tuple(vuln.get("aliases", [])),
            fixed=[str(v) for v in vuln.get("fix_versions", [])],
            summary=str(vuln.get("description", ""))[:160],
        )
        for dep in audited
        for vuln in dep.get("vulns", [])
    ]
    return sorted(findings, key=lambda f: (f.package, f.id)), "pip-audit (PyPI)"


# --- regenerating the snapshot -------------------------------------------------------------


def _git(repo: Path, *args: str, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True)
    if done.returncode != 0:
        raise AuditError(f"git {' '.join(args)} in {repo}: {done.stderr.decode().strip()}")
    return done.stdout


def _advisory_files(source: Path) -> tuple[list[bytes], str, str]:
    """The YAML texts under ``vulns/`` at the source's HEAD (a work tree or a bare clone),
    the commit and its date; a plain folder has commit ``unknown`` and today's date."""
    work_tree = (source / "vulns").is_dir()
    try:
        head = _git(source, "log", "-1", "--format=%H %cs").decode().split()
        commit, when = head[0], head[1]
    except (AuditError, IndexError, FileNotFoundError):
        if not work_tree:
            raise AuditError(
                f"{source} is neither an advisory-database checkout nor a clone"
            ) from None
        commit, when = "unknown", date.today().isoformat()
    if work_tree:
        files = sorted((source / "vulns").rglob("*.yaml"))
        return [p.read_bytes() for p in files], commit, when
    names = [
        n
        for n in _git(source, "ls-tree", "-r", "--name-only", commit, "vulns/").decode().split("\n")
        if n.endswith(".yaml")
    ]
    batch = _git(
        source, "cat-file", "--batch", stdin="".join(f"{commit}:{n}\n" for n in names).encode()
    )
    texts, offset = [], 0
    for _ in names:  # each object: "<sha> blob <size>\n<content>\n"
        header_end = batch.index(b"\n", offset)
        size = int(batch[offset:header_end].split()[2])
        texts.append(batch[header_end + 1 : header_end + 1 + size])
        offset = header_end + 1 + size + 1
    return texts, commit, when


def _summary(record: Mapping[str, Any]) -> str:
    text = str(record.get("summary") or record.get("details") or "").strip()
    text = re.sub(r"\s+", " ", text)
    first = re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]
    return first if len(first) <= 160 else first[:157] + "..."


def advisories_from_osv(record: Mapping[str, Any], packages: set[str]) -> list[Advisory]:
    """The advisories one OSV record holds for ``packages`` (withdrawn ones: none). Listed
    versions the ECOSYSTEM ranges already cover are dropped, which keeps the snapshot small
    without changing what it matches."""
    if record.get("withdrawn"):
        return []
    by_package: dict[str, tuple[list[tuple[tuple[str, str], ...]], set[str]]] = {}
    for affected in record.get("affected", []):
        package = affected.get("package", {})
        name = canonicalize_name(str(package.get("name", "")))
        if package.get("ecosystem") != "PyPI" or name not in packages:
            continue
        ranges, versions = by_package.setdefault(name, ([], set()))
        for entry in affected.get("ranges", []):
            if entry.get("type") == "ECOSYSTEM":
                ranges.append(
                    tuple((str(k), str(v)) for e in entry.get("events", []) for k, v in e.items())
                )
        versions.update(str(v) for v in affected.get("versions", []))
    found = []
    for name, (ranges, versions) in by_package.items():
        ranged = Advisory(id=str(record["id"]), package=name, ranges=tuple(ranges))
        extra = frozenset(v for v in versions if not (_valid(v) and affects(ranged, v)))
        found.append(
            Advisory(
                id=ranged.id,
                package=name,
                ranges=ranged.ranges,
                versions=extra,
                aliases=tuple(sorted(str(a) for a in record.get("aliases", []))),
                summary=_summary(record),
            )
        )
    return found


def regenerate(source: Path, packages: set[str], target: Path = SNAPSHOT) -> dict[str, Any]:
    """Rebuild the snapshot at ``target`` from the advisory database at ``source``."""
    import yaml  # the test extra installs PyYAML; only regenerating needs it

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    texts, commit, when = _advisory_files(source)
    advisories: list[Advisory] = []
    for text in texts:
        try:
            record = yaml.load(text, Loader=loader)  # a safe loader: CSafeLoader or SafeLoader
        except yaml.YAMLError as exc:
            raise AuditError(f"an advisory in {source} is not valid YAML: {exc}") from None
        if isinstance(record, dict) and "id" in record:
            advisories += advisories_from_osv(record, packages)
    snapshot = {
        "source": SOURCE,
        "commit": commit,
        "snapshot_date": when,
        "note": "PyPA advisories (OSV) for the dependency closure of pyproject.toml and the "
        "packages installed where it was made; regenerate with: "
        "python scripts/audit_dependencies.py --regenerate PATH-TO-advisory-database",
        "packages": sorted(packages),
        "advisories": [a.to_json() for a in sorted(advisories, key=lambda a: (a.package, a.id))],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(snapshot, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return snapshot


# --- output --------------------------------------------------------------------------------


def render(findings: Sequence[Finding]) -> str:
    """A plain-text table: package, installed version, advisory (and aliases), fixed in."""
    rows = [("package", "installed", "advisory", "aliases", "fixed in", "status")]
    for f in findings:
        rows.append(
            (
                f.package,
                f.version,
                f.id,
                ", ".join(f.aliases) or "-",
                ", ".join(f.fixed) or "no fix known",
                f"accepted: {f.accepted}" if f.accepted else "VULNERABLE",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--offline", action="store_true", help="use the snapshot only")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for pip-audit")
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT)
    parser.add_argument("--ignore-file", type=Path, default=IGNORE_FILE)
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument(
        "--regenerate",
        type=Path,
        metavar="ADVISORY_DB",
        help="rebuild the snapshot from a checkout or clone of pypa/advisory-database",
    )
    args = parser.parse_args(argv)
    try:
        if args.regenerate is not None:
            # what the project declares (every extra) and whatever else is installed here,
            # so the audit of this environment checks every package it sees
            packages = dependency_closure() | set(installed_distributions()) - {PROJECT}
            snapshot = regenerate(args.regenerate, packages, args.snapshot)
            print(
                f"wrote {args.snapshot}: {len(snapshot['advisories'])} advisories for "
                f"{len(snapshot['packages'])} packages, database {snapshot['commit'][:12]} "
                f"of {snapshot['snapshot_date']}"
            )
            return 0
        return audit(args)
    except AuditError as exc:
        print(f"audit: {exc}", file=sys.stderr)
        return 2


def audit(args: argparse.Namespace) -> int:
    ignores = load_ignores(args.ignore_file)  # a broken ignore file fails before any work
    installed = installed_distributions()
    installed.pop(PROJECT, None)  # this project itself is not on PyPI
    findings, source = (
        (None, "--offline") if args.offline else online_audit(installed, args.timeout)
    )
    if findings is None:
        reason = source
        snapshot = load_snapshot(args.snapshot)
        findings = match(installed, snapshot.advisories)
        age = (date.today() - date.fromisoformat(snapshot.date)).days
        source = (
            f"offline snapshot {args.snapshot.name} (advisory-database {snapshot.commit[:12]} "
            f"of {snapshot.date}, {age} days old; {reason})"
        )
        uncovered = sorted(set(installed) - snapshot.packages)
        if uncovered:
            source += (
                f"\n  not in the snapshot, so not checked: {', '.join(uncovered)}"
                "\n  (regenerate it if these are now dependencies)"
            )
    today = date.today()
    apply_ignores(findings, ignores, today)
    expired = [i for i in ignores if i.expires < today]
    active = [f for f in findings if not f.accepted]
    if args.json:
        print(json.dumps([vars(f) for f in findings], indent=1, default=list))
    else:
        print(f"Audited {len(installed)} installed distributions with {source}")
        if findings:
            print(render(findings))
        for ignore in expired:
            print(f"expired ignore entry (accepts nothing now): {ignore.id}, {ignore.expires}")
        print(
            f"{len(active)} vulnerable, {len(findings) - len(active)} accepted in "
            f"{args.ignore_file.name}"
            if findings
            else "No known vulnerabilities."
        )
    return 1 if active else 0


if __name__ == "__main__":
    sys.exit(main())
