"""NIR files from real producers: the NIR paper's public files and graphs each installed producer
exports with its own exporter, imported with only ``--nir-convention PRODUCER`` and compared
with the producer's own simulation (float reference). Producers that are not installed skip.

The corpus lives in the shared folder beside the repository (``../shared/corpus/nir-paper``);
a checkout without it skips those tests.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import nir
import numpy as np
import pytest
import torch

from compiler.errors import FrontendError, UnsupportedOpError
from compiler.ir import IF, LIF
from frontends.nir import from_nir_graph, import_nir

# ../shared beside the repository (CI: a fresh clone with shared/ copied beside it);
# SNNC_SHARED overrides it (e.g. a git worktree that lives elsewhere)
CORPUS = Path(os.environ.get("SNNC_SHARED", Path(__file__).resolve().parents[2].parent / "shared")
              ) / "corpus" / "nir-paper"
LIF_DIR = CORPUS / "paper" / "01_lif"
needs_corpus = pytest.mark.skipif(not LIF_DIR.is_dir(), reason=f"no NIR corpus at {CORPUS}")

T, B, N_IN = 20, 200, 16


def _csv(platform: str):
    c = np.loadtxt(LIF_DIR / f"lif_{platform}.csv", delimiter=",")
    return c[:, 0], c[:, 2]                       # input, spikes (membrane in column 1)


def _spikes(helpers, g, x):
    out, _ = helpers.eval_graph(g, np.asarray(x, np.float64)[:, None, None])
    return out[:, 0, 0]


# --- the NIR paper's single-LIF graphs and each platform's recorded simulation ---------------
@needs_corpus
@pytest.mark.parametrize("platform,convention", [
    ("norse", "norse"), ("snntorch", "snntorch"), ("exact", "nir"), ("nengo", "nir"),
    ("sinabs", "sinabs"),
])
def test_paper_lif_matches_platform_csv(platform, convention, helpers):
    x, want = _csv(platform)
    g = import_nir(LIF_DIR / "lif_norse.nir", convention=convention, dt=1e-4)
    got = _spikes(helpers, g, x)
    assert want.sum() == 4
    np.testing.assert_array_equal(got, want)


@needs_corpus
def test_paper_rockpool_dt_is_read_from_r(helpers):
    """Rockpool writes dt only into r; without --dt the import must still fire 4 of 4 spikes."""
    x, want = _csv("rockpool")
    g = import_nir(LIF_DIR / "lif_rockpool.nir", convention="rockpool")
    assert abs(g.attrs["nir"]["dt"] - 1e-4) < 1e-8
    assert "the file" in g.attrs["nir"]["dt_source"]
    np.testing.assert_array_equal(_spikes(helpers, g, x), want)
    g2 = import_nir(LIF_DIR / "lif_rockpool.nir", convention="rockpool", dt=1e-3)
    assert any("overrides the dt" in m for m in g2.attrs["nir"]["lossy"])


@needs_corpus
@pytest.mark.parametrize("platform,convention", [("spyx", "spyx"), ("lava_cpu_float", "lava")])
def test_paper_late_spike_platforms_declared(platform, convention, helpers):
    """Spyx and Lava spike one step after the crossing: the import says so, and the train is
    the platform's shifted by exactly one step."""
    x, want = _csv(platform)
    g = import_nir(LIF_DIR / "lif_norse.nir", convention=convention, dt=1e-4)
    got = _spikes(helpers, g, x)
    np.testing.assert_array_equal(got[:-1], want[1:])
    if convention == "spyx":     # r = 1 is not Spyx 1.0's r = beta: an older Spyx file
        assert g.attrs["nir"]["convention"] == "spyx-0"
        assert any("one step after" in m for m in g.attrs["nir"]["lossy"])


@needs_corpus
def test_paper_cnn_sinabs_declares_multispike_and_has_readable_names():
    g = import_nir(CORPUS / "paper" / "02_cnn" / "cnn_sinabs.nir", convention="sinabs")
    names = g.topo_order()
    assert "conv2d0" in names and "if1" in names and "sumpool4" in names
    assert not any(n.isdigit() for n in names)
    lossy = " ".join(g.attrs["nir"]["lossy"])
    assert "multiple spikes per step" in lossy and "min_v_mem" in lossy


@needs_corpus
def test_paper_braille_and_malformed_files_name_the_file():
    rnn = CORPUS / "paper" / "03_rnn" / "braille_noDelay_bias_zero.nir"
    with pytest.raises(UnsupportedOpError) as e:
        import_nir(rnn, convention="snntorch", cubalif="lif")
    assert "recurrent" in str(e.value) and rnn.name in str(e.value)
    bad = CORPUS / "paper" / "03_rnn" / "extras" / "braille_noDelay_bias_zero_subgraph.nir"
    with pytest.raises(FrontendError) as e:
        import_nir(bad, convention="snntorch")
    assert bad.name in str(e.value) and "malformed" in str(e.value)
    assert "nir.write" not in (e.value.hint or "")
    shd = CORPUS / "spyx" / "spyx_shd.nir"          # tau < 0: a malformed file
    with pytest.raises(FrontendError, match="spyx_shd.nir.*must be > 0"):
        import_nir(shd, convention="spyx")


