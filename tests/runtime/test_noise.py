"""Device noise models (runtime/lab/noise.py), the float kernel path, sweeps and the noise CLI."""

import json
import math

import numpy as np
import pytest
from factories import make_convnet, make_mlp, random_net
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.chip import PICORE64
from compiler.errors import SimulationError
from frontends import compile_model
from runtime.engines.tick import dense_rows, run_payloads, tables
from runtime.image import from_sections
from runtime.lab import noise


def image_of(graph, **kw):
    prog = compile_model(graph, PICORE64, **kw)
    return from_sections(prog.sections(), prog.spec.digest())


@pytest.fixture(scope="module")
def mlp():
    return image_of(make_mlp((16, 24, 6), seed=1, lif=True), bits=4)


@pytest.fixture(scope="module")
def conv():
    return image_of(make_convnet(residual=True), bits=8, per_channel=True)


def payloads_for(img, T=6, B=12, seed=0, graded=True):
    rng = np.random.default_rng(seed)
    if graded:
        return rng.integers(0, 256, (T, B, img.n_inputs)).astype(np.uint8)
    return (255 * (rng.random((T, B, img.n_inputs)) < 0.4)).astype(np.uint8)


# --- aihwkit PCMLikeNoiseModel constants (algorithms.md 1.3-1.5) ------------------------------
def test_pcm_programming_sigma_table():
    g = np.array([0.0, 0.1, 0.5, 1.0]) * 25.0
    np.testing.assert_allclose(noise.pcm_sigma_prog(g), [0.2635, 0.4483, 0.9527, 1.0554],
                               atol=1e-4)


def test_pcm_drift_exponent_table():
    g = np.array([1.0, 0.5, 0.1, 0.01]) * 25.0
    mu, sd = noise.pcm_nu_stats(g)
    np.testing.assert_allclose(mu, [0.049, 0.049, 0.0601, 0.0958], atol=1e-4)
    np.testing.assert_allclose(sd, [0.008, 0.008, 0.0229, 0.045], atol=1e-4)


def test_pcm_read_noise_and_drift_tables():
    ts = [noise.parse_time(t) for t in ("1s", "1h", "1d", "1y")]
    np.testing.assert_allclose([noise.pcm_read_noise_factor(t) for t in ts],
                               [4.19, 4.76, 5.09, 5.64], atol=5e-3)
    np.testing.assert_allclose([float(noise.pcm_drift_factor(0.05, t)) for t in ts[1:]],
                               [0.771, 0.658, 0.490], atol=1e-3)
    assert float(noise.pcm_drift_factor(0.05, 0.0)) == 1.0
    np.testing.assert_allclose(noise.pcm_q_s(np.array([25.0, 1e-9])), [0.0088, 0.2])
    assert (noise.PCM_G_MAX, noise.PCM_T0, noise.PCM_T_READ) == (25.0, 20.0, 250e-9)
    assert noise.PCM_PROG_COEFF == (0.26348, 1.9650, -1.1731)


def test_pcm_device_statistics():
    """Devices at g_max: prog std 1.0554 uS, nu ~ |0.049 + 0.008 N|; zero devices stay >= 0."""
    m = noise.PCM(3600.0)
    w = np.ones(200_000)
    rng = np.random.default_rng(0)
    w_prog, (nu_p, nu_m) = m.program(w, rng)
    g_prog = w_prog * 25.0 + 0.0          # s = 25 / max|w|, g- programmed to 0
    assert abs(np.std(g_prog) - 1.0554) < 0.02 and abs(np.mean(nu_p) - 0.049) < 1e-3
    assert abs(np.std(nu_p) - 0.008) < 5e-4
    assert abs(np.mean(nu_m) - 0.1) < 2e-3    # g_rel clipped at 1e-7: mu_nu = 0.1, sigma 0.045
    quiet = noise.PCM(3600.0, prog_noise_scale=0, read_noise_scale=0, drift_scale=0)
    v = np.random.default_rng(1).normal(0, 30, 500)
    wp, nus = quiet.program(v, rng)
    np.testing.assert_allclose(quiet.drift(wp, nus, rng), v, rtol=1e-12, atol=1e-12)


