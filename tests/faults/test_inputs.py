"""Bad references, arguments and environment variables: one line, the documented code."""

from __future__ import annotations

from pathlib import Path

from .probe import Score

REFS = [
    "a" * 300,
    "a" * 5000,
    "a/" + "b" * 5000,
    "gpt2-small-res-jb/" + "b" * 5000,
    "hf:a/b/" + "c" * 5000,
    "x/y\x00z",
    "../../etc/passwd",
    "..",
    ".",
    "../x",
    "/",
    "//",
    " ",
    "",
    "*",
    "-",
    "%2e%2e/x",
    "C:\\evil",
    "\n",
    "gpt2-small-res-jb",
    "gpt2-small-res-jb/",
    "gpt2-small-res-jb/nope",
    "gpt2-small-res-jb/../../x",
    "héllo/wörld",
    "a b/c",
    "hf:",
    "hf:a",
    "hf:a/b",
    "hf:a/b/../../c",
    "hf:../x/y",
    "hf:a/b/%2e%2e/c",
    "hf:jbloom/GPT2-Small-SAEs-Reformatted/nope",
    "hf:nobody/nothing/x",
    "gpt2-small/99-res-jb",
]


def test_bad_references_fail_in_one_line(monkeypatch) -> None:
    score = Score("references")
    monkeypatch.setenv("SAEREG_OFFLINE", "1")
    for i, ref in enumerate(REFS):
        for command in ("resolve", "fetch", "export") if i % 4 == 0 else ("resolve", "fetch"):
            extra = ["--out", "/nonexistent-dir/x"] if command == "export" else []
            score.cli(f"{command} {ref[:40]!r}", command, ref, *extra)
    score.cli("info of a long name", "info", "a" * 5000)
    score.done()


def test_bad_arguments_fail_in_one_line(tmp_path: Path, monkeypatch) -> None:
    score = Score("arguments")
    monkeypatch.setenv("SAEREG_OFFLINE", "1")
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    not_yaml = tmp_path / "bad.yaml"
    not_yaml.write_bytes(b"\xff\xfe\x00garbage")
    cases = {
        "unknown command": ["frobnicate"],
        "unknown flag": ["list", "--frobnicate"],
        "bad layer": ["list", "--layer", "x"],
        "bad width": ["list", "--width", "zz"],
        "no ref": ["fetch"],
        "export without --out": ["export", "gpt2-small-res-jb/blocks.8.hook_resid_pre"],
        "inspect missing": ["inspect", str(tmp_path / "missing.safetensors")],
        "inspect a text file": ["inspect", str(a_file)],
        "inspect a directory": ["inspect", str(tmp_path)],
        "validate missing": ["validate", str(tmp_path / "missing.yaml")],
        "migrate missing": ["migrate", str(tmp_path / "missing.yaml")],
        "migrate non-UTF-8": ["migrate", str(not_yaml)],
        "import missing": ["import", "saelens", str(tmp_path / "missing.yaml")],
        "new ../..": ["new", "--repo", "../..", "--format", "saelens"],
        "new absolute": ["new", "--repo", "/etc/passwd", "--format", "saelens"],
        "new unknown format": ["new", "--repo", "a/b", "--format", "nope"],
        "new bad release": ["new", "--repo", "a/b", "--format", "saelens", "--release", ".."],
        "new out is a file": ["new", "--repo", "a/b", "--format", "saelens", "--out", str(a_file)],
        "sync-check unknown": ["sync-check", "nope"],
        "sync-check offline": ["sync-check", "gpt2-small-res-jb"],
        "docs out is a file": ["docs", "--out", str(a_file)],
        "docs out under a file": ["docs", "--out", str(a_file / "sub")],
        "info unknown": ["info", "nope"],
        "info hostile": ["info", "../../etc"],
        "export --format other": ["export", "x/y", "--format", "dictionary_learning", "--out", "o"],
        "export --out a file": ["export", "x/y", "--out", str(a_file)],
    }
    for what, argv in cases.items():
        score.cli(what, *argv)
    score.done()


def test_bad_environment_fails_in_one_line(tmp_path: Path, monkeypatch) -> None:
    score = Score("environment")
    a_file = tmp_path / "file"
    a_file.write_text("x", encoding="utf-8")
    ref = "gpt2-small-res-jb/blocks.8.hook_resid_pre"
    cases = {
        "SAEREG_RELEASES is a file": ({"SAEREG_RELEASES": str(a_file)}, ["list"]),
        "SAEREG_RELEASES under a file": ({"SAEREG_RELEASES": str(a_file / "x")}, ["list"]),
        "HF_ENDPOINT=garbage": ({"HF_ENDPOINT": "garbage"}, ["fetch", ref]),
        "HF_ENDPOINT=http://": ({"HF_ENDPOINT": "http://"}, ["fetch", ref]),
        "HF_ENDPOINT=ftp": ({"HF_ENDPOINT": "ftp://x"}, ["fetch", ref]),
        "HF_ENDPOINT for new": (
            {"HF_ENDPOINT": "garbage"},
            ["new", "--repo", "a/b", "--format", "saelens"],
        ),
        "SAEREG_TIMEOUT=abc": ({"SAEREG_TIMEOUT": "abc"}, ["fetch", ref]),
        "SAEREG_TIMEOUT=-1": ({"SAEREG_TIMEOUT": "-1"}, ["fetch", ref]),
        "SAEREG_CACHE is a file": (
            {"SAEREG_CACHE": str(a_file), "SAEREG_OFFLINE": "1"},
            ["fetch", ref],
        ),
    }
    for what, (env, argv) in cases.items():
        score.cli(what, *argv, env=env)
    result = score.cli(
        "resolve works with an unwritable cache",
        "resolve",
        ref,
        codes=(0,),
        env={"SAEREG_CACHE": str(a_file)},
    )
    score.check("resolve printed the record", "gpt2-small" in result.out)
    score.done()