# --- malformed fields (issue 10): clear errors naming file, node and tensor --------------------
def _one_lif(**over):
    kw = dict(tau=np.full(3, 1e-2), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    kw.update(over)
    w = over.pop("weight", np.eye(3))
    return nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([3])}),
                                  nir.Linear(w), nir.LIF(**{k: kw[k] for k in (
                                      "tau", "r", "v_leak", "v_threshold")}), type_check=False)


@pytest.mark.parametrize("dt", ["0.001x", float("nan"), 0.0, -1e-3, float("inf")])
def test_malformed_dt_is_a_frontend_error(dt, tmp_path):
    g = _one_lif()
    g.metadata = {"dt": dt}
    p = tmp_path / "bad_dt.nir"
    nir.write(str(p), g)
    with pytest.raises(FrontendError) as e:
        import_nir(p, convention="norse")
    assert "bad_dt.nir" in str(e.value) and "dt" in str(e.value)
    with pytest.raises(FrontendError, match="--dt"):
        import_nir(tmp_path / "bad_dt.nir", convention="norse", dt=dt)


@pytest.mark.parametrize("field,value", [
    ("weight", np.array([[np.nan, 0, 0], [0, 1, 0], [0, 0, 1]])),
    ("weight", np.where(np.eye(3) > 0, np.inf, 0.0)), ("tau", np.full(3, np.nan)),
    ("r", np.full(3, np.inf)),
    ("v_threshold", np.full(3, np.nan)),
])
def test_nan_inf_tensors_refused_naming_the_tensor(field, value, tmp_path):
    g = _one_lif(**{field: value})
    p = tmp_path / "nan.nir"
    nir.write(str(p), g)
    with pytest.raises(FrontendError) as e:
        import_nir(p, convention="norse")
    msg = str(e.value)
    assert "nan.nir" in msg and f"'{field}'" in msg and "NaN/Inf" in msg


def test_string_field_refused(tmp_path):
    lif = nir.LIF(tau=np.full(3, 1e-2), r=np.ones(3), v_leak=np.zeros(3),
                  v_threshold=np.ones(3))
    lif.tau = np.array(["a", "b", "c"])
    g = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([3])}),
                               nir.Linear(np.eye(3)), lif, type_check=False)
    with pytest.raises(FrontendError, match="'tau' is not numeric"):
        from_nir_graph(g, "s.nir", convention="norse")


# --- conventions the producers' code defines (plain loops) ----------------------------------
def test_spyx_1_detected_from_r_equals_beta(helpers):
    """Spyx 1.0: tau = dt/(1-beta), r = beta; V <- beta V + x - theta s, s = [V_prev > theta]."""
    rng = np.random.default_rng(1)
    beta, th, dt = 0.8, 1.0, 1.0
    w = rng.normal(0.6, 0.4, (4, 3))
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([3])}), nir.Linear(w),
        nir.LIF(tau=np.full(4, dt / (1 - beta)), r=np.full(4, beta), v_leak=np.zeros(4),
                v_threshold=np.full(4, th)), type_check=False)
    ig = from_nir_graph(g, convention="spyx")
    assert ig.attrs["nir"]["convention"] == "spyx" and ig.attrs["nir"]["dt"] == pytest.approx(dt)
    x = rng.uniform(0, 1, (40, 8, 3))
    v = np.zeros((8, 4))
    want = []
    for xt in x:
        s = (v - th > 0).astype(float)
        v = beta * v + xt @ w.T - s * th
        want.append(s)
    want = np.stack(want)
    ours, _ = helpers.eval_graph(ig, x)
    assert want.sum() > 20
    np.testing.assert_array_equal(ours[:-1], want[1:])        # the declared one-step delay
    assert any("one step after" in m for m in ig.attrs["nir"]["lossy"])