def test_pcm_instance_gdc_restores_mean_and_is_analog(mlp):
    p = payloads_for(mlp)
    inst = noise.sample(mlp, noise.PCM(noise.parse_time("1y")), seed=3, index=0)
    assert inst.analog and inst.wrow.dtype == np.float64
    nogdc = noise.sample(mlp, noise.PCM(noise.parse_time("1y"), gdc=False), seed=3, index=0)
    lay = noise._layout(mlp)
    for c in range(mlp.n_cores):
        blk, raw = lay.block(inst.wrow, c), lay.block(nogdc.wrow, c)
        assert np.mean(np.abs(raw)) < np.mean(np.abs(blk))     # drift shrinks, GDC restores
    r = run_payloads(mlp, p, instance=inst)
    assert r.scores.shape == (12, 6)
    # programming draws are shared over time: the same chip at 1h and 1d has equal W_prog,
    # so with read noise and drift off the two times coincide
    q = noise.PCM(3600.0, read_noise_scale=0, drift_scale=0)
    a = noise.sample(mlp, q, 0, 5).wrow
    b = noise.sample(mlp, noise.PCM(86400.0, read_noise_scale=0, drift_scale=0), 0, 5).wrow
    np.testing.assert_array_equal(a, b)


# --- times, seeds ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,sec", [("1s", 1), ("10m", 600), ("1h", 3600), ("1d", 86400),
                                      ("1y", 365 * 86400), ("2w", 14 * 86400), ("250ms", .25),
                                      ("3600", 3600), ("1.5h", 5400), ("0", 0)])
def test_parse_time(text, sec):
    assert noise.parse_time(text) == pytest.approx(sec)


@pytest.mark.parametrize("bad", ["1x", "h", "-1s", "", "1 hour"])
def test_parse_time_rejects(bad):
    with pytest.raises(SimulationError):
        noise.parse_time(bad)


def test_format_time():
    assert [noise.format_time(noise.parse_time(t)) for t in ("1s", "1h", "1d", "1y", "90s")] \
        == ["1s", "1h", "1d", "1y", "90s"]


def test_same_seed_same_instance_and_common_random_numbers(mlp):
    m = noise.Mismatch(0.2, domain="analog")
    a, b = noise.sample(mlp, m, 7, 3), noise.sample(mlp, m, 7, 3)
    np.testing.assert_array_equal(a.wrow, b.wrow)
    assert not np.array_equal(a.wrow, noise.sample(mlp, m, 7, 4).wrow)
    assert not np.array_equal(a.wrow, noise.sample(mlp, m, 8, 3).wrow)
    w = noise.clean_instance(mlp).wrow.astype(np.float64)
    c = noise.sample(mlp, noise.Mismatch(0.4, domain="analog"), 7, 3)
    np.testing.assert_allclose(c.wrow - w, 2 * (a.wrow - w), rtol=1e-12, atol=1e-12)
    f1 = noise.sample(mlp, noise.BitFlip(1e-2), 0, 0).wrow != noise.clean_instance(mlp).wrow
    f2 = noise.sample(mlp, noise.BitFlip(5e-2), 0, 0).wrow != noise.clean_instance(mlp).wrow
    assert f1.sum() > 0 and np.all(f2[f1])                 # flipped cells are nested in p


