"""Running hostile inputs through saereg and keeping score.

Each probe runs one command (in-process where the exit code and stderr can be read that
way, a subprocess only where a real process matters) and checks what every failure must
look like: no traceback, one line on stderr (warnings aside), the documented exit code.
The figures are printed at the end of the session (see conftest.py).
"""

from __future__ import annotations

import io
import os
import traceback
from collections import defaultdict
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

#: class → [probes, failures]; plus the issue's named counters and timings.
PROBES: dict[str, list[int]] = defaultdict(lambda: [0, 0])
COUNTERS: dict[str, int] = {
    "tracebacks": 0,
    "corrupt or wrong cache entries served": 0,
    "leftover temp files": 0,
    "code executed": 0,
    "references taken over": 0,
    "requests outside a release's base": 0,
}
SECONDS: dict[str, float] = {}


@dataclass
class Result:
    rc: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip() and ": warning: " not in ln]


@dataclass
class Score:
    """The probes of one test, counted under `cls`; `done()` fails the test if any failed."""

    cls: str
    failures: list[str] = field(default_factory=list)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        PROBES[self.cls][0] += 1
        if not ok:
            PROBES[self.cls][1] += 1
            self.failures.append(f"{what}: {detail}"[:600])
        return ok

    def count(self, counter: str, n: int = 1) -> None:
        COUNTERS[counter] += n

    def cli(
        self,
        what: str,
        *argv: str,
        codes: tuple[int, ...] = (1, 2),
        one_line: bool = True,
        **kw: Any,
    ) -> Result:
        """Run `saereg ARGV` in-process and check the failure contract (`one_line`: a
        failure is one line on stderr; off for `validate`, whose report is the output)."""
        result = run_cli(*argv, **kw)
        problems = []
        if "Traceback" in result.err:
            self.count("tracebacks")
            problems.append("traceback")
        if "internal error" in result.err:  # one line, but an unexpected exception
            problems.append("internal error")
        if result.rc not in codes:
            problems.append(f"exit {result.rc}, expected {codes}")
        if one_line and result.rc != 0 and len(result.error_lines) != 1:
            problems.append(f"{len(result.error_lines)} error lines")
        self.check(what, not problems, f"{problems}: {result.err[-400:]!r}")
        return result

    def done(self) -> None:
        assert not self.failures, "\n".join(self.failures[:20])


def run_cli(*argv: str, env: dict[str, str | None] | None = None) -> Result:
    from saereg.cli import main
    from saereg.formats import reset_registry

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    for key, value in (env or {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                rc = main(list(argv))
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # what the user would have seen: a traceback
                traceback.print_exc(file=err)
                rc = -1
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        reset_registry()
    return Result(rc, out.getvalue(), err.getvalue())


def summary_lines() -> list[str]:
    total = sum(p for p, _ in PROBES.values())
    failed = sum(f for _, f in PROBES.values())
    lines = [f"fault suite: {total} probes in {len(PROBES)} classes, {failed} failures"]
    width = max((len(c) for c in PROBES), default=10)
    for cls in sorted(PROBES):
        probes, failures = PROBES[cls]
        lines.append(f"  {cls:<{width}}  {probes:>4} probes  {failures:>3} failures")
    lines.append("  " + "; ".join(f"{k}: {v}" for k, v in COUNTERS.items()))
    if SECONDS:
        lines.append(
            "  seconds to fail: " + "; ".join(f"{k} {v:.2f} s" for k, v in sorted(SECONDS.items()))
        )
    return lines
