"""`make audit` on pip-audit output: open findings fail, documented ones pass, unaudited is named."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "dependency_audit", Path(__file__).resolve().parents[1] / "scripts" / "dependency_audit.py"
)
audit = importlib.util.module_from_spec(spec)
spec.loader.exec_module(audit)

VULN = {"id": "GHSA-1234", "fix_versions": ["2.0"]}


def test_an_undocumented_finding_fails() -> None:
    lines, status = audit.evaluate([{"name": "foo", "version": "1.0", "vulns": [VULN]}], {}, strict=False)
    assert status == 1
    assert "- foo 1.0: GHSA-1234 (fixed in 2.0): OPEN" in lines[1]


def test_a_documented_finding_passes_with_its_reason() -> None:
    deps = [{"name": "foo", "version": "1.0", "vulns": [VULN]}, {"name": "bar", "version": "3", "vulns": []}]
    lines, status = audit.evaluate(deps, {"GHSA-1234": "only in a code path we never call"}, strict=False)
    assert status == 0
    assert lines[0] == "pip-audit checked 2 of 2 installed packages."
    assert lines[1].endswith("only in a code path we never call")


def test_unaudited_packages_are_named_and_fail_only_when_strict() -> None:
    deps = [{"name": "bar", "version": "3", "vulns": []}, {"name": "baz", "skip_reason": "not found"}]
    lines, status = audit.evaluate(deps, {}, strict=False)
    assert status == 0 and "1 could not be audited" in lines[1] and lines[1].endswith(": baz.")
    assert lines[2] == "No known vulnerabilities in the audited packages."
    assert audit.evaluate(deps, {}, strict=True)[1] == 1


def test_the_exceptions_file_parses() -> None:
    assert all(reason for reason in audit._exceptions().values())
