"""The generated catalogue: upstream's page shape, golden rows, determinism, --check."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from saereg.catalogue.release_dirs import builtin_release_dir
from saereg.publish.docs import generate

from .conftest import REPO, run_saereg

# Rows of the upstream "Pretrained SAEs" page (the SAELens docs page saereg's catalogue is
# specified from), per release, as (hook_name, hook_layer, d_sae, context_size,
# normalize_activations). Kept here because a user's clone has no copy of that page.
UPSTREAM_PAGE = {
    "gpt2-small-res-jb": [
        ("blocks.0.hook_resid_pre", 0, 24576, 128, "none"),
        ("blocks.1.hook_resid_pre", 1, 24576, 128, "none"),
        ("blocks.2.hook_resid_pre", 2, 24576, 128, "none"),
        ("blocks.3.hook_resid_pre", 3, 24576, 128, "none"),
        ("blocks.4.hook_resid_pre", 4, 24576, 128, "none"),
        ("blocks.5.hook_resid_pre", 5, 24576, 128, "none"),
        ("blocks.6.hook_resid_pre", 6, 24576, 128, "none"),
        ("blocks.7.hook_resid_pre", 7, 24576, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 24576, 128, "none"),
        ("blocks.9.hook_resid_pre", 9, 24576, 128, "none"),
        ("blocks.10.hook_resid_pre", 10, 24576, 128, "none"),
        ("blocks.11.hook_resid_pre", 11, 24576, 128, "none"),
        ("blocks.11.hook_resid_post", 11, 24576, 128, "none"),
    ],
    "gpt2-small-hook-z-kk": [
        ("blocks.0.attn.hook_z", 0, 24576, 128, "none"),
        ("blocks.1.attn.hook_z", 1, 24576, 128, "none"),
        ("blocks.2.attn.hook_z", 2, 24576, 128, "none"),
        ("blocks.3.attn.hook_z", 3, 24576, 128, "none"),
        ("blocks.4.attn.hook_z", 4, 24576, 128, "none"),
        ("blocks.5.attn.hook_z", 5, 49152, 128, "none"),
        ("blocks.6.attn.hook_z", 6, 24576, 128, "none"),
        ("blocks.7.attn.hook_z", 7, 49152, 128, "none"),
        ("blocks.8.attn.hook_z", 8, 24576, 128, "none"),
        ("blocks.9.attn.hook_z", 9, 24576, 128, "none"),
        ("blocks.10.attn.hook_z", 10, 24576, 128, "none"),
        ("blocks.11.attn.hook_z", 11, 24576, 128, "none"),
    ],
    "gpt2-small-mlp-tm": [
        ("blocks.0.hook_mlp_out", 0, 24576, 512, "expected_average_only_in"),
        ("blocks.1.hook_mlp_out", 1, 24576, 512, "expected_average_only_in"),
        ("blocks.2.hook_mlp_out", 2, 24576, 512, "expected_average_only_in"),
        ("blocks.3.hook_mlp_out", 3, 24576, 512, "expected_average_only_in"),
        ("blocks.4.hook_mlp_out", 4, 24576, 512, "expected_average_only_in"),
        ("blocks.5.hook_mlp_out", 5, 24576, 512, "expected_average_only_in"),
        ("blocks.6.hook_mlp_out", 6, 24576, 512, "expected_average_only_in"),
        ("blocks.7.hook_mlp_out", 7, 24576, 512, "expected_average_only_in"),
        ("blocks.8.hook_mlp_out", 8, 24576, 512, "expected_average_only_in"),
        ("blocks.9.hook_mlp_out", 9, 24576, 512, "expected_average_only_in"),
        ("blocks.10.hook_mlp_out", 10, 24576, 512, "expected_average_only_in"),
        ("blocks.11.hook_mlp_out", 11, 24576, 512, "expected_average_only_in"),
    ],
    "gpt2-small-res-jb-feature-splitting": [
        ("blocks.8.hook_resid_pre", 8, 768, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 1536, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 3072, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 6144, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 12288, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 24576, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 49152, 128, "none"),
        ("blocks.8.hook_resid_pre", 8, 98304, 128, "none"),
    ],
    "gpt2-small-resid-post-v5-32k": [
        ("blocks.0.hook_resid_post", 0, 32768, 64, "layer_norm"),
        ("blocks.1.hook_resid_post", 1, 32768, 64, "layer_norm"),
        ("blocks.2.hook_resid_post", 2, 32768, 64, "layer_norm"),
        ("blocks.3.hook_resid_post", 3, 32768, 64, "layer_norm"),
        ("blocks.4.hook_resid_post", 4, 32768, 64, "layer_norm"),
        ("blocks.5.hook_resid_post", 5, 32768, 64, "layer_norm"),
        ("blocks.6.hook_resid_post", 6, 32768, 64, "layer_norm"),
        ("blocks.7.hook_resid_post", 7, 32768, 64, "layer_norm"),
        ("blocks.8.hook_resid_post", 8, 32768, 64, "layer_norm"),
        ("blocks.9.hook_resid_post", 9, 32768, 64, "layer_norm"),
        ("blocks.10.hook_resid_post", 10, 32768, 64, "layer_norm"),
        ("blocks.11.hook_resid_post", 11, 32768, 64, "layer_norm"),
    ],
    "gpt2-small-resid-post-v5-128k": [
        ("blocks.0.hook_resid_post", 0, 131072, 64, "layer_norm"),
        ("blocks.1.hook_resid_post", 1, 131072, 64, "layer_norm"),
        ("blocks.2.hook_resid_post", 2, 131072, 64, "layer_norm"),
        ("blocks.3.hook_resid_post", 3, 131072, 64, "layer_norm"),
        ("blocks.4.hook_resid_post", 4, 131072, 64, "layer_norm"),
        ("blocks.5.hook_resid_post", 5, 131072, 64, "layer_norm"),
        ("blocks.6.hook_resid_post", 6, 131072, 64, "layer_norm"),
        ("blocks.7.hook_resid_post", 7, 131072, 64, "layer_norm"),
        ("blocks.8.hook_resid_post", 8, 131072, 64, "layer_norm"),
        ("blocks.9.hook_resid_post", 9, 131072, 64, "layer_norm"),
        ("blocks.10.hook_resid_post", 10, 131072, 64, "layer_norm"),
        ("blocks.11.hook_resid_post", 11, 131072, 64, "layer_norm"),
    ],
    "gemma-2b-res-jb": [
        ("blocks.0.hook_resid_post", 0, 16384, 1024, "none"),
        ("blocks.6.hook_resid_post", 6, 16384, 1024, "none"),
        ("blocks.12.hook_resid_post", 12, 16384, 1024, "expected_average_only_in"),
    ],
    "gemma-2b-it-res-jb": [
        ("blocks.12.hook_resid_post", 12, 16384, 1024, "none"),
    ],
    "mistral-7b-res-wg": [
        ("blocks.8.hook_resid_pre", 8, 65536, 256, "none"),
        ("blocks.16.hook_resid_pre", 16, 65536, 256, "none"),
        ("blocks.24.hook_resid_pre", 24, 65536, 256, "none"),
    ],
}

# Where today's catalogue knowingly differs from that older page:
# - gemma-2b-res-jb gained SAEs for layers 10 and 17 upstream after the page was generated;
# - mistral-7b-res-wg: upstream later added config_overrides normalize_activations:
#   constant_norm_rescale, which is how the SAEs load (and so what the catalogue says).
ADDED_SINCE = {"gemma-2b-res-jb": {"blocks.10.hook_resid_post", "blocks.17.hook_resid_post"}}
OVERRIDDEN_SINCE = {"mistral-7b-res-wg": ("normalize_activations", "none", "constant_norm_rescale")}
COLUMNS = ("hook_name", "hook_layer", "d_sae", "context_size", "normalize_activations")


def sections(page: str) -> dict[str, list[dict[str, str]]]:
    out = {}
    for chunk in re.split(r"^## ", page, flags=re.M)[1:]:
        name = re.match(r"\[([^\]]+)\]", chunk).group(1)
        lines = [line for line in chunk.splitlines() if line.startswith("|")]
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        out[name] = [
            dict(zip(header, (c.strip() for c in line.strip("|").split(" | ")), strict=True))
            for line in lines[2:]
        ]
    return out


def test_generated_tables_match_the_upstream_page_row_for_row() -> None:
    page = (REPO / "docs" / "pretrained_saes.md").read_text()
    ours = sections(page)
    for release, upstream_rows in UPSTREAM_PAGE.items():
        rows = [r for r in ours[release] if r["hook_name"] not in ADDED_SINCE.get(release, ())]
        got = [tuple(r[c] for c in COLUMNS) for r in rows]
        want = [tuple(str(v) for v in row) for row in upstream_rows]
        if release in OVERRIDDEN_SINCE:
            column, old, new = OVERRIDDEN_SINCE[release]
            i = COLUMNS.index(column)
            assert {g[i] for g in got} == {new} and {w[i] for w in want} == {old}
            got = [g[:i] + g[i + 1 :] for g in got]
            want = [w[:i] + w[i + 1 :] for w in want]
        assert got == want, release
    added = {r["hook_name"] for r in ours["gemma-2b-res-jb"]} - {
        row[0] for row in UPSTREAM_PAGE["gemma-2b-res-jb"]
    }
    assert added == ADDED_SINCE["gemma-2b-res-jb"]


def test_page_shape_links_and_unknowns() -> None:
    page = (REPO / "docs" / "pretrained_saes.md").read_text()
    assert page.startswith("# Pretrained SAEs\n")
    section = page.split("## [gpt2-small-res-jb]")[1].split("\n## ")[0]
    assert section.startswith("(https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted)")
    for line in (
        "- **Huggingface Repo**: jbloom/GPT2-Small-SAEs-Reformatted",
        "- **model**: [gpt2-small](models/gpt2-small.md)",
        "    - [Model](https://huggingface.co/gpt2)",
        "    - [Dashboards](https://www.neuronpedia.org/gpt2sm-res-jb)",
        "| id | hook_name | hook_layer | d_sae | context_size | normalize_activations "
        "| neuronpedia |",
        "| blocks.8.hook_resid_pre | blocks.8.hook_resid_pre | 8 | 24576 | 128 | none | "
        "[gpt2-small/8-res-jb](https://www.neuronpedia.org/gpt2-small/8-res-jb) |",
    ):
        assert line in section
    # Goodfire publishes no context size: shown as unknown, never a made-up default
    goodfire = page.split("## [goodfire-llama-3.1-8b-instruct]")[1].split("\n## ")[0]
    assert "| layer_19 | blocks.19.hook_resid_post | 19 | 65536 | unknown | none |" in goodfire
    index = (REPO / "docs" / "index.md").read_text()
    assert "| [gpt2-small](models/gpt2-small.md) |" in index
    model_page = (REPO / "docs" / "models" / "gemma-2-2b.md").read_text()
    assert "[All models](../index.md)" in model_page
    assert "## [gemma-scope-2b-pt-res](https://huggingface.co/google/gemma-scope-2b-pt-res)" in (
        model_page
    )


def test_every_sae_appears_once_in_the_catalogue_page() -> None:
    from saereg.catalogue.release_files import read_release_file

    releases = [read_release_file(p) for p in sorted(builtin_release_dir().glob("*.yaml"))]
    ours = sections((REPO / "docs" / "pretrained_saes.md").read_text())
    assert set(ours) == {r.name for r in releases}
    for rel in releases:
        assert [row["id"] for row in ours[rel.name]] == [e.id for e in rel.saes]


def test_output_is_deterministic_and_check_detects_stale_pages(tmp_path: Path) -> None:
    from saereg.catalogue.release_files import read_release_file

    releases = [read_release_file(p) for p in sorted(builtin_release_dir().glob("*.yaml"))]
    assert generate(releases) == generate(list(reversed(releases)))
    committed = run_saereg("docs", "--check", "--out", str(REPO / "docs"))
    assert committed.returncode == 0, committed.stderr  # CI: the committed docs are current
    out = tmp_path / "docs"
    shutil.copytree(REPO / "docs", out)
    (out / "models" / "gpt2-small.md").write_text("edited by hand\n")
    (out / "models" / "no-such-model.md").write_text("left over\n")
    (out / "index.md").unlink()
    stale = run_saereg("docs", "--check", "--out", str(out))
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        f"saereg docs: 3 generated page(s) in {out} are stale: index.md, models/gpt2-small.md, "
        f"models/no-such-model.md. Run `saereg docs --out {out}` and commit the result."
    )
    fixed = run_saereg("docs", "--out", str(out))
    assert fixed.returncode == 0 and "3 changed" in fixed.stdout
    assert not (out / "models" / "no-such-model.md").exists()
    assert run_saereg("docs", "--check", "--out", str(out)).returncode == 0


def test_table_row_fast_paths_write_what_the_escaping_writes() -> None:
    """A row skips the escaping for values made of characters it would leave alone; for
    every printable ASCII character, and values built from the awkward ones, the row is
    the one written by escaping every cell (`md.cell`, `md.link`)."""
    from saereg.catalogue.records import SAEEntry
    from saereg.publish import docs
    from saereg.publish import markdown_text as md

    def slow_row(e: SAEEntry) -> str:
        np_cell = (
            md.link(md.cell(e.neuronpedia), docs.NEURONPEDIA + e.neuronpedia)
            if (e.neuronpedia)
            else ""
        )
        cells = [
            md.cell(e.id),
            md.cell(e.hook_name) if e.hook_name is not None else "unknown",
            str(e.hook_layer) if e.hook_layer is not None else "unknown",
            f"{e.d_sae:g}" if isinstance(e.d_sae, float) else str(e.d_sae),
            "unknown",
            md.cell(e.normalize_activations) if e.normalize_activations else "unknown",
            np_cell,
        ]
        return "| " + " | ".join(cells) + " |"

    values = [chr(c) for c in range(32, 127)]
    values += [f"a{c}b" for c in values] + ["", " ", "x\ny", "é|ü", "a\u2028b", "<script>"]
    for v in values:
        entry = SAEEntry(
            v or "id", "p", hook_name=v, hook_layer=3, d_sae=2.5e3,
            normalize_activations=v or None, neuronpedia=v or None,
        )  # fmt: skip
        assert docs._row(entry) == slow_row(entry), repr(v)
