"""The catalogue-wide guarantee: every format used in releases/ loads, with its
publisher's math.

For each format the catalogue uses (asked of the catalogue, never listed here), the
module tests/layouts/<format>.py provides tiny SAEs in that publisher's exact layout
(contract: tests/layouts/_case.py). Each case is served by the local fake hub, wrapped
in a release file, loaded with `saereg.load_sae`, and its encode, decode and forward
are compared with the case's own reference (the publisher's math written in the test).
A format without a layout module, or with no cases, fails: it is not skipped.
"""

from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from typing import Any

import pytest
import torch

import saereg
from saereg.catalogue.index import load_index
from saereg.catalogue.release_dirs import builtin_release_dir

from .layouts._case import LayoutCase
from .layouts._serve import serve


def catalogue_formats() -> list[str]:
    """Every format the built-in release files use, from the catalogue's index. This runs
    at collection, before the session fixture points SAEREG_CACHE at a temporary
    directory: never compile the index into the user's own cache."""
    own = "SAEREG_CACHE" not in os.environ
    if own:
        os.environ["SAEREG_CACHE"] = tempfile.mkdtemp(prefix="saereg-collect-")
    try:
        index = load_index([builtin_release_dir()])
    finally:
        if own:
            shutil.rmtree(os.environ.pop("SAEREG_CACHE"), ignore_errors=True)
    return sorted({release["format"] for release in index.releases.values()})


FORMATS = catalogue_formats()


def _layout(fmt: str) -> tuple[list[LayoutCase] | None, str]:
    try:
        module = importlib.import_module(f"tests.layouts.{fmt}")
    except ModuleNotFoundError as exc:
        if exc.name != f"tests.layouts.{fmt}":
            raise
        return None, f"no tests/layouts/{fmt}.py: format {fmt!r} has no layout fixtures"
    cases = list(getattr(module, "CASES", []))
    if not cases:
        return None, f"tests/layouts/{fmt}.py defines no CASES"
    return cases, ""


def _params() -> list[Any]:
    params = []
    for fmt in FORMATS:
        cases, why = _layout(fmt)
        if cases is None:
            params.append(pytest.param(fmt, None, why, id=f"{fmt}-MISSING"))
            continue
        for case in cases:
            params.append(pytest.param(fmt, case, "", id=f"{fmt}-{case.name}"))
    return params


def test_the_catalogue_has_formats() -> None:
    assert "saelens" in FORMATS and len(FORMATS) >= 5


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_catalogued_format_has_layout_cases(fmt: str) -> None:
    cases, why = _layout(fmt)
    if cases is None:
        pytest.fail(why)
    names = [c.name for c in cases]
    assert len(set(names)) == len(names), f"duplicate case names in {fmt}: {names}"
    assert all(c.format == fmt for c in cases)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_catalogued_format_loads(fmt: str) -> None:
    from saereg.formats import get_registry

    assert get_registry().format(fmt).loads, f"format {fmt!r} only describes its SAEs"


@pytest.mark.parametrize(("fmt", "case", "why"), _params())
def test_layout_case_matches_the_publishers_math(
    hubenv: Any, fmt: str, case: LayoutCase | None, why: str
) -> None:
    if case is None:
        pytest.fail(why)
    ref = serve(hubenv, case)
    native = saereg.load_sae(ref, dtype=None)  # as stored: the checks look at it
    assert native.cfg.source["format"] == fmt
    if case.check is not None:
        case.check(native)
    # The comparison runs in float64 so that it tests the math, not rounding.
    sae = saereg.load_sae(ref, dtype="float64")
    x = torch.randn(*case.input_shape, generator=torch.Generator().manual_seed(7)).double()
    want = case.reference(x)
    tol = {"atol": case.atol, "rtol": case.atol}
    f = sae.encode(x)
    torch.testing.assert_close(f, want.encode.double(), **tol, msg=lambda m: f"encode: {m}")
    torch.testing.assert_close(
        sae.decode(f), want.decode.double(), **tol, msg=lambda m: f"decode: {m}"
    )
    torch.testing.assert_close(sae(x), want.forward.double(), **tol, msg=lambda m: f"forward: {m}")