# --- the instance contract and the kernels ---------------------------------------------------
def test_clean_and_zero_noise_instances_are_bit_exact(conv):
    p = payloads_for(conv)
    ref = run_payloads(conv, p, record=True)
    for inst in (noise.clean_instance(conv), noise.sample(conv, noise.Mismatch(0.0), 0, 0),
                 noise.sample(conv, noise.BitFlip(0.0, registers=True), 0, 0),
                 noise.sample(conv, noise.DeadCores(0), 0, 0)):
        r = run_payloads(conv, p, record=True, instance=inst)
        assert not inst.analog
        np.testing.assert_array_equal(r.counts_all, ref.counts_all)
        np.testing.assert_array_equal(r.v_all, ref.v_all)
        np.testing.assert_array_equal(r.scores, ref.scores)
    np.testing.assert_array_equal(noise.clean_instance(conv).wrow, dense_rows(conv)[1])
    np.testing.assert_array_equal(tables(conv).wrow, dense_rows(conv)[1])


def test_analog_path_equals_integer_path_on_integer_weights():
    """IF neurons, integer weights as float64: every sum is exact, so float == integer."""
    img = image_of(make_mlp((20, 30, 5), seed=4), bits=8)
    p = payloads_for(img, graded=True)
    ref = run_payloads(img, p, record=True)
    inst = noise.ChipInstance(noise.clean_instance(img).wrow.astype(np.float64), {}, True, "f")
    r = run_payloads(img, p, record=True, instance=inst)
    np.testing.assert_array_equal(r.counts_all, ref.counts_all)
    np.testing.assert_array_equal(r.v_all, ref.v_all.astype(np.float64))
    np.testing.assert_array_equal(r.scores, ref.scores)
    np.testing.assert_array_equal(r.stats, ref.stats)


def _float_reference(img, inst, payloads):
    """Layer-synchronous numpy model of an analog instance (float semantics of kernels.py)."""
    from runtime.lab.twin import rows_to_csr
    g = img.unmap()
    mats = rows_to_csr(img, inst.wrow)
    vlo, vhi = (float(v) for v in img.spec.membrane_range)
    T, B, _ = payloads.shape
    R = {}
    for li, name in enumerate(g.layers):
        glob = img.layer_neurons(li)
        R[name] = {k: np.asarray(inst.reg(img, k), np.float64)[glob] for k in (
            "th_pos", "th_neg", "v_reset", "v_init", "bias", "leak", "shift", "reset_mode",
            "neg_mode", "leak_mode")}
    v = {n: np.broadcast_to(R[n]["v_init"], (B, g.node(n).n)).copy() for n in g.layers}
    cnt = {n: np.zeros((B, g.node(n).n)) for n in g.layers}
    for t in range(T):
        act = {g.input_name: payloads[t].astype(np.float64)}
        for n in g.layers:
            r = R[n]
            cur = sum(np.asarray((mats[(n, s)].T @ act[s].T).T) for s, _ in g.node(n).inputs)
            lm = r["leak_mode"]
            x = v[n]
            x = np.where(lm == 1, np.clip(x + r["leak"], vlo, vhi), x)
            x = np.where(lm == 2, x - x * np.exp2(-r["shift"]), x)
            x = np.where(lm == 3, x - x * (r["leak"] / 4096.0), x)
            x = np.clip(x + cur + r["bias"], vlo, vhi)
            s = x >= r["th_pos"]
            x = np.where(s & (r["reset_mode"] == 0), r["v_reset"], x)
            x = np.where(s & (r["reset_mode"] == 1), x - r["th_pos"], x)
            x = np.where((r["neg_mode"] == 1) & (x < -r["th_neg"]), -r["th_neg"], x)
            v[n], act[n] = x, s.astype(np.float64)
            cnt[n] += s
    return cnt, v


@given(net=random_net(), z=st.sampled_from([0.05, 0.3]),
       on=st.sampled_from([("weights",), ("weights", "thresholds", "leak")]))
@settings(max_examples=12, deadline=None)
def test_float_kernel_matches_numpy_reference(net, z, on):
    g, seed = net
    img = image_of(g, bits=4)
    p = payloads_for(img, T=5, B=6, seed=seed)
    inst = noise.sample(img, noise.Mismatch(z, on, "analog"), seed, 0)
    r = run_payloads(img, p, record=True, instance=inst, workers=2)
    cnt, v = _float_reference(img, inst, p)
    for li, L in enumerate(img.layers):
        glob = img.layer_neurons(li)
        np.testing.assert_array_equal(r.counts_all[:, glob], cnt[L["name"]])
        np.testing.assert_allclose(r.v_all[:, glob], v[L["name"]], rtol=1e-9, atol=1e-6)


