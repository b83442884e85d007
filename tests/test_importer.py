"""`saereg import saelens`: defects repaired or reported, tables joined, byte-identical reruns."""

from __future__ import annotations

from pathlib import Path

import yaml

from saereg.catalogue.release_files import read_release_file

from .conftest import run_saereg, write

UPSTREAM = """\
gpt2-small-res-jb:
  conversion_func: null
  config_overrides:
    model_from_pretrained_kwargs:
      center_writing_weights: true
  links:
    model: https://huggingface.co/gpt2
  model: gpt2-small
  repo_id: jbloom/GPT2-Small-SAEs-Reformatted
  saes:
  - id: blocks.0.hook_resid_pre
    l0: 10.0
    neuronpedia: gpt2-small/0-res-jb
    path: blocks.0.hook_resid_pre
    variance_explained: 0.999
  - id: blocks.1.hook_resid_pre
    neuronpedia: gpt2-small/1-res-jb
    path: blocks.1.hook_resid_pre
    conversion_func: null
    model: gpt2-small
    repo_id: jbloom/GPT2-Small-SAEs-Reformatted
    saes:
    - id: blocks.0.hook_resid_pre
      path: blocks.0.hook_resid_pre
gemma-scope-9b-it-res:
  conversion_func: gemma_2
  model: gemma-2-9b
  repo_id: google/gemma-scope-9b-it-res
  saes:
  - id: layer_9/width_16k/average_l0_88
    path: layer_9/width_16k/average_l0_88
    l0: 88
mntss-clt:
  conversion_func: mntss_clt_layer_transcoder
  model: gemma-2-2b
  repo_id: mntss/clt-gemma-2-2b-2.5M
  saes:
  - id: layer_0
    path: 0
    neuronpedia: gemma-2-2b/0-clt-hp
tiny-matryoshka-dc:
  conversion_func: null
  model: gemma-2-2b
  repo_id: chanind/gemma-2-2b-batch-topk-matryoshka-saes-w-32k-l0-40
  saes:
  - id: blocks.0.hook_resid_post
    path: standard/blocks.0.hook_resid_post
  - id: blocks.1.hook_resid_post
    path: standard/blocks.1.hook_resid_post
llama-jh:
  conversion_func: null
  model: meta-llama/Meta-Llama-3-8B-Instruct
  repo_id: Juliushanhanhan/llama-3-8b-it-res
  saes:
  - id: blocks.25.hook_resid_post
    path: blocks.25.hook_resid_post
"""

TSV = (
    "release\trepo_id\tmodel\tid\tarchitecture\tneuronpedia\thook_name\thook_layer\td_sae\t"
    "context_size\tdataset_path\tnormalize_activations\n"
    "gpt2-small-res-jb\tx\tgpt2-small\tblocks.0.hook_resid_pre\tstandard\t\tblocks.0.hook_resid_pre"
    "\t0\t24576\t128\tSkylion007/openwebtext\tnone\n"
    "gpt2-small-res-jb\tx\tgpt2-small\tblocks.1.hook_resid_pre\tstandard\t\tblocks.1.hook_resid_pre"
    "\t1\t24576\t128\tSkylion007/openwebtext\tnone\n"
    "mntss-clt\tx\tgemma-2-2b\tlayer_0\ttranscoder\t\tblocks.0.hook_resid_mid\t0\t98304\t\t\tnone\n"
    "tiny-matryoshka-dc\tx\tgemma-2-2b\tblocks.0.hook_resid_post\tjumprelu\t\t"
    "blocks.0.hook_resid_post\t0\t32768\t1024\tpile\tnone\n"
    "tiny-matryoshka-dc\tx\tgemma-2-2b\tblocks.1.hook_resid_post\tjumprelu\t\t"
    "blocks.1.hook_resid_post\t1\t32768\t1024\tpile\tnone\n"
    "llama-jh\tx\tm\tblocks.25.hook_resid_post\tgated\t\tblocks.25.hook_resid_post\t25\t65536\t"
    "1024\td\texpected_average_only_in\n"
)

