"""No silent empty answers: a value that names nothing is an error with close matches
(exit 2, and an exception in the API), exit codes agree across commands, and the small
inconsistencies a newcomer meets first."""

from __future__ import annotations

import re

import pytest

import saereg
from saereg.base.errors import SaeregError, UnknownReferenceError

from ..publishers import release_yaml, saelens_folder
from .probe import Score, run_cli

HOOK = {"hook_name": "blocks.3.hook_resid_pre", "hook_layer": 3, "d_sae": 16}


def test_unknown_filter_values_are_errors_with_close_matches() -> None:
    score = Score("empty answers")
    cases = {
        "--model gpt3": ("--model", "gpt3", "gpt2"),
        "--format saelen": ("--format", "saelen", "saelens"),
        "--release gemma-scope-2b-pt-rez": (
            "--release",
            "gemma-scope-2b-pt-rez",
            "gemma-scope-2b-pt-res",
        ),
        "--hook blocks.8.hook_resid_prex": ("--hook", "blocks.8.hook_resid_prex", "blocks.8."),
    }
    for what, (flag, value, near) in cases.items():
        result = score.cli(f"list {what}", "list", flag, value, codes=(2,))
        score.check(f"list {what}: names {near!r}", near in result.err, result.err)
        try:
            saereg.list_saes(**{flag.removeprefix("--"): value})
            ok, detail = False, "returned"
        except UnknownReferenceError as exc:
            ok, detail = near in str(exc), str(exc)
        score.check(f"list_saes({flag[2:]}={value!r}) raises", ok, detail)
    for what, args in {
        "a glob matching nothing": ("--release", "no-such-*"),
        "an alias": ("--model", "openai-community/gpt2"),
        "a width as text": ("--width", "16k", "--layer", "3"),
    }.items():
        score.cli(what, "list", *args, codes=(0,))
    as_text = saereg.list_saes(width="16k", model="gemma-2-2b", layer=3)
    as_int = saereg.list_saes(width=16384, model="gemma-2-2b", layer=3)
    score.check("list_saes(width='16k') is width=16384", bool(as_int) and as_text == as_int)
    for bad in ("16q", "sixteen", "-3"):
        try:
            saereg.list_saes(width=bad)
            ok = False
        except SaeregError:
            ok = True
        score.check(f"list_saes(width={bad!r}) raises", ok)
    score.done()


def test_cache_commands_with_a_reference_that_names_nothing(hubenv) -> None:
    score = Score("empty answers")
    for action in ("verify", "rm"):
        result = score.cli(
            f"cache {action}, typo in the SAE id",
            "cache",
            action,
            "gpt2-small-res-jb/blocks.8.hook_resid_prex",
            codes=(2,),
        )
        score.check(f"cache {action}: suggests", "blocks.8.hook_resid_pre" in result.err)
        score.cli(f"cache {action}, unknown release", "cache", action, "nothing/here", codes=(2,))
    score.cli(
        "cache verify, a catalogued SAE not cached",
        "cache",
        "verify",
        "gpt2-small-res-jb/blocks.8.hook_resid_pre",
        codes=(0,),
    )
    score.done()