def test_instance_validation(mlp):
    p = payloads_for(mlp)
    w = noise.clean_instance(mlp).wrow
    with pytest.raises(SimulationError, match="shape"):
        run_payloads(mlp, p, instance=noise.ChipInstance(w[:-1], {}, False, "x"))
    with pytest.raises(SimulationError, match="unknown registers"):
        run_payloads(mlp, p, instance=noise.ChipInstance(w, {"vth": np.zeros(3)}, False, "x"))
    with pytest.raises(SimulationError, match="int8"):
        run_payloads(mlp, p, instance=noise.ChipInstance(w.astype(np.float64) + .5, {}, False,
                                                         "x"))
    with pytest.raises(SimulationError, match="not both"):
        run_payloads(mlp, p, instance=noise.clean_instance(mlp), weights=w)


# --- the models ------------------------------------------------------------------------------
def test_digital_mismatch_requantizes_and_saturates(conv):
    lay = noise._layout(conv)
    inst = noise.sample(conv, noise.Mismatch(3.0, ("weights", "thresholds", "leak")), 0, 1)
    assert inst.wrow.dtype == np.int8 and not inst.analog
    assert np.all(inst.wrow >= lay.wlo) and np.all(inst.wrow <= lay.whi)
    assert np.any(inst.wrow == lay.whi) and np.any(inst.wrow == lay.wlo)
    th = inst.regs["th_pos"]
    assert th.dtype == np.int64 and th.min() >= 1 and th.max() <= conv.spec.threshold_max
    sh = inst.regs["shift"]
    assert sh.dtype == np.int64 and sh.min() >= 0 and sh.max() < 16
    mult = lay.regs.leak_mode == 3
    if mult.any():
        assert inst.regs["leak"][mult].min() >= 0 and inst.regs["leak"][mult].max() <= 4095
    run_payloads(conv, payloads_for(conv), instance=inst)     # runs on the integer kernel


def test_analog_leak_mismatch_is_real_valued(mlp):
    inst = noise.sample(mlp, noise.Mismatch(0.1, ("leak",), "analog"), 0, 0)
    lm = noise._layout(mlp).regs.leak_mode
    assert (lm == 2).any() and inst.analog
    k = inst.regs["shift"][lm == 2]
    assert np.any(k != np.round(k))


def test_mismatch_rejects_bad_options():
    with pytest.raises(SimulationError, match="unknown parameter kind 'gain'"):
        noise.Mismatch(0.1, ("gain",))
    with pytest.raises(SimulationError, match="granularity"):
        noise.Mismatch(0.1, granularity="device")
    with pytest.raises(SimulationError, match="domain"):
        noise.Mismatch(0.1, domain="quantum")


def test_bitflip_all_bits_inverts_the_stored_pattern(conv):
    lay = noise._layout(conv)
    w = noise.clean_instance(conv).wrow.astype(np.int64)
    inst = noise.sample(conv, noise.BitFlip(1.0, registers=True), 0, 0)
    wide = lay.wlo < 0
    np.testing.assert_array_equal(inst.wrow[wide], (-w - 1)[wide])      # two's complement ~w
    np.testing.assert_array_equal(inst.wrow[~wide], (1 - w)[~wide])
    tb = conv.spec.threshold_bits
    np.testing.assert_array_equal(inst.regs["th_pos"], lay.regs.th_pos ^ ((1 << tb) - 1))
    np.testing.assert_array_equal(inst.regs["v_init"], -lay.regs.v_init - 1)
    np.testing.assert_array_equal(inst.regs["reset_mode"], lay.regs.reset_mode ^ 3)


