"""Writes the tiny circuit-tracer fixtures in this folder with circuit-tracer's own code
(circuit-tracer 0.5.0: CrossLayerTranscoder.to_safetensors, TranscoderSet.to_safetensors)
and the reference outputs its own modules compute in float64 (reference.safetensors).

Run once with a Python that has circuit-tracer installed (it is not installable beside
the product's test dependencies): `python tests/data/circuit_tracer/make_fixtures.py`.
"""

from pathlib import Path

import torch
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt
from circuit_tracer.transcoder.single_layer_transcoder import (
    SingleLayerTranscoder,
    TranscoderSet,
    load_transcoder_set,
)
from safetensors.torch import save_file

HERE = Path(__file__).parent
N, D, F, POS = 3, 8, 12, 5
torch.manual_seed(0)
cpu = torch.device("cpu")


def clt() -> dict[str, torch.Tensor]:
    m = CrossLayerTranscoder(
        N,
        F,
        D,
        activation_function="jump_relu",
        lazy_decoder=False,
        device=cpu,
        dtype=torch.float32,
    )
    with torch.no_grad():
        m.W_enc.normal_()
        m.b_enc.normal_(std=0.3)
        m.b_dec.normal_(std=0.3)
        m.activation_function.threshold.uniform_(0.0, 0.5)
        for w in m.W_dec:
            w.normal_()
    m.to_safetensors(str(HERE / "clt"))
    ct = load_clt(str(HERE / "clt"), device=cpu, dtype=torch.float64, lazy_decoder=False)
    x = torch.randn(N, POS, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        f = ct.encode(x)
        assert (f[-1] != 0).any(-1).all()  # compute_reconstruction sizes by the last position
        return {"clt.x": x, "clt.encode": f, "clt.decode": ct.decode(f), "clt.forward": ct(x)}


def transcoder_set() -> dict[str, torch.Tensor]:
    layers = {}
    for i in range(N):
        t = SingleLayerTranscoder(
            D,
            F,
            torch.nn.functional.relu,
            i,
            skip_connection=(i == 2),
            device=cpu,
            dtype=torch.float32,
        )
        with torch.no_grad():
            for p in (t.W_enc, t.W_dec, t.b_enc, t.b_dec):
                p.normal_(std=0.5)
            if t.W_skip is not None:
                t.W_skip.normal_(std=0.2)
        layers[i] = t
    TranscoderSet(layers, "mlp.hook_in", "hook_mlp_out").to_safetensors(str(HERE / "set"))
    paths = {i: str(HERE / "set" / f"layer_{i}.safetensors") for i in range(N)}
    ct = load_transcoder_set(
        paths,
        "test",
        "mlp.hook_in",
        "hook_mlp_out",
        device=cpu,
        dtype=torch.float64,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    x = torch.randn(N, POS, D, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        f = ct.encode(x)
        full = ct.decode(f, x)  # circuit-tracer's decode adds the skip path
        skip = torch.stack(
            [
                ct.compute_skip(i, x[i]) if ct[i].W_skip is not None else torch.zeros_like(x[i])
                for i in range(N)
            ]
        )
        return {"set.x": x, "set.encode": f, "set.decode": full - skip, "set.forward": full}


save_file(
    {k: v.contiguous() for k, v in {**clt(), **transcoder_set()}.items()},
    str(HERE / "reference.safetensors"),
    metadata={"by": "circuit-tracer 0.5.0"},
)


def gemma_scope_2_clt() -> dict[str, torch.Tensor]:
    """Gemma Scope 2's per-layer CLT files (params_layer_{L}.safetensors: w_enc [d_in,
    d_sae], w_dec [d_sae, n_layers, d_out], b_enc, b_dec, threshold,
    affine_skip_connection [d_in, d_out]) in that exact layout (circuit-tracer has no
    writer for it), and what circuit-tracer's load_gemma_scope_2_clt computes from them."""
    from circuit_tracer.transcoder.cross_layer_transcoder import load_gemma_scope_2_clt

    folder = HERE / "gemma_scope_2_clt"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(3)
    for i in range(N):
        w_dec = torch.randn(F, N, D, generator=g)
        w_dec[:, :i] = 0  # a layer writes to itself and later layers only
        save_file(
            {
                "w_enc": torch.randn(D, F, generator=g),
                "w_dec": w_dec,
                "b_enc": torch.randn(F, generator=g) * 0.3,
                "b_dec": torch.randn(D, generator=g) * 0.3,
                "threshold": torch.rand(F, generator=g) * 0.5,
                "affine_skip_connection": torch.randn(D, D, generator=g) * 0.2,
            },
            str(folder / f"params_layer_{i}.safetensors"),
        )
    # load_gemma_scope_2_clt reads layers 0..max(paths)-1: one key past the last layer.
    paths = {i: str(folder / f"params_layer_{i}.safetensors") for i in range(N)}
    ct = load_gemma_scope_2_clt({**paths, N: ""}, device=cpu, dtype=torch.float64)
    ct.W_skip = torch.nn.Parameter(ct.W_skip.double())  # the loader leaves it float32
    x = torch.randn(N, POS, D, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        f = ct.encode(x)
        assert (f[-1] != 0).any(-1).all()
        # circuit-tracer's CLT.forward cannot run with a skip path (it decodes without the
        # inputs); decode(f, input_acts) adds x @ W_skip (affine_skip_connection as stored).
        full = ct.decode(f, x)
        decoded = full - torch.stack([ct.compute_skip(i, x[i]) for i in range(N)])
        return {"gs2.x": x, "gs2.encode": f, "gs2.decode": decoded, "gs2.forward": full}


save_file(
    {k: v.contiguous() for k, v in {**clt(), **transcoder_set(), **gemma_scope_2_clt()}.items()},
    str(HERE / "reference.safetensors"),
    metadata={"by": "circuit-tracer 0.5.0"},
)