OLD_MD = """\
## [gpt2-small-res-jb](https://huggingface.co/jbloom/GPT2-Small-SAEs-Reformatted)

| id | architecture | hook_name | hook_layer | d_sae | context_size |
|:---|:---|:---|---:|---:|---:|
| blocks.0.hook_resid_pre | standard | blocks.0.hook_resid_pre | 0 | 24576 | 256 |
"""

CARD = """\
layer | SAE ID | width | l0 | explained variance |
---|---|---|---|---|
0 | standard/blocks.0.hook_resid_post | 32768 | 40 | 0.91832 |
1 | standard/blocks.1.hook_resid_post | 32768 | 40 | 0.863454 |
"""


def run_import(tmp_path: Path, out: str = "out"):
    up = write(tmp_path / "upstream.yaml", UPSTREAM)
    tsv = write(tmp_path / "table.tsv", TSV)
    md = write(tmp_path / "old.md", OLD_MD)
    card = write(tmp_path / "card.txt", CARD)
    return run_saereg(
        "import",
        "saelens",
        str(up),
        "--tables",
        str(tsv),
        str(md),
        "--model-card",
        f"chanind/gemma-2-2b-batch-topk-matryoshka-saes-w-32k-l0-40={card}",
        "--out",
        str(tmp_path / out),
        "--report",
        str(tmp_path / f"{out}-report.txt"),
    )


def test_import_writes_valid_release_files(tmp_path: Path) -> None:
    result = run_import(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Imported 5 releases, 7 SAEs." in result.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "gemma-scope-9b-it-res.yaml",
        "gpt2-small-res-jb.yaml",
        "llama-jh.yaml",
        "mntss-clt.yaml",
        "tiny-matryoshka-dc.yaml",
    ]
    checked = run_saereg("validate", str(out), "--no-hints", "--standalone")
    assert checked.returncode == 0, checked.stdout

    jb = read_release_file(out / "gpt2-small-res-jb.yaml")
    assert (jb.format, jb.publisher, jb.revision) == ("saelens", "Joseph Bloom", None)
    assert dict(jb.model_from_pretrained_kwargs or {}) == {"center_writing_weights": True}
    assert dict(jb.defaults) == {
        "architecture": "relu",
        "d_sae": 24576,
        "context_size": 128,
        "normalize_activations": "none",
        "dataset": "Skylion007/openwebtext",
    }
    first = jb.saes[0]
    assert (first.hook_name, first.hook_layer, first.l0, first.variance_explained) == (
        "blocks.0.hook_resid_pre",
        0,
        10.0,
        0.999,
    )

    gs = read_release_file(out / "gemma-scope-9b-it-res.yaml")
    assert gs.model == "gemma-2-9b-it" and gs.license == "cc-by-4.0" and gs.format == "gemma_scope"
    assert gs.saes[0].hook_name == "blocks.9.hook_resid_post" and gs.saes[0].d_in == 3584

    clt = read_release_file(out / "mntss-clt.yaml")
    assert clt.saes[0].path == "0"
    assert "path: '0'" in (out / "mntss-clt.yaml").read_text()
    assert (clt.saes[0].hook_name, clt.saes[0].d_sae, clt.saes[0].context_size) == (
        "blocks.0.hook_resid_mid",
        98304,
        None,
    )

    mat = read_release_file(out / "tiny-matryoshka-dc.yaml")
    assert mat.format == "matryoshka"
    assert mat.saes[1].nested_widths == (128, 512, 2048, 8192, 32768)
    assert mat.saes[1].variance_explained == 0.863454 and mat.saes[1].l0 == 40.0