def test_bitflip_rate_matches_p(conv):
    """Fraction of flipped physical bits in the used columns is about p."""
    lay = noise._layout(conv)
    p = 0.05
    inst = noise.sample(conv, noise.BitFlip(p), 0, 0)
    flipped = total = 0
    for c in range(conv.n_cores):
        a = noise._physical_bits(conv, noise.clean_instance(conv), c)
        b = noise._physical_bits(conv, inst, c)
        cols = int(lay.n_per[c] * lay.w[c])
        flipped += int((a[:, :cols] != b[:, :cols]).sum())
        total += a[:, :cols].size
    assert abs(flipped / total - p) < 4 * math.sqrt(p * (1 - p) / total)


def test_bitflip_needs_a_digital_instance(mlp):
    with pytest.raises(SimulationError, match="digital"):
        noise.sample(mlp, [noise.PCM(3600.0), noise.BitFlip(1e-3)], 0, 0)


def test_stuck_at(conv):
    lay = noise._layout(conv)
    zero = noise.sample(conv, noise.StuckAt(1.0, 0), 0, 0)
    assert np.all(zero.wrow == 0)
    one = noise.sample(conv, noise.StuckAt(1.0, 1), 0, 0)
    np.testing.assert_array_equal(one.wrow, np.where(lay.wlo < 0, -1, 1))
    half = noise.sample(conv, noise.StuckAt(1.0), 0, 0)
    bits = [noise._physical_bits(conv, half, c)[:, :int(lay.n_per[c] * lay.w[c])]
            for c in range(conv.n_cores)]
    assert abs(np.concatenate([b.ravel() for b in bits]).mean() - 0.5) < 0.01


def test_dead_cores(conv):
    p = payloads_for(conv)
    inst = noise.sample(conv, noise.DeadCores(conv.n_cores), 0, 0)
    r = run_payloads(conv, p, instance=inst, record=True)
    assert r.counts_all.sum() == 0 and np.all(r.scores == 0)
    th_max = conv.spec.threshold_max
    core = noise._layout(conv).core_of_neuron

    def dead(k):
        inst = noise.sample(conv, noise.DeadCores(k), 0, 0)
        return set(core[inst.regs["th_pos"] == th_max].tolist())

    assert len(dead(1)) == 1 and dead(1) <= dead(2) and len(dead(2)) == 2   # nested
    with pytest.raises(SimulationError):
        noise.sample(conv, noise.DeadCores(conv.n_cores + 1), 0, 0)


def test_composition_applies_in_order(mlp):
    inst = noise.sample(mlp, [noise.Mismatch(0.1), noise.BitFlip(1e-3), noise.PCM(3600.0)], 0, 0)
    assert inst.analog and "mismatch" in inst.label and "pcm 1h" in inst.label
    run_payloads(mlp, payloads_for(mlp), instance=inst)


# --- sweeps and the CLI ----------------------------------------------------------------------
def test_sweep_rows_are_deterministic(mlp):
    from runtime.lab.sweep import sweep
    p = payloads_for(mlp, B=20)
    y = run_payloads(mlp, p).predictions
    a = sweep(mlp, p, y, "mismatch", [0.0, 0.5], samples=3, seed=1)
    b = sweep(mlp, p, y, "mismatch", [0.0, 0.5], samples=3, seed=1)
    assert a == b
    assert set(a[0]) >= {"kind", "level", "mean", "std", "min", "n"} and a[0]["n"] == 3
    assert a[0]["mean"] == 1.0 and a[0]["std"] == 0.0
    assert a[1]["min"] <= a[1]["mean"] <= a[1]["max"]
    rows = sweep(mlp, p, y, "pcm", [3600.0, 86400.0], samples=2, seed=1)
    assert [r["label"] for r in rows] == ["1h", "1d"]


