"""Audit the installed dependencies with pip-audit (run by `make audit`, in CI after `make test`).

Exit 1 on any known vulnerability that ``scripts/audit-exceptions.txt`` does not list with a reason.
Packages pip-audit could not look up (no route to its vulnerability service, as on machines that only
reach a package mirror) are not a pass: they are counted and named in the report, and ``--strict``
turns them into a failure. The Markdown summary goes to ``test-artifacts/pip-audit.txt``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

EXCEPTIONS = Path(__file__).with_name("audit-exceptions.txt")
REPORT = Path("test-artifacts/pip-audit.txt")


def _exceptions() -> dict[str, str]:
    """``ID reason...`` per line; a finding listed here is documented, not silently ignored."""
    found = {}
    for line in EXCEPTIONS.read_text().splitlines():
        vuln_id, _, reason = line.partition(" ")
        if vuln_id and not vuln_id.startswith("#"):
            if not reason.strip():
                raise SystemExit(f"{EXCEPTIONS}: {vuln_id} needs a reason")
            found[vuln_id] = reason.strip()
    return found


def evaluate(deps: list[dict], documented: dict[str, str], strict: bool) -> tuple[list[str], int]:
    """The report lines and exit status for pip-audit's JSON ``dependencies`` list."""
    unaudited = sorted(d["name"] for d in deps if "skip_reason" in d)
    findings = [(d["name"], d["version"], v) for d in deps for v in d.get("vulns", [])]
    lines = [f"pip-audit checked {len(deps) - len(unaudited)} of {len(deps)} installed packages."]
    if unaudited:
        lines.append(
            f"{len(unaudited)} could not be audited (their vulnerability data was not reachable from this "
            f"machine), so for them this run proves nothing: {', '.join(unaudited)}."
        )
    for name, version, vuln in findings:
        fix = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
        note = documented.get(vuln["id"], "OPEN: fix it or document it in scripts/audit-exceptions.txt")
        lines.append(f"- {name} {version}: {vuln['id']} (fixed in {fix}): {note}")
    if not findings and len(unaudited) < len(deps):
        lines.append("No known vulnerabilities in the audited packages.")
    if any(v["id"] not in documented for _, _, v in findings):
        return lines, 1
    return lines, 1 if strict and unaudited else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--strict", action="store_true", help="fail when some packages could not be audited")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--skip-editable", "-l"]
    run = subprocess.run([*command, "-f", "json"], capture_output=True, text=True)
    try:
        deps = json.loads(run.stdout)["dependencies"]
    except (json.JSONDecodeError, KeyError):
        print(f"pip-audit failed (exit {run.returncode}):\n{run.stderr}", file=sys.stderr)
        return 2
    lines, status = evaluate(deps, _exceptions(), args.strict)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
