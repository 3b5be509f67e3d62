"""The differentiable twin equals the runtime bit for bit; its gradients are usable."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from factories import make_convnet, make_mlp, random_net
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler import reference
from compiler.chip import PICORE64
from compiler.encoding import encode
from frontends import compile_model
from runtime.engines.tick import dense_rows, run_payloads
from runtime.image import from_sections
from runtime.lab.twin import SURROGATES, Twin, bridge, csr_to_rows, encode_payloads, rows_to_csr

TINY = dataclasses.replace(PICORE64, name="tiny", mesh_x=2, mesh_y=2, xbar_rows=64,
                           xbar_cols=128, max_chips=16)


def image_of(prog):
    return from_sections(prog.sections(), prog.spec.digest())


def assert_twin_exact(img, payloads, twin=None, weights=None):
    r = run_payloads(img, payloads, record=True, workers=2, weights=weights)
    twin = twin or Twin(img)
    with torch.no_grad():
        sc, stt = twin(torch.as_tensor(payloads, dtype=torch.float64), return_state=True)
    np.testing.assert_array_equal(sc.numpy(), r.scores)
    for li, L in enumerate(img.layers):
        g = img.layer_neurons(li)
        np.testing.assert_array_equal(stt.counts[L["name"]].numpy(), r.counts_all[:, g], L["name"])
        np.testing.assert_array_equal(stt.v[L["name"]].numpy(), r.v_all[:, g], L["name"])
        np.testing.assert_array_equal(stt.spikes[L["name"]].sum(0).numpy(), r.counts_all[:, g])
    out = img.meta["output"]["layer"]
    np.testing.assert_array_equal(stt.counts[out].numpy(), r.out_counts)
    np.testing.assert_array_equal(stt.v[out].numpy(), r.v_out)
    return r


@given(net=random_net(), bits=st.sampled_from([1, 2, 4, 8]), per_channel=st.booleans(),
       tiny=st.booleans(), T=st.integers(1, 5), kind=st.sampled_from(["direct", "rate", "raw"]))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_twin_bit_exact_random_graphs(net, bits, per_channel, tiny, T, kind):
    g, seed = net
    spec = TINY if tiny else PICORE64
    prog = compile_model(g, spec, bits=bits, per_channel=per_channel, chips=16 if tiny else 1)
    img = image_of(prog)
    rng = np.random.default_rng(seed)
    x = rng.random((4, img.n_inputs))
    if kind == "raw":
        p = rng.integers(0, 256, (T, 4, img.n_inputs)).astype(np.uint8)
    else:
        p = encode(kind, x, T, seed=seed)
    assert_twin_exact(img, p)


def test_twin_wvals_order_is_unmap_csr_order():
    prog = compile_model(make_convnet(residual=True), PICORE64, bits=4, per_channel=True)
    img = image_of(prog)
    twin = Twin(img)
    un = img.unmap()
    wv = twin.wvals()
    for (layer, src), vals in wv.items():
        m = un.node(layer).matrix(src)
        np.testing.assert_array_equal(vals.numpy(), m.data.astype(np.float64))
        m2 = twin.matrices[(layer, src)]
        np.testing.assert_array_equal(m2.indptr, m.indptr)
        np.testing.assert_array_equal(m2.indices, m.indices)
    # the bridge gives the same structure and values from the dense rows
    _, rows = dense_rows(img)
    for k, m in rows_to_csr(img, rows).items():
        m0 = un.node(k[0]).matrix(k[1])
        np.testing.assert_array_equal(m.indices, m0.indices)
        np.testing.assert_array_equal(m.data, m0.data)
    np.testing.assert_array_equal(csr_to_rows(img, rows_to_csr(img, rows), np.int8), rows)
    # replaced values: the twin with wvals == the runtime with the same dense rows
    rng = np.random.default_rng(1)
    new = {k: torch.as_tensor(np.clip(v.numpy() + rng.integers(-2, 3, v.numel()), -8, 7))
           for k, v in wv.items()}
    rows2 = twin.rows(new, np.int8)
    p = rng.integers(0, 256, (5, 6, img.n_inputs)).astype(np.uint8)
    r = run_payloads(img, p, weights=rows2)
    with torch.no_grad():
        sc = twin(torch.as_tensor(p, dtype=torch.float64), wvals=new)
    np.testing.assert_array_equal(sc.numpy(), r.scores)
    # gradients reach the weight values
    wg = {k: v.clone().requires_grad_() for k, v in wv.items()}
    twin(torch.as_tensor(p, dtype=torch.float64), wvals=wg).sum().backward()
    assert all(torch.isfinite(v.grad).all() for v in wg.values())
    assert sum(float(v.grad.abs().sum()) for v in wg.values()) > 0


def _run_instance(img, p, inst):
    try:
        return run_payloads(img, p, record=True, workers=2, instance=inst)
    except TypeError:  # pragma: no cover - a runtime without instance support
        pytest.skip("run_payloads has no instance= yet")


def test_twin_noise_instance_bridge():
    """Digital instances that change weights (incl. zero cells) and registers stay bit-exact;
    analog ones agree to float rounding."""
    prog = compile_model(make_mlp((12, 20, 5), lif=True), TINY, bits=4, chips=4)
    img = image_of(prog)
    _, rows = dense_rows(img)
    rng = np.random.default_rng(3)
    w = rows.copy()
    flip = rng.random(w.size) < 0.05
    w[flip] = rng.integers(-8, 8, int(flip.sum()))
    th = img.a["neu_th_pos"].astype(np.int64) + rng.integers(0, 3, img.n_neurons)
    inst = SimpleNamespace(wrow=w, regs={"th_pos": th}, analog=False, label="test")
    twin = Twin(img, instance=inst)
    assert set(bridge(img, w)) == set(twin.wvals())
    p = rng.integers(0, 256, (6, 8, img.n_inputs)).astype(np.uint8)
    r = _run_instance(img, p, inst)
    with torch.no_grad():
        sc, stt = twin(torch.as_tensor(p, dtype=torch.float64), return_state=True)
    np.testing.assert_array_equal(sc.numpy(), r.scores)
    for li, L in enumerate(img.layers):
        g = img.layer_neurons(li)
        np.testing.assert_array_equal(stt.counts[L["name"]].numpy(), r.counts_all[:, g])
        np.testing.assert_array_equal(stt.v[L["name"]].numpy(), r.v_all[:, g])
    # weights only, through run_payloads(weights=...)
    inst2 = SimpleNamespace(wrow=w, regs=None, analog=False, label="w")
    assert_twin_exact(img, p, Twin(img, instance=inst2), weights=w)
    # analog: real-valued weights and thresholds
    wa = rows.astype(np.float64) * (1 + 0.1 * rng.standard_normal(rows.size))
    tha = img.a["neu_th_pos"].astype(np.float64) * 1.05
    ia = SimpleNamespace(wrow=wa, regs={"th_pos": tha}, analog=True, label="a")
    ra = _run_instance(img, p, ia)
    with torch.no_grad():
        sa, sta = Twin(img, instance=ia)(torch.as_tensor(p, dtype=torch.float64),
                                         return_state=True)
    np.testing.assert_allclose(sa.numpy(), ra.scores, rtol=1e-6, atol=1e-6)


def test_float_twin_matches_run_float():
    prog = compile_model(make_convnet(), PICORE64, bits=8)
    fg = prog.float_graph
    twin = Twin.from_graph(fg)
    rng = np.random.default_rng(0)
    p = encode("direct", rng.random((6, 64)), 4)
    ref = reference.run_float(fg, p.astype(np.float64))
    with torch.no_grad():
        sc, stt = twin(torch.as_tensor(p, dtype=torch.float64), return_state=True)
    np.testing.assert_allclose(sc.numpy(), ref.scores, rtol=1e-9, atol=1e-9)
    for k in ref.counts:
        assert np.mean(stt.counts[k].numpy() == ref.counts[k]) > 0.99


@pytest.mark.parametrize("surrogate", SURROGATES)
@pytest.mark.parametrize("encoding", ["direct", "rate", "phase", "latency"])
def test_gradients_finite_and_nonzero(surrogate, encoding):
    prog = compile_model(make_convnet(), PICORE64, bits=4)
    img = image_of(prog)
    twin = Twin(img, surrogate=surrogate)
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((5, 1, 8, 8)) * 0.9, dtype=torch.float64).requires_grad_()
    p = encode_payloads(x, encoding, 6, seed=1)
    np.testing.assert_array_equal(p.detach().numpy(), encode(encoding, x.detach().numpy(), 6, 1))
    y = torch.as_tensor(rng.integers(0, 5, 5))
    loss = torch.nn.functional.cross_entropy(twin.logits(p), y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0
    # the float twin too
    ft = Twin.from_graph(prog.float_graph, surrogate=surrogate)
    x2 = x.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(ft.logits(encode_payloads(x2, encoding, 6, 1)), y).backward()
    assert torch.isfinite(x2.grad).all() and float(x2.grad.abs().sum()) > 0


def test_pdsg_sigma_changes_gradient():
    prog = compile_model(make_mlp((16, 24, 4)), PICORE64, bits=8)
    img = image_of(prog)
    rng = np.random.default_rng(0)
    p = torch.as_tensor(encode("direct", rng.random((8, 16)), 5), dtype=torch.float64)
    grads = {}
    for sg in ("pdsg", "atan"):
        x = p.clone().requires_grad_()
        Twin(img, surrogate=sg)(x).sum().backward()
        grads[sg] = x.grad
    assert not torch.allclose(grads["pdsg"], grads["atan"])