def test_exit_codes_agree(hubenv, tmp_path, monkeypatch) -> None:
    score = Score("exit codes")
    score.cli("new, unknown format", "new", "--repo", "a/b", "--format", "saelen", codes=(2,))
    missing = str(tmp_path / "missing.yaml")
    score.cli("migrate, a missing file", "migrate", missing, codes=(2,))
    score.cli("validate, a missing file", "validate", missing, codes=(2,), one_line=False)
    files, _ = saelens_folder("g")
    hubenv.hub.add_commit("test-org/codes", files)
    saes = [{"id": "g", "path": "g", **HOOK}]
    hubenv.add_release("codes", release_yaml("codes", "saelens", saes, repo_id="test-org/codes"))
    before = len(hubenv.hub.requests)
    for junk in ("yes", "true", "2", "off", "x"):
        result = score.cli(
            f"SAEREG_IN_PLACE={junk}",
            "fetch",
            "codes/g",
            "--quiet",
            env={"SAEREG_IN_PLACE": junk},
        )
        score.check(f"SAEREG_IN_PLACE={junk}: named", "SAEREG_IN_PLACE" in result.err, result.err)
    score.check("junk SAEREG_IN_PLACE fails before any download", hubenv.count() == before)
    for good in ("0", "1", ""):
        score.cli(
            f"SAEREG_IN_PLACE={good!r}",
            "fetch",
            "codes/g",
            env={"SAEREG_IN_PLACE": good},
            codes=(0,),
        )
    empty = tmp_path / "not-a-checkout"
    empty.mkdir()
    monkeypatch.chdir(empty)
    result = score.cli("docs --check outside a checkout", "docs", "--check", codes=(2,))
    score.check("says there is no docs/", "no docs/" in result.err, result.err)
    score.check("no talk of stale pages", "stale" not in result.err, result.err)
    try:
        sae = saereg.load_sae("codes/g", device="cpu:0", quiet=True)
        ok, detail = sae.W_enc.device.type == "cpu", str(sae.W_enc.device)
    except SaeregError as exc:
        ok, detail = False, str(exc)
    score.check("load_sae(device='cpu:0') works", ok, detail)
    try:
        saereg.load_sae("codes/g", device="cpu:3", quiet=True)
        ok = False
    except SaeregError:
        ok = True
    score.check("load_sae(device='cpu:3') is refused", ok)
    score.done()


@pytest.mark.parametrize("release", ["eleutherai-sae-pythia-70m-32k", "gpt2-small-res-jb"])
def test_info_names_the_model_once(release) -> None:
    score = Score("empty answers")
    result = score.cli(f"info {release}", "info", release, codes=(0,))
    labelled = re.findall(r"^\s*model\s{2,}", result.out, re.MULTILINE)  # the first column
    score.check(f"info {release}: one 'model' line", len(labelled) == 1, result.out[:600])
    score.done()


def test_validate_reports_lints_and_schema_errors_together(tmp_path) -> None:
    score = Score("exit codes")
    path = tmp_path / "both.yaml"
    path.write_text(
        release_yaml(
            "both",
            "saelens",
            [
                {
                    "id": "a",
                    "path": "../a",
                    "hook_name": "blocks.8.hook_resid_pre",
                    "hook_layer": 7,
                    "d_sae": "lots",
                }
            ],
            repo_id="o/r",
            model="gpt2-small",
        ),
        encoding="utf-8",
    )
    result = run_cli("validate", str(path), "--standalone", "--no-hints")
    score.check("exit 1", result.rc == 1, result.err)
    for code in ("[schema]", "[unsafe-path]", "[hook-layer]"):
        score.check(f"reports {code} in the same run", code in result.out, result.out[-800:])
    score.check("no traceback", "Traceback" not in result.err + result.out)
    score.done()


def test_the_same_files_listed_twice_share_their_l0() -> None:
    """Gemma Scope's canonical entries point at an average_l0_N folder of the full release:
    the catalogue page's L0 filter must not drop them for want of the value the other
    listing has (publish/importer.py `join_same_files`)."""
    from saereg.catalogue.release_dirs import release_dirs
    from saereg.catalogue.release_files import read_releases

    score = Score("catalogue data")
    by_files: dict[tuple[str, str], list[tuple[str, object]]] = {}
    for rel in read_releases(release_dirs()):
        for e in rel.saes:
            if rel.repo_id:
                by_files.setdefault((rel.repo_id, e.path.strip("/")), []).append(
                    (f"{rel.name}/{e.id}", e.l0)
                )
    shared = {k: v for k, v in by_files.items() if len(v) > 1}
    score.check(
        "the canonical Gemma Scope entries share files", len(shared) > 100, str(len(shared))
    )
    partial = [
        listed
        for listed in shared.values()
        if any(l0 is None for _, l0 in listed) and any(l0 is not None for _, l0 in listed)
    ]
    score.check(
        "l0 is known in every listing of the same files, or in none", not partial, str(partial[:3])
    )
    canonical = saereg.list_saes(release="gemma-scope-2b-pt-res-canonical")
    score.check("canonical SAEs have an L0", all(r["l0"] is not None for r in canonical))
    score.done()
