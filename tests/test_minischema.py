"""minischema (used on every conversion) agrees with jsonschema on the canonical config
schema: the same valid/invalid verdict and the same failing paths, on a valid config and on
many single mutations of it."""

from __future__ import annotations

import copy

import pytest
from jsonschema import Draft202012Validator

from saereg.catalogue.minischema import UnsupportedSchema, iter_errors
from saereg.store.sae_config import config_schema

VALID = {
    "config_version": 1,
    "architecture": "jumprelu",
    "transcoder": False,
    "d_in": 8,
    "d_sae": 16,
    "d_out": 8,
    "k": None,
    "apply_b_dec_to_input": False,
    "normalization": {"kind": "scale", "factor": 2.5},
    "reshape": "none",
    "dtype": "float32",
    "hook_name": "blocks.3.hook_resid_post",
    "hook_layer": 3,
    "nested_widths": [4, 16],
    "folded": ["x"],
    "hf_hook": {"module": "model.layers.3", "side": "output"},
    "storage": {
        "kind": "in_place",
        "files": {
            "a/w.safetensors": {
                "blob": "models--o--r/blobs/" + "a" * 64,
                "repo_id": "o/r",
                "revision": "c" * 40,
                "sha256": "a" * 64,
                "size": 100,
            }
        },
        "tensors": {
            "W_enc": {
                "file": "a/w.safetensors",
                "tensor": "enc",
                "offset": 8,
                "dtype": "bfloat16",
                "source_shape": [16, 8],
                "shape": [8, 16],
                "ops": [["transpose"], ["cast", "float32"]],
            }
        },
    },
    "source": {
        "release": "r",
        "sae_id": "s",
        "format": "saelens",
        "revision": None,
        "files": {"a/w.safetensors": "a" * 64},
    },
}

MUTATIONS = [
    (("architecture",), "nope"),
    (("d_in",), 0),
    (("d_in",), True),
    (("d_in",), 8.5),
    (("k",), 0),
    (("transcoder",), 1),
    (("config_version",), 2),
    (("config_version",), True),
    (("normalization",), {"kind": "scale"}),
    (("normalization",), {"kind": "scale", "factor": 0}),
    (("normalization",), {"kind": "layer_norm", "eps": 1e-5, "x": 1}),
    (("normalization",), {"kind": "none", "factor": 1.0}),
    (("hook_name",), 3),
    (("nested_widths",), [0]),
    (("folded",), [1]),
    (("hf_hook",), {"module": "", "side": "input"}),
    (("hf_hook",), {"module": "m", "side": "middle"}),
    (("unknown_field",), 1),
    (("storage", "kind"), "copy"),
    (("storage", "files", "a/w.safetensors", "sha256"), "xyz"),
    (("storage", "files", "a/w.safetensors", "size"), -1),
    (("storage", "tensors", "W_enc", "dtype"), "int8"),
    (("storage", "tensors", "W_enc", "ops"), [[]]),
    (("storage", "tensors", "W_enc", "offset"), "8"),
    (("source", "files", "a/w.safetensors"), "not-a-digest"),
    (("source", "extra"), 1),
    (("source", "format"), None),
]


def _set(doc: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def _verdict(doc: dict) -> tuple[tuple[bool, set, bool], set]:
    schema = config_schema()
    theirs = list(Draft202012Validator(schema).iter_errors(doc))
    ours = list(iter_errors(schema, doc))
    return (not theirs, {tuple(e.path) for e in theirs}, not ours), {p for p, _ in ours}


@pytest.mark.parametrize("doc", [VALID, *(_set(VALID, p, v) for p, v in MUTATIONS)])
def test_same_verdicts_as_jsonschema(doc) -> None:
    (their_ok, their_paths, our_ok), our_paths = _verdict(doc)
    assert their_ok == our_ok
    assert their_paths == our_paths


def test_required_fields_and_unknown_keywords() -> None:
    assert not list(iter_errors(config_schema(), VALID))
    doc = {k: v for k, v in VALID.items() if k != "d_sae"}
    assert any("'d_sae' is a required property" in m for _, m in iter_errors(config_schema(), doc))
    with pytest.raises(UnsupportedSchema):
        list(iter_errors({"type": "object", "patternProperties": {}}, {}))
