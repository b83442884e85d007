"""`saereg refresh saelens`: a newer upstream merged into imported release files without
undoing hand-curated fields; `--dry-run` runs the same steps and writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from saereg.catalogue.release_files import read_release_file
from saereg.cli import main

from .conftest import write

UPSTREAM = """\
gpt2-small-res-jb:
  conversion_func: null
  links:
    model: https://huggingface.co/gpt2
  model: gpt2-small
  repo_id: jbloom/GPT2-Small-SAEs-Reformatted
  saes:
  - id: blocks.0.hook_resid_pre
    l0: 10.0
    neuronpedia: gpt2-small/0-res-jb
    path: blocks.0.hook_resid_pre
  - id: blocks.1.hook_resid_pre
    neuronpedia: gpt2-small/1-res-jb
    path: blocks.1.hook_resid_pre
  - id: blocks.2.hook_resid_pre
    path: blocks.2.hook_resid_pre
"""

NEWER = """\
gpt2-small-res-jb:
  conversion_func: null
  links:
    model: https://huggingface.co/openai-community/gpt2
    dashboards: https://example.org/dash
  model: gpt2
  repo_id: jbloom/GPT2-Small-SAEs-Reformatted
  saes:
  - id: blocks.0.hook_resid_pre
    l0: 12.5
    neuronpedia: gpt2-small/0-res-jb
    path: blocks.0.hook_resid_pre
  - id: blocks.1.hook_resid_pre
    neuronpedia: gpt2-small/1-res-jb
    path: v2/blocks.1.hook_resid_pre
  - id: blocks.3.hook_resid_pre
    path: blocks.3.hook_resid_pre
gpt2-small-new:
  conversion_func: null
  model: gpt2-small
  repo_id: someone/new-gpt2-saes
  saes:
  - id: blocks.5.hook_resid_pre
    path: blocks.5.hook_resid_pre
"""


def saereg(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run the command in this process (faster than a subprocess); its stdout."""
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def _catalogue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    """A fixture catalogue imported from UPSTREAM, then curated by hand, and its docs."""
    releases = tmp_path / "releases"
    old = write(tmp_path / "old.yaml", UPSTREAM)
    saereg("import", "saelens", str(old), "--out", str(releases), capsys=capsys)
    path = releases / "gpt2-small-res-jb.yaml"
    text = path.read_text()
    assert "hook_name: blocks.2.hook_resid_pre" in text
    # Curated here: a link added, a hook name fixed, the revision pinned.
    text = text.replace(
        "  model: https://huggingface.co/gpt2\n",
        "  model: https://huggingface.co/gpt2\n  code: https://example.org/code\n",
    )
    text = text.replace("hook_name: blocks.2.hook_resid_pre", "hook_name: blocks.2.hook_resid_mid")
    text = text.replace("revision: null", "revision: " + "a" * 40)
    path.write_text(text)
    write(tmp_path / "newer.yaml", NEWER)
    docs = tmp_path / "docs"  # the fixture catalogue's pages, as a refresh writes them
    args = ["refresh", "saelens", str(old), "--releases", str(releases), "--docs", str(docs)]
    assert "0 new releases, 0 changed," in saereg(*args, capsys=capsys)
    return releases, docs


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_dry_run_reports_every_change_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases, docs = _catalogue(tmp_path, capsys)
    before = _snapshot(tmp_path)
    args = ["refresh", "saelens", str(tmp_path / "newer.yaml"), "--releases", str(releases)]
    text = saereg(*args, "--docs", str(docs), "--label", "sae-lens 9.9", "--dry-run", capsys=capsys)
    assert text.startswith("## Catalogue refresh from sae-lens 9.9")
    assert "1 new releases, 1 changed, 1 new SAEs, 1 changed paths, 1 vanished SAEs" in text
    assert "- `gpt2-small-new` (1 SAEs)" in text
    assert "- `gpt2-small-res-jb/blocks.3.hook_resid_pre`" in text
    assert (
        "- `gpt2-small-res-jb/blocks.1.hook_resid_pre` path: `blocks.1.hook_resid_pre` → "
        "`v2/blocks.1.hook_resid_pre`"
    ) in text
    assert "- `gpt2-small-res-jb/blocks.0.hook_resid_pre` l0: `10.0` → `12.5`" in text
    assert "- `gpt2-small-res-jb/blocks.2.hook_resid_pre` (path `blocks.2.hook_resid_pre`)" in text
    # Hand-curated fields: upstream's different values are conflicts, ours are kept.
    assert "- `gpt2-small-res-jb` model: upstream `gpt2`, kept `gpt2-small`" in text
    assert (
        "- `gpt2-small-res-jb` links.model: upstream `https://huggingface.co/openai-community/"
        "gpt2`, kept `https://huggingface.co/gpt2`"
    ) in text
    assert "hook_name: upstream" not in text  # blocks.2 vanished upstream: nothing to compare
    assert "### Generated pages that change (4)" in text
    for page in ("catalogue.html", "index.md", "models/gpt2-small.md", "pretrained_saes.md"):
        assert f"- `{page}`" in text
    assert "(dry run: 2 release files would be written" in text
    assert _snapshot(tmp_path) == before


