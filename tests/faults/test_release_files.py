"""Malformed, hostile and clashing release files from SAEREG_RELEASES.

Every command must refuse a bad file in one line, the rest of the catalogue must keep
working, no YAML tag may run code, and no extra file may take over a built-in reference.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path

from .probe import Score, run_cli

GOOD = """schema: 1
name: {name}
format: saelens
publisher: Test
model: test-model
repo_id: test-org/faults
revision: null
defaults: {{context_size: 128, normalize_activations: none}}
saes:
- id: sae
  path: sae
  hook_name: blocks.3.hook_resid_pre
  hook_layer: 3
  d_sae: 16
"""


def _swap(old: str, new: str):
    return lambda name: GOOD.format(name=name).replace(old.replace("{name}", name), new, 1)


def _bomb(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * 9)
        lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


#: name → text of a release file (a function of its release name), or bytes.
TEXT_CASES = {
    "name-list": _swap("name: {name}", "name: [a, b]"),
    "defaults-list": _swap(
        "defaults: {context_size: 128, normalize_activations: none}", "defaults: [1, 2]"
    ),
    "links-list": lambda n: GOOD.format(name=n) + "links: [a, b]\n",
    "links-nested": lambda n: GOOD.format(name=n) + "links: {model: [1]}\n",
    "nested-widths-int": lambda n: GOOD.format(name=n) + "  nested_widths: 4\n",
    "saes-int": lambda n: GOOD.format(name=n).split("saes:")[0] + "saes: 5\n",
    "saes-scalars": lambda n: GOOD.format(name=n).split("saes:")[0] + "saes: [5, x]\n",
    "id-list": _swap("- id: sae", "- id: [1, 2]"),
    "path-list": _swap("  path: sae", "  path: [x]"),
    "d-sae-string": _swap("  d_sae: 16", "  d_sae: sixteen"),
    "hook-layer-string": _swap("  hook_layer: 3", "  hook_layer: '3'"),
    "sha256-list": lambda n: GOOD.format(name=n) + "  sha256: [a]\n",
    "sha256-int": lambda n: GOOD.format(name=n) + "  sha256: {cfg.json: 5}\n",
    "model-null": _swap("model: test-model", "model: null"),
    "format-int": _swap("format: saelens", "format: 5"),
    "revision-int": _swap("revision: null", "revision: 5"),
    "repo-int": _swap("repo_id: test-org/faults", "repo_id: 5"),
    "kwargs-list": lambda n: GOOD.format(name=n) + "model_from_pretrained_kwargs: [1]\n",
    "schema-string": _swap("schema: 1", "schema: '1'"),
    "schema-future": _swap("schema: 1", "schema: 99"),
    "schema-missing": _swap("schema: 1\n", ""),
    "top-level-list": lambda n: "- 1\n- 2\n",
    "top-level-scalar": lambda n: "hello\n",
    "empty": lambda n: "",
    "comment-only": lambda n: "# nothing\n",
    "bad-indent": lambda n: GOOD.format(name=n) + " x: [\n",
    "unclosed-quote": lambda n: GOOD.format(name=n) + 'description: "abc\n',
    "tab-indent": lambda n: GOOD.format(name=n) + "\tfoo: 1\n",
    "duplicate-top": lambda n: GOOD.format(name=n) + "saes: []\n",
    "duplicate-nested": _swap("  d_sae: 16", "  d_sae: 16\n  d_sae: 32"),
    "alias-bomb": lambda n: GOOD.format(name=n) + _bomb(),
    "alias-one": lambda n: GOOD.format(name=n).replace("saes:", "x: &a 1\ny: *a\nsaes:"),
    "merge-key": lambda n: GOOD.format(name=n) + "base: &b {a: 1}\nother:\n  <<: *b\n",
    "deep-1000": lambda n: "a: " + "[" * 1000 + "]" * 1000 + "\n",
    "deep-maps": lambda n: "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
    "python-tag": lambda n: "!!python/object/apply:os.system ['touch {marker}']\n",
    "python-tag-nested": lambda n: (
        GOOD.format(name=n) + "description: !!python/object/apply:os.system ['touch {marker}']\n"
    ),
    "custom-tag": lambda n: GOOD.format(name=n) + "description: !evil x\n",
    "path-dotdot": _swap("  path: sae", "  path: ../../../secret"),
    "path-absolute": _swap("  path: sae", "  path: /etc/passwd"),
    "path-windows": _swap("  path: sae", "  path: 'C:\\evil'"),
    "path-inner-dotdot": _swap("  path: sae", "  path: a/../../b"),
    "path-encoded": _swap("  path: sae", "  path: '%2e%2e/%2e%2e/secret'"),
    "path-url": _swap("  path: sae", "  path: 'http://evil.example/x'"),
    "path-empty": _swap("  path: sae", "  path: ''"),
    "name-dotdot": _swap("name: {name}", "name: '..'"),
    "name-slash": _swap("name: {name}", "name: a/b"),
    "name-other": _swap("name: {name}", "name: gpt2-small-res-jb"),
    "name-long": _swap("name: {name}", "name: " + "a" * 300),
    "base-url-file": _swap("repo_id: test-org/faults", "base_url: 'file:///etc/'"),
    "both-locations": _swap("repo_id: test-org/faults", "repo_id: a/b\nbase_url: 'http://x/'"),
    "repo-dotdot": _swap("repo_id: test-org/faults", "repo_id: ../.."),
    "pin-key-dotdot": lambda n: GOOD.format(name=n) + f"  sha256: {{'../x': '{'0' * 64}'}}\n",
    "duplicate-ids": lambda n: GOOD.format(name=n) + "- id: sae\n  path: other\n",
}
BYTES_CASES = {
    "utf16-bom": lambda n: codecs.BOM_UTF16_LE + GOOD.format(name=n).encode("utf-16-le"),
    "utf16-no-bom": lambda n: GOOD.format(name=n).encode("utf-16-le"),
    "utf32-bom": lambda n: codecs.BOM_UTF32_LE + GOOD.format(name=n).encode("utf-32-le"),
    "latin1": lambda n: GOOD.format(name=n).encode() + "description: caf\xe9\n".encode("latin-1"),
    "binary": lambda n: bytes(range(256)) * 4,
    "nul-bytes": lambda n: GOOD.format(name=n).encode() + b"\x00\x00",
}


def _write_case(directory: Path, key: str, marker: Path) -> Path:
    name = f"bad-{key}"
    path = directory / f"{name}.yaml"
    if key in TEXT_CASES:
        path.write_text(TEXT_CASES[key](name).replace("{marker}", str(marker)), encoding="utf-8")
    else:
        path.write_bytes(BYTES_CASES[key](name))
    return path


def _fs_cases(directory: Path) -> list[Path]:
    """Dangling links, link loops, a directory named *.yaml."""
    dangling = directory / "bad-dangling.yaml"
    dangling.symlink_to(directory / "nowhere.yaml")
    loop = directory / "bad-loop.yaml"
    loop.symlink_to(loop)
    folder = directory / "bad-folder.yaml"
    folder.mkdir()
    return [dangling, loop, folder]


def test_every_malformed_release_file_fails_in_one_line(tmp_path, monkeypatch) -> None:
    score = Score("release files")
    marker = tmp_path / "CODE-RAN"
    monkeypatch.setenv("SAEREG_OFFLINE", "1")
    keys = [*TEXT_CASES, *BYTES_CASES]
    for key in keys:
        directory = tmp_path / key
        directory.mkdir()
        monkeypatch.setenv("SAEREG_RELEASES", str(directory))
        path = _write_case(directory, key, marker)
        name = path.name.removesuffix(".yaml")
        score.cli(f"{key}: resolve", "resolve", f"{name}/sae")
        score.cli(f"{key}: info", "info", name)
        score.cli(f"{key}: fetch", "fetch", f"{name}/sae")
        score.cli(
            f"{key}: validate", "validate", "--standalone", str(path), codes=(1,), one_line=False
        )
    fs_dir = tmp_path / "fs"
    fs_dir.mkdir()
    monkeypatch.setenv("SAEREG_RELEASES", str(fs_dir))
    for path in _fs_cases(fs_dir):
        name = path.name.removesuffix(".yaml")
        score.cli(f"{name}: resolve", "resolve", f"{name}/sae")
        score.cli(f"{name}: info", "info", name)
        score.cli(f"{name}: validate", "validate", str(path), codes=(0, 1, 2), one_line=False)
    if marker.exists():
        score.count("code executed")
    score.check("no YAML tag ran code", not marker.exists())
    score.done()


def test_bad_extra_files_leave_the_rest_of_the_catalogue_working(tmp_path, monkeypatch) -> None:
    score = Score("release files")
    marker = tmp_path / "CODE-RAN"
    directory = tmp_path / "releases"
    directory.mkdir()
    for key in [*TEXT_CASES, *BYTES_CASES]:
        _write_case(directory, key, marker)
    _fs_cases(directory)
    (directory / "good.yaml").write_text(
        GOOD.format(name="good").replace("  d_sae: 16", "  d_sae: 16\n  neuronpedia: t/good"),
        encoding="utf-8",
    )
    monkeypatch.setenv("SAEREG_RELEASES", str(directory))
    for attempt in ("cold index", "warm index"):
        result = score.cli(f"list ({attempt})", "list", "--release", "good", "--json", codes=(0,))
        rows = json.loads(result.out or "[]")
        score.check(f"list ({attempt}) shows the good release", [r["id"] for r in rows] == ["sae"])
        warned = [ln for ln in result.err.splitlines() if ": warning: " in ln]
        score.check(f"list ({attempt}) reports the bad files", len(warned) >= 5, result.err[:300])
        score.check(
            f"list ({attempt}) output is bounded", len(result.err) < 20_000, str(len(result.err))
        )
    score.cli("resolve by Neuronpedia id", "resolve", "t/good", codes=(0,))
    score.cli("resolve the good release", "resolve", "good/sae", codes=(0,))
    score.cli("validate the directory", "validate", str(directory), codes=(1,), one_line=False)
    index = Path(os.environ["SAEREG_CACHE"]) / "index" / "catalog-v4.json"
    size = index.stat().st_size
    score.check("the index cache stays small", size < 5_000_000, f"{size} bytes")
    score.check("no YAML tag ran code", not marker.exists())
    score.done()


def _builtin_row() -> dict:
    result = run_cli("resolve", "gpt2-small-res-jb/blocks.8.hook_resid_pre", "--json")
    return json.loads(result.out)


def test_extra_releases_cannot_take_over_built_in_references(tmp_path, monkeypatch) -> None:
    score = Score("takeover")
    row = _builtin_row()
    builtin_file = row["source_file"]
    directory = tmp_path / "releases"
    directory.mkdir()
    evil_entry = (
        f"- id: {row['id']}\n  path: {row['path']}\n  hook_name: {row['hook_name']}\n"
        f"  hook_layer: 8\n  d_sae: 16\n  neuronpedia: {row['neuronpedia']}\n"
    )
    head = GOOD.split("saes:")[0].replace("test-org/faults", row["repo_id"])
    # same release name as a built-in, in the file of that name
    (directory / f"{row['release']}.yaml").write_text(
        head.format(name=row["release"]) + "saes:\n" + evil_entry, encoding="utf-8"
    )
    # a file whose release name is a built-in's
    (directory / "evil.yaml").write_text(
        head.format(name=row["release"]) + "saes:\n" + evil_entry, encoding="utf-8"
    )
    # another release claiming the built-in's Neuronpedia id and hf: path ("a-" sorts first)
    (directory / "a-evil.yaml").write_text(
        head.format(name="a-evil") + "saes:\n" + evil_entry, encoding="utf-8"
    )
    monkeypatch.setenv("SAEREG_RELEASES", str(directory))
    refs = {
        "release/id": f"{row['release']}/{row['id']}",
        "neuronpedia id": row["neuronpedia"],
        "hf: reference": f"hf:{row['repo_id']}/{row['path']}",
    }
    for what, ref in refs.items():
        for attempt in (1, 2):  # cold and warm index
            result = score.cli(f"{what} ({attempt})", "resolve", ref, "--json", codes=(0,))
            got = json.loads(result.out or "{}").get("source_file")
            if not score.check(f"{what} resolves to the built-in file", got == builtin_file, got):
                score.count("references taken over")
    result = score.cli("the clash is reported", "resolve", refs["neuronpedia id"], codes=(0,))
    score.check("a warning names the clash", "warning" in result.err, result.err[:300])
    result = score.cli(
        "validate flags the clash", "validate", str(directory), codes=(1,), one_line=False
    )
    score.check(
        "validate names the duplicate Neuronpedia id",
        "duplicate-neuronpedia" in result.out,
        result.out[-500:],
    )
    score.done()


def test_yaml_hazards_are_named_with_their_lines(tmp_path) -> None:
    score = Score("release files")
    from saereg.base.errors import ReleaseFileError
    from saereg.catalogue.safeyaml import decode, load

    cases = {
        "a: 1\nb:\n  c: 2\n  c: 3\n": "4: duplicate key 'c' (first at line 3)",
        "a: 1\nsaes: []\nsaes: [1]\n": "3: duplicate key 'saes' (first at line 2)",
        "a: &x 1\nb: *x\n": "1: YAML anchors and aliases",
        "a: " + "[" * 40 + "]" * 40: "nested more than 32 levels deep",
        "a: [1, 2\n": "not valid YAML",
    }
    for text, expected in cases.items():
        try:
            load(text, "f.yaml")
            message = "accepted"
        except ReleaseFileError as exc:
            message = str(exc)
        score.check(f"{expected}", message.startswith("f.yaml") and expected in message, message)
    for data, expected in {
        "a: 1\n".encode("utf-16"): "encoded as UTF-16",
        "a: 1\n".encode("utf-16-le"): "NUL character",
        b"a: 1\nb: caf\xe9\n": "f.yaml:2: not UTF-8 (byte 0xe9",
    }.items():
        try:
            decode(data, "f.yaml")
            message = "accepted"
        except ReleaseFileError as exc:
            message = str(exc)
        score.check(expected, expected in message, message)
    score.done()


MODEL_TABLES = {
    "utf-16": "schema: 1\nmodels: []\n".encode("utf-16"),
    "models an int": b"schema: 1\nmodels: 5\n",
    "d_model text": b"schema: 1\nmodels:\n- {name: my-model, family: gpt2, d_model: x}\n",
    "name a list": b"schema: 1\nmodels:\n- {name: [1], family: gpt2}\n",
    "no name": b"schema: 1\nmodels:\n- {d_model: 5}\n",
    "alias bomb": ("schema: 1\n" + _bomb() + "models: []\n").encode(),
    "duplicate key": b"schema: 1\nmodels: []\nmodels: []\n",
    "shadows a built-in model": b"schema: 1\nmodels:\n- {name: gpt2-small, d_model: 3}\n",
}


def test_bad_models_tables_beside_extra_releases(tmp_path, monkeypatch) -> None:
    score = Score("release files")
    for i, (what, data) in enumerate(MODEL_TABLES.items()):
        directory = tmp_path / f"m{i}"
        (directory / "models").mkdir(parents=True)
        (directory / "models" / "models.yaml").write_bytes(data)
        text = GOOD.format(name="extra").replace("model: test-model", "model: my-model")
        (directory / "extra.yaml").write_text(text, encoding="utf-8")
        monkeypatch.setenv("SAEREG_RELEASES", str(directory))
        # (a release left out for its models table is no release: --release names nothing)
        score.cli(f"models table {what}: list", "list", "--release", "extra", codes=(0, 1, 2))
        score.cli(f"models table {what}: resolve", "resolve", "extra/sae", codes=(0, 1))
        result = score.cli(f"models table {what}: gpt2", "resolve", "gpt2-small/8-res-jb", "--json",
                           codes=(0,))  # fmt: skip
        shape = json.loads(result.out or "{}").get("d_in")
        score.check(f"models table {what}: built-in shapes kept", shape == 768, str(shape))
    score.done()