def test_import_report_names_every_defect(tmp_path: Path) -> None:
    run_import(tmp_path)
    report = (tmp_path / "out-report.txt").read_text()
    for line in (
        "  - gemma-scope-9b-it-res: model 'gemma-2-9b' → 'gemma-2-9b-it' (repository "
        "google/gemma-scope-9b-it-res holds SAEs of the instruction-tuned model)",
        "  - gpt2-small-res-jb: saes[1] (blocks.1.hook_resid_pre) carried a nested copy of a "
        "release (conversion_func, model, repo_id, saes); dropped it, the entry itself is kept",
        "  - mntss-clt/layer_0: path 0 was a YAML int; written as a string",
        "  - llama-jh/blocks.25.hook_resid_post: normalize_activations is expected_average_only_in "
        "but upstream publishes no norm_scaling_factor; the SAE will run on unscaled inputs "
        "(as in SAELens)",
        "  - gpt2-small-res-jb (blocks.0.hook_resid_pre): tables disagree on context_size: 128 "
        "(first table) vs 256; used 128",
        "  hook_name                   7 / 7 (100.0%)",
        "  context_size                6 / 7 (85.7%)",
    ):
        assert line in report, report


def test_import_is_byte_identical_when_rerun(tmp_path: Path) -> None:
    run_import(tmp_path, "a")
    run_import(tmp_path, "b")
    for a in sorted((tmp_path / "a").iterdir()):
        assert a.read_bytes() == (tmp_path / "b" / a.name).read_bytes()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    run_import(tmp_path, "a")  # unchanged files are not rewritten (the index stays fresh)
    assert before == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}


def test_import_rejects_missing_inputs(tmp_path: Path) -> None:
    result = run_saereg("import", "saelens", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr
    bad_card = run_saereg("import", "saelens", str(tmp_path / "x.yaml"), "--model-card", "oops")
    assert bad_card.returncode == 2 and "REPO_ID=FILE" in bad_card.stderr


def test_committed_catalogue_has_the_upstream_counts() -> None:
    from saereg.catalogue.release_dirs import builtin_release_dir

    files = [
        p
        for p in sorted(builtin_release_dir().glob("*.yaml"))
        if p.read_text().startswith("# Generated by `saereg import saelens`")
    ]
    assert len(files) == 170
    total = sum(len(yaml.load(p.read_text(), Loader=yaml.CSafeLoader)["saes"]) for p in files)
    assert total == 13857


def test_listings_of_the_same_files_share_what_was_measured_on_them() -> None:
    """Gemma Scope's canonical entries point at a folder of the full release: the l0 one
    listing has fills the other's gap; a disagreement is reported, never overwritten."""
    from saereg.publish.importer import ImportReport, join_same_files

    full = [
        {
            "id": "layer_1/width_16k/average_l0_80",
            "path": "layer_1/width_16k/average_l0_80",
            "l0": 80,
        },
        {"id": "layer_2/width_16k/average_l0_9", "path": "layer_2/width_16k/average_l0_9", "l0": 9},
    ]
    canonical = [
        {
            "id": "layer_1/width_16k/canonical",
            "path": "layer_1/width_16k/average_l0_80/",
            "l0": None,
        },
        {"id": "layer_2/width_16k/canonical", "path": "layer_2/width_16k/average_l0_9", "l0": 11},
    ]
    other_repo = [{"id": "x", "path": "layer_1/width_16k/average_l0_80", "l0": None}]
    report = ImportReport()
    join_same_files(
        [
            ("full", {"repo_id": "g/s"}, full),
            ("canonical", {"repo_id": "g/s"}, canonical),
            ("elsewhere", {"repo_id": "o/r"}, other_repo),
        ],
        report,
    )
    assert canonical[0]["l0"] == 80
    assert canonical[1]["l0"] == 11 and full[1]["l0"] == 9  # disagreement: both kept
    assert other_repo[0]["l0"] is None  # another repository's files are other files
    assert (
        len(report.repaired) == 1 and "full/layer_1/width_16k/average_l0_80" in report.repaired[0]
    )
    assert len(report.reported) == 1 and "differs" in report.reported[0]