def test_worst_case_hurts_at_least_as_much_as_random(mlp):
    from runtime.lab.sweep import sweep, worst_case
    p = payloads_for(mlp, B=40, seed=3)
    y = run_payloads(mlp, p).predictions
    z = 0.3
    wc = worst_case(mlp, p, y, z, steps=5, seed=0, keep_instance=True)
    rnd = sweep(mlp, p, y, "mismatch", [z], samples=10, seed=0, domain="analog")[0]
    assert wc["accuracy"] <= rnd["mean"]
    assert wc["accuracy"] < 1.0
    w = noise.clean_instance(mlp).wrow.astype(np.float64)
    adv = wc["instance"].wrow
    assert np.all(np.abs(adv - w) <= z * np.abs(w) + 1e-9)    # inside the box


def test_landscape(mlp):
    from runtime.lab.sweep import landscape
    p = payloads_for(mlp, B=20)
    y = run_payloads(mlp, p).predictions
    ls = landscape(mlp, p, y, repeats=2, alphas=[-1, -0.5, 0.5, 1])
    i0 = ls["alphas"].index(0.0)
    assert ls["loss_mean"][i0] == pytest.approx(ls["loss_clean"])
    assert ls["accuracy_mean"][i0] == 1.0
    assert math.isfinite(ls["sharpness"]) and math.isfinite(ls["curvature"])


@pytest.fixture(scope="module")
def chip_file(tmp_path_factory):
    prog = compile_model(make_mlp((64, 24, 10), seed=2), PICORE64, bits=4)
    path = tmp_path_factory.mktemp("noise") / "chip.bin"
    prog.write(path)
    return str(path)