def test_snntorch_zero_reset_is_exact(helpers):
    """reset_mechanism='zero': mem <- beta (1 - s_prev) mem + x, s = [mem > theta]."""
    rng = np.random.default_rng(2)
    beta, th, dt = 0.9, 1.0, 1e-4
    w = rng.normal(0.5, 0.4, (4, 3))
    tau = dt / (1 - beta)
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([3])}), nir.Linear(w),
        nir.LIF(tau=np.full(4, tau), r=np.full(4, tau / dt), v_leak=np.zeros(4),
                v_threshold=np.full(4, th)), type_check=False)
    x = rng.uniform(0, 1, (40, 8, 3))
    mem, s = np.zeros((8, 4)), np.zeros((8, 4))
    want = []
    for xt in x:
        mem = beta * (1 - s) * mem + xt @ w.T
        s = (mem > th).astype(float)
        want.append(s)
    want = np.stack(want)
    zero = from_nir_graph(g, convention="snntorch-zero")
    np.testing.assert_array_equal(helpers.eval_graph(zero, x)[0], want)
    sub = from_nir_graph(g, convention="snntorch")
    assert any("snntorch-zero" in m for m in sub.attrs["nir"]["lossy"])
    assert not np.array_equal(helpers.eval_graph(sub, x)[0], want)


def test_cubalif_dc_gain_per_producer():
    n = 3
    cuba = nir.CubaLIF(tau_syn=np.full(n, 5e-3), tau_mem=np.full(n, 1e-2), r=np.ones(n),
                       v_leak=np.zeros(n), v_threshold=np.ones(n))
    g = nir.NIRGraph.from_list(nir.Input(input_type={"input": np.array([2])}),
                               nir.Linear(np.ones((n, 2))), cuba, type_check=False)

    def dc(conv, dt):
        ig = from_nir_graph(g, convention=conv, dt=dt, cubalif="lif")
        sc = [ig.node(k).scale for k in ig.topo_order() if k.endswith("_w_in")]
        return float(np.asarray(sc[0]).reshape(-1)[0]) if sc else 1.0
    assert dc("nir", 1e-3) == 1.0                                       # w_in
    a = np.exp(-1e-3 / 5e-3)
    assert dc("rockpool", 1e-3) == pytest.approx(a / (1 - a))            # decays before use
    assert dc("spyx-0", 1e-3) == 1.0
    # Norse 1.1 writes tau = dt * tau: 5e-6 at dt = 1e-3 is tau_syn = 5e-3 -> 5 steps
    gn = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([2])}), nir.Linear(np.ones((n, 2))),
        nir.CubaLIF(tau_syn=np.full(n, 5e-6), tau_mem=np.full(n, 1e-5), r=np.ones(n),
                    v_leak=np.zeros(n), v_threshold=np.ones(n)), type_check=False)
    ig = from_nir_graph(gn, convention="norse", cubalif="lif")
    sc = [ig.node(k).scale for k in ig.topo_order() if k.endswith("_w_in")]
    assert float(np.asarray(sc[0]).reshape(-1)[0]) == pytest.approx(5.0)
    assert any("Norse 1.1's exporter" in m for m in ig.attrs["nir"]["lossy"])
    assert float(ig.node("cubalif").beta) == pytest.approx(0.9)


# --- producers' own exporters vs their own simulation -----------------------------------------
def _data():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (B, T, N_IN)).astype(np.float32)
    w1 = rng.normal(0, 0.6, (32, N_IN)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (10, 32)).astype(np.float32)
    return x, w1, w2


def _counts(helpers, g, x):
    out, _ = helpers.eval_graph(g, np.transpose(x, (1, 0, 2)))
    return out.sum(0)