def test_refresh_writes_the_merge_and_keeps_curated_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    releases, docs = _catalogue(tmp_path, capsys)
    summary, changed = tmp_path / "summary.md", tmp_path / "changed.txt"
    out = saereg(
        "refresh", "saelens", str(tmp_path / "newer.yaml"), "--releases", str(releases),
        "--docs", str(docs), "--summary", str(summary), "--changed", str(changed),
        capsys=capsys,
    )  # fmt: skip
    assert summary.read_text() == out
    assert changed.read_text() == "gpt2-small-new\ngpt2-small-res-jb\n"
    rel = read_release_file(releases / "gpt2-small-res-jb.yaml")
    assert rel.model == "gpt2-small" and rel.revision == "a" * 40
    assert dict(rel.links) == {
        "model": "https://huggingface.co/gpt2",
        "code": "https://example.org/code",
        "dashboards": "https://example.org/dash",  # new upstream link: added
    }
    by_id = {e.id: e for e in rel.saes}
    assert by_id["blocks.1.hook_resid_pre"].path == "v2/blocks.1.hook_resid_pre"
    assert by_id["blocks.0.hook_resid_pre"].l0 == 12.5
    assert by_id["blocks.2.hook_resid_pre"].hook_name == "blocks.2.hook_resid_mid"  # kept
    assert by_id["blocks.3.hook_resid_pre"].hook_name == "blocks.3.hook_resid_pre"  # new
    assert (releases / "gpt2-small-new.yaml").is_file()
    valid = saereg("validate", str(releases), "--no-hints", "--standalone", capsys=capsys)
    assert "0 errors" in valid
    assert "gpt2-small-new" in (docs / "models" / "gpt2-small.md").read_text()
    # A second run adds nothing; the vanished SAE is still listed for review.
    again = saereg(
        "refresh", "saelens", str(tmp_path / "newer.yaml"), "--releases", str(releases),
        "--dry-run", capsys=capsys,
    )  # fmt: skip
    assert "0 new releases, 0 changed, 0 new SAEs, 0 changed paths, 1 vanished SAEs" in again


def test_weekly_workflow_runs_the_tested_steps() -> None:
    """The scheduled workflow calls the commands tested above, with options they take."""
    import re

    import yaml

    from .conftest import REPO

    flow = yaml.safe_load((REPO / ".github" / "workflows" / "refresh-catalogue.yml").read_text())
    assert flow[True]["schedule"][0]["cron"].split()[-1] == "1"  # weekly ("on:" reads as True)
    script = "\n".join(s.get("run", "") for s in flow["jobs"]["refresh"]["steps"])
    assert "pip install --upgrade sae-lens" in script
    refresh = re.search(r"saereg refresh saelens (.*?)(?<!\\)\n", script, flags=re.S)
    assert refresh is not None
    options = set(re.findall(r"(--[a-z-]+)", refresh.group(1)))
    assert options == {"--label", "--docs", "--summary", "--changed"}
    for command in ("saereg sync-check", "saereg docs", "saereg validate releases/"):
        assert command in script
    pr = flow["jobs"]["refresh"]["steps"][-1]
    assert pr["uses"].startswith("peter-evans/create-pull-request@")
    assert pr["with"]["body-path"].endswith("summary.md")