def _snnrun(args):
    from click.testing import CliRunner

    from runtime.cli import main_run
    r = CliRunner().invoke(main_run, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_cli_json_contract(chip_file):
    out = _snnrun([chip_file, "--data", "digits", "--limit", "30", "--mismatch", "0.1,0.5",
                   "--samples", "4", "--seed", "0", "--json"])
    d = json.loads(out)
    assert {"level", "mean", "std", "min", "n"} <= set(d["sweep"][0])
    assert [r["level"] for r in d["sweep"]] == [0.1, 0.5] and d["sweep"][0]["n"] == 4
    assert "clean_accuracy" in d
    again = json.loads(_snnrun([chip_file, "--data", "digits", "--limit", "30", "--mismatch",
                                "0.1,0.5", "--samples", "4", "--seed", "0", "--json"]))
    assert again["sweep"] == d["sweep"]


def test_cli_several_kinds_table_and_plots(chip_file, tmp_path):
    out = _snnrun([chip_file, "--data", "digits", "--limit", "20", "--pcm-time", "1h,1d",
                   "--bitflip", "1e-3", "--stuck-at", "1e-3", "--dead-cores", "1",
                   "--samples", "2", "--report", str(tmp_path / "rep"), "--plots"])
    assert "clean accuracy" in out and "PCM inference time" in out and "1d" in out
    for f in ("robustness.json", "robustness.md", "sweep_pcm.png", "sweep_bitflip.png"):
        assert (tmp_path / "rep" / f).exists(), f
    d = json.loads((tmp_path / "rep" / "robustness.json").read_text())
    assert {r["kind"] for r in d["sweep"]} == {"pcm", "bitflip", "stuck-at", "dead-cores"}


# --- granularity and parameter kinds (compiler/params.py, issue 15) -------------------------
def test_parameter_granularity_cells_holding_one_parameter_share_one_draw(conv):
    cp = noise.cell_params(conv)
    w = noise.clean_instance(conv).wrow.astype(np.float64)
    assert cp.shape == w.shape and np.all(w[cp < 0] == 0)
    np.testing.assert_array_equal(conv.param_values()[cp[cp >= 0]], w[cp >= 0])
    m = noise.Mismatch(0.3, ("weights",), "analog", granularity="parameter")
    a = noise.sample(conv, m, 5, 2).wrow
    c = noise.sample(conv, noise.Mismatch(0.3, ("weights",), "analog"), 5, 2).wrow
    np.testing.assert_array_equal(a, noise.sample(conv, m, 5, 2).wrow)     # deterministic
    ids, counts = np.unique(cp[(cp >= 0) & (w != 0)], return_counts=True)
    assert counts.max() >= 10                  # conv kernel elements sit on many cells
    shared = 0
    for p in ids[counts > 1]:
        cells = np.flatnonzero(cp == p)
        assert np.unique(a[cells]).size == 1   # one draw per trained parameter
        shared += np.unique(c[cells]).size > 1     # per cell: independent copies
    assert shared == int((counts > 1).sum())
    # the factor (1 + zeta N) differs between parameters
    assert np.unique(np.round(a[cp >= 0][w[cp >= 0] != 0] / w[cp >= 0][w[cp >= 0] != 0],
                              12)).size > 10


def test_bias_moves_only_when_selected(conv):
    b0 = noise._layout(conv).regs.bias.astype(np.float64)
    assert np.count_nonzero(b0) > 5
    w_only = noise.sample(conv, noise.Mismatch(0.3, ("weights",), "analog"), 0, 0)
    assert "bias" not in w_only.regs
    for gran in ("cell", "parameter"):
        inst = noise.sample(conv, noise.Mismatch(0.3, ("bias",), "analog", gran), 0, 0)
        np.testing.assert_array_equal(inst.wrow, noise.clean_instance(conv).wrow)
        b = inst.regs["bias"]
        nz = b0 != 0
        assert np.all(b[~nz] == 0) and np.all(b[nz] != b0[nz])
        grp = noise.register_groups(conv)
        ratios = {}
        for g_, r in zip(grp[nz], b[nz] / b0[nz]):
            ratios.setdefault(int(g_), set()).add(round(float(r), 12))
        multi = [v for v in ratios.values()]
        if gran == "parameter":                  # one draw per (layer, channel)
            assert all(len(v) == 1 for v in multi)
        else:
            assert any(len(v) > 1 for v in multi)
    d = noise.sample(conv, noise.Mismatch(2.0, ("bias",)), 0, 0).regs["bias"]
    lo, hi = conv.spec.bias_range
    assert d.dtype == np.int64 and d.min() >= lo and d.max() <= hi
    # the default parameter set (compiler.params.DEFAULT_PARAMS) includes the biases
    assert "bias" in noise.sample(conv, noise.Mismatch(0.3), 0, 0).regs


def test_parameter_granularity_needs_descriptors():
    prog = compile_model(make_mlp((8, 6, 3), seed=2), PICORE64, bits=4)
    secs = {k: v for k, v in prog.sections().items() if not k.startswith("op_")}
    old = from_sections(secs, prog.spec.digest())
    assert not old.has_ops
    with pytest.raises(SimulationError, match="descriptors"):
        noise.sample(old, noise.Mismatch(0.1, granularity="parameter"), 0, 0)
    noise.sample(old, noise.Mismatch(0.1), 0, 0)           # per cell needs no map


def test_old_target_spellings_are_aliases():
    assert noise.Mismatch(0.1, ("weights", "thresholds", "leaks")).on == \
        ("weights", "threshold", "leak")
    assert noise.Mismatch(0.1, "all").on == ("weights", "bias", "threshold", "leak")


def test_worst_case_per_parameter_moves_shared_values_and_biases(conv):
    from runtime.lab.sweep import worst_case
    p = payloads_for(conv, B=8, seed=2)
    y = run_payloads(conv, p).predictions
    z = 0.2
    wc = worst_case(conv, p, y, z, steps=2, seed=0, keep_instance=True,
                    params=("weights", "bias"), granularity="parameter")
    assert wc["params"] == ["weights", "bias"] and wc["granularity"] == "parameter"
    inst = wc["instance"]
    w = noise.clean_instance(conv).wrow.astype(np.float64)
    cp = noise.cell_params(conv)
    nz = (cp >= 0) & (w != 0)
    assert np.all(np.abs(inst.wrow - w) <= z * np.abs(w) + 1e-9)     # projected into the box
    ratio = inst.wrow[nz] / w[nz]
    for pid in np.unique(cp[nz])[:200]:            # one perturbation per trained parameter
        assert np.ptp(ratio[cp[nz] == pid]) < 1e-12
    b0 = noise._layout(conv).regs.bias.astype(np.float64)
    assert np.any(inst.regs["bias"][b0 != 0] != b0[b0 != 0])          # biases moved
    assert np.all(np.abs(inst.regs["bias"] - b0) <= z * np.abs(b0) + 1e-9)
    free = worst_case(conv, p, y, z, steps=2, seed=0, keep_instance=True, params=("weights",),
                      project=False)
    assert not free["project"] and "bias" not in free["instance"].regs


def test_cli_contract_granularity_parameter(chip_file):
    d = json.loads(_snnrun([chip_file, "--data", "digits", "--limit", "20", "--mismatch", "0.5",
                            "--mismatch-granularity", "parameter", "--samples", "2", "--json"]))
    row = d["sweep"][0]
    assert row["granularity"] == "parameter" and row["params"] == ["weights", "bias"]
    assert d["mismatch"] == {"granularity": "parameter", "params": ["weights", "bias"],
                             "domain": "digital"}
    old = json.loads(_snnrun([chip_file, "--data", "digits", "--limit", "20", "--mismatch", "0.5",
                              "--mismatch-on", "weights,thresholds", "--samples", "2", "--json"]))
    assert old["sweep"][0]["params"] == ["weights", "threshold"]
    assert old["sweep"][0]["granularity"] == "cell"
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", "from runtime.cli import main; main()", chip_file,
                        "--limit", "5",
                        "--mismatch", "0.1", "--mismatch-params", "weights,gain"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "unknown parameter kind 'gain'" in r.stderr
    assert "Traceback" not in r.stderr


def test_presets_set_the_reference_values(chip_file, monkeypatch):
    import runtime.cli.attack as cli_attack
    import runtime.cli.noise as cli_noise
    from compiler.params import PRESETS
    seen = {}

    def grab(ctx):
        seen.clear()
        seen.update(ctx.params)
    monkeypatch.setattr(cli_noise, "main_noise", grab)
    monkeypatch.setattr(cli_attack, "main_attack", grab)
    _snnrun([chip_file, "--limit", "5", "--mismatch", "0.5", "--preset", "buechel"])
    assert seen["mismatch_granularity"] == "parameter" and seen["mismatch_domain"] == "analog"
    assert seen["mismatch_params"] == "weights,bias" and seen["worst_case_projection"] is False
    _snnrun([chip_file, "--limit", "5", "--attack", "pgd", "--preset", "torchattacks"])
    assert seen["alpha"] == pytest.approx(2 / 255) and seen["steps"] == 10
    _snnrun([chip_file, "--limit", "5", "--attack", "sda", "--preset", "pdsg"])
    assert seen["sda_iters"] == 500 and seen["surrogate"] == "pdsg"
    # an explicit option wins over the preset
    _snnrun([chip_file, "--limit", "5", "--attack", "pgd", "--preset", "torchattacks",
             "--alpha", "0.01"])
    assert seen["alpha"] == 0.01
    _snnrun([chip_file, "--limit", "5", "--mismatch", "0.5", "--preset", "buechel",
             "--mismatch-granularity", "cell"])
    assert seen["mismatch_granularity"] == "cell"
    assert set(PRESETS) == {"buechel", "torchattacks", "pdsg"}


def test_docs_list_every_reference_default():
    from pathlib import Path

    from compiler.params import defaults_table
    doc = (Path(__file__).resolve().parents[2] / "docs" / "robustness.md").read_text()
    assert defaults_table() in doc, "docs/robustness.md: regenerate the Defaults table"