@pytest.fixture
def quiet():
    logging.disable(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("dt", [1e-3, 1e-4])
def test_rockpool_export(dt, helpers, quiet):
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFNeuronTorch, LinearTorch, to_nir
    x, w1, w2 = _data()

    def net(max_spikes):
        return Sequential(
            LinearTorch((N_IN, 32), weight=torch.tensor(w1.T * 0.5)),
            LIFNeuronTorch(32, tau_mem=0.01, threshold=1.0, dt=dt, max_spikes_per_dt=max_spikes),
            LinearTorch((32, 10), weight=torch.tensor(w2.T * 1.5)),
            LIFNeuronTorch(10, tau_mem=0.01, threshold=1.0, dt=dt, max_spikes_per_dt=max_spikes))
    single = net(1.0)
    theirs = single(torch.tensor(x))[0].detach().numpy().sum(1)
    g = from_nir_graph(to_nir(single, torch.zeros(1, 1, N_IN)), convention="rockpool")
    assert g.attrs["nir"]["dt"] == pytest.approx(dt, rel=1e-4)        # read from r, no --dt
    ours = _counts(helpers, g, x)
    np.testing.assert_array_equal(ours, theirs)
    assert any("multiple spikes per step" in m for m in g.attrs["nir"]["lossy"])
    multi = net(2.0 ** 16)                     # Rockpool's default: several spikes per step
    m = multi(torch.tensor(x))[0].detach().numpy().sum(1)
    assert m.sum() > theirs.sum()              # what the declaration is about


@pytest.mark.parametrize("spike_fn", ["SingleSpike", "MultiSpike"])
def test_sinabs_export(spike_fn, helpers, quiet):
    sinabs = pytest.importorskip("sinabs")
    import sinabs.activation as sa
    import sinabs.layers as sl
    x, w1, w2 = _data()
    fn = getattr(sa, spike_fn)
    net = torch.nn.Sequential(
        torch.nn.Linear(N_IN, 32), sl.IAFSqueeze(batch_size=B, spike_fn=fn, min_v_mem=-1.0),
        torch.nn.Linear(32, 10), sl.IAFSqueeze(batch_size=B, spike_fn=fn, min_v_mem=-1.0))
    with torch.no_grad():
        net[0].weight[:] = torch.tensor(w1 * 2)
        net[0].bias.zero_()
        net[2].weight[:] = torch.tensor(w2 * 2)
        net[2].bias.zero_()
        theirs = net(torch.tensor(x).reshape(B * T, N_IN)).reshape(B, T, 10).numpy().sum(1)
    g = from_nir_graph(sinabs.to_nir(net, torch.zeros(B, N_IN)), convention="sinabs")
    assert [k for k in g.topo_order() if isinstance(g.node(k), IF)] == ["if1", "if3"]
    ours = _counts(helpers, g, x)
    lossy = " ".join(g.attrs["nir"]["lossy"])
    assert "multiple spikes per step" in lossy
    if spike_fn == "SingleSpike":
        np.testing.assert_array_equal(ours, theirs)
    else:                                       # declared, and measurably different
        assert theirs.sum() > 2 * ours.sum()


def test_norse_export_with_exporter_tau_bug(helpers, quiet):
    pytest.importorskip("norse")
    import norse.torch as nt
    x, w1, w2 = _data()
    net = nt.SequentialState(torch.nn.Linear(N_IN, 32), nt.LIFBoxCell(),
                             torch.nn.Linear(32, 10), nt.LIFBoxCell())
    with torch.no_grad():
        net[0].weight[:] = torch.tensor(w1 * 20)
        net[0].bias.zero_()
        net[2].weight[:] = torch.tensor(w2 * 20)
        net[2].bias.zero_()
        state, outs = None, []
        for t in range(T):
            o, state = net(torch.tensor(x[:, t]), state)
            outs.append(o.numpy())
    theirs = np.stack(outs).sum(0)
    g = from_nir_graph(nt.to_nir(net, torch.zeros(1, N_IN)), convention="norse")
    assert any("Norse 1.1's exporter" in m for m in g.attrs["nir"]["lossy"])
    assert isinstance(g.node("lif1"), LIF)
    ours = _counts(helpers, g, x)
    assert theirs.sum() > 100
    np.testing.assert_array_equal(ours, theirs)


# --- the CLI: declared semantics in snnc compile's output and report; options everywhere ------
def test_cli_compile_declares_and_verify_accepts_nir_options(tmp_path):
    import json

    from click.testing import CliRunner

    from compiler.cli import cli
    from compiler.cliutil import nir_options
    from frontends.nir import CONVENTION_NAMES

    @nir_options
    def probe(**kw):
        return kw
    choices = [p for p in probe.__click_params__ if p.name == "nir_convention"][0].type.choices
    assert tuple(choices) == CONVENTION_NAMES
    rng = np.random.default_rng(3)
    g = nir.NIRGraph.from_list(
        nir.Input(input_type={"input": np.array([64])}),
        nir.Affine(rng.normal(0.05, 0.1, (10, 64)), np.zeros(10)),
        nir.IF(r=np.ones(10), v_threshold=np.ones(10)), type_check=False)
    p = tmp_path / "sin.nir"
    nir.write(str(p), g)
    run = CliRunner()
    r = run.invoke(cli, ["compile", str(p), "-o", str(tmp_path / "c.bin"),
                         "--nir-convention", "sinabs"])
    assert r.exit_code == 0, r.output
    assert "NIR import: convention sinabs (Sinabs 3.1)" in r.output
    assert "declared: multiple spikes per step" in r.output
    r = run.invoke(cli, ["compile", str(p), "-o", str(tmp_path / "c.bin"), "--json",
                         "--nir-convention", "sinabs"])
    rep = json.loads(r.output)
    assert rep["nir"]["convention"] == "sinabs" and rep["nir"]["declared"]
    r = run.invoke(cli, ["verify", str(p), str(tmp_path / "c.bin"), "--limit", "20", "--json",
                         "--nir-convention", "sinabs"])
    assert r.exit_code == 0, r.output
    assert any("multiple spikes" in w for w in json.loads(r.output)["warnings"])
    r = run.invoke(cli, ["verify", str(p), str(tmp_path / "c.bin"), "--limit", "5"])
    assert r.exit_code != 0 and "sin.nir" in str(r.exception)
    r = run.invoke(cli, ["convert-report", str(p), "--calib", "digits",
                         "--nir-convention", "sinabs"])
    assert r.exit_code != 0 and "already an SNN" in str(r.exception)
