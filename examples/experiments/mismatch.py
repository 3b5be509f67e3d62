"""Mismatch robustness (Buechel et al. ICLR 2022, Table 1 form) on the compiled chip.

    .venv/bin/python examples/experiments/mismatch.py            # ~10-20 min on 2 idle cores
    .venv/bin/python examples/experiments/mismatch.py --quick    # smoke run

The digits SNN (examples/digits) is pre-trained with plain BPTT, then fine-tuned with each
method from the same weights for the same number of epochs:

    standard             cross-entropy
    forward-noise        theta + |theta| 0.3 N in every forward (eta_train = 0.3)
    adversarial          Buechel: CE + beta KL(f(theta) || f(theta*)), theta* by N_steps sign-PGA
                         in |theta* - theta| <= zeta |theta| (zeta 0.1, beta 0.25, 3 steps)
    adversarial+fn       the same plus forward noise (the paper's "Forward + Beta")
    awp                  AWP (gamma 0.1, same PGA on CE)
    dropout              dropout p = 0.3 after each hidden IF layer

Each model is compiled to the chip (8-bit weights) and evaluated on the digits test set on
``samples`` chip instances per mismatch level and granularity (runtime.lab.sweep: relative
Gaussian mismatch x(1 + zeta N) on the deployed weights and biases (compiler.params
DEFAULT_PARAMS, the set the training objectives perturb), frozen per instance; the same instance
seed gives the same N at every level), with one N per crossbar cell ('cell') and with one N per
trained parameter shared by every cell that holds it ('parameter', Büchel et al.'s model).
Output: docs/experiments/mismatch.{md,png,json}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import torch  # noqa: E402

from frontends.training.robust import (  # noqa: E402
    AWP,
    AdversarialWeights,
    ForwardNoise,
    Standard,
)
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402

METHODS = ("standard", "forward-noise", "adversarial", "adversarial+fn", "awp", "dropout")


def objective(name: str, a):
    if name in ("standard", "dropout"):
        return Standard()
    if name == "forward-noise":
        return ForwardNoise(a.eta)
    if name == "adversarial":
        return AdversarialWeights(zeta=a.zeta, beta=a.beta, steps=a.attack_steps)
    if name == "adversarial+fn":
        return AdversarialWeights(zeta=a.zeta, beta=a.beta, steps=a.attack_steps, eta=a.eta)
    if name == "awp":
        return AWP(gamma=0.1, zeta=a.zeta, steps=a.attack_steps)
    raise SystemExit(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--pretrain-epochs", type=int, default=15)
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per method")
    p.add_argument("--samples", type=int, default=100, help="chip instances per level")
    p.add_argument("--levels", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--domain", default="analog", choices=("analog", "digital"))
    p.add_argument("--granularities", default="cell,parameter")
    p.add_argument("--params", default=None,
                   help="mismatch parameter kinds (default compiler.params.DEFAULT_PARAMS)")
    p.add_argument("--eta", type=float, default=0.3)
    p.add_argument("--zeta", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.25)
    p.add_argument("--attack-steps", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="test images (default: all 360)")
    a = p.parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    if C.replot(a, "mismatch"):
        return 0
    if a.quick:
        a.pretrain_epochs, a.epochs, a.samples, a.levels = 3, 1, 5, "0.1,0.4,0.7"
    C.setup(a)
    from compiler.encoding import encode
    from compiler.params import parse_params
    from runtime.lab import sweep
    a.params = list(parse_params(a.params))
    grans = [g.strip() for g in a.granularities.split(",") if g.strip()]

    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    if a.limit:
        xte, yte = xte[:a.limit], yte[:a.limit]
    a.n_test = len(yte)
    levels = [float(v) for v in a.levels.split(",")]
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    T = a.timesteps
    base_cfg = dict(timesteps=T, batch_size=64, lr=3e-3, weight_decay=1e-4, seed=a.seed,
                    progress=False, device=a.device, threads=a.threads)
    torch.manual_seed(a.seed)
    pre = C.build_snn()
    Trainer(pre, TrainConfig(epochs=a.pretrain_epochs, **base_cfg)).fit(xtr, ytr)
    init = {k: v.clone() for k, v in pre.state_dict().items()}
    C.log(f"pretrained {a.pretrain_epochs} epochs in {clock():.0f} s")
    payloads = encode("direct", xte.reshape(len(xte), -1), T)
    results = {}
    for name in methods:
        t0 = clock()
        torch.manual_seed(a.seed)
        model = C.build_snn(dropout=0.3 if name == "dropout" else 0.0)
        model.load_state_dict(init)
        cfg = TrainConfig(epochs=a.epochs, **dict(base_cfg, lr=1e-3))
        Trainer(model, cfg, method=objective(name, a)).fit(xtr, ytr)
        t_train = clock() - t0
        prog, image = C.compile_image(model, bits=a.bits, timesteps=T)
        clean = C.chip_accuracy(image, xte, yte, T)
        by = {}
        for g in grans:
            rows = sweep.sweep(image, payloads, yte, "mismatch", levels, samples=a.samples,
                               seed=a.seed, domain=a.domain, granularity=g, params=a.params)
            by[g] = [{k: r[k] for k in ("level", "mean", "std", "min", "n", "granularity",
                                        "params", "accuracies")} for r in rows]
            C.log(f"{name} [{g}]: clean {clean:.4f}, " + ", ".join(
                f"{r['level']:g}: {r['mean']:.3f}" for r in rows) + f" ({clock() - t0:.0f} s)")
        results[name] = {"clean": clean, "train_s": t_train, "eval_s": clock() - t0 - t_train,
                         "granularity": by}
    _report(a, results, levels, clock())
    return 0


GRAN_TITLES = {
    "cell": "one N per crossbar cell (independent device mismatch of every copy)",
    "parameter": "one N per trained parameter, shared by every cell holding it "
                 "(Büchel et al.'s model)",
}


def _report(a, results: dict, levels: list[float], seconds: float) -> None:
    head = ["method", "clean"] + [f"zeta={lv:g}" for lv in levels]
    grans = list(next(iter(results.values()))["granularity"])
    tables = []
    for g in grans:
        rows = []
        for name, r in results.items():
            cells = [name, C.fmt_pct(r["clean"])]
            for row in r["granularity"][g]:
                cells.append(f"{C.fmt_pct(row['mean'])} ± {C.fmt_pct(row['std'])} "
                             f"(min {C.fmt_pct(row['min'])})")
            rows.append(cells)
        tables += [f"**granularity = {g}**: {GRAN_TITLES.get(g, g)}", C.md_table(head, rows)]
    setup = (f"Digits SNN (examples/digits architecture, T = {a.timesteps}, direct encoding), "
             f"pre-trained {a.pretrain_epochs} epochs, then {a.epochs} fine-tuning epochs per "
             f"method (Adam lr 1e-3). Compiled with {a.bits}-bit weights; mismatch "
             f"x -> x(1 + zeta N) on the deployed {' and '.join(a.params)} "
             f"({a.domain} domain, runtime.lab.noise.Mismatch, "
             f"`--mismatch-params {','.join(a.params)}`), {a.samples} chip instances per level "
             f"and granularity, {a.n_test} digits test images. Hyper-parameters: eta = {a.eta}, "
             f"zeta = {a.zeta}, beta = {a.beta}, N_steps = {a.attack_steps} (Büchel: 10), "
             f"dropout p = 0.3; the training objectives perturb the same parameter set "
             f"(compiler.params.DEFAULT_PARAMS). Seed {a.seed}. Total run time {seconds:.0f} s "
             f"({C.environment(a)})."
             + (" **--quick smoke run: not meaningful.**" if a.quick else ""))
    reduced = (a.pretrain_epochs, a.epochs, a.samples, len(levels)) != (15, 10, 100, 7)
    note = ("Reduced run (to fit about 10 minutes of CPU on the shared 2-core box): "
            f"{a.pretrain_epochs} pre-training and {a.epochs} fine-tuning epochs, {a.samples} "
            f"chip instances, {len(levels)} levels; the script's defaults are 15 + 10 epochs, "
            "100 instances and 7 levels.")
    sections = [
        "Test accuracy in % on the chip runtime: mean ± std (min) over chip instances "
        "(Buechel et al. 2022, Table 1 form), for both mismatch granularities "
        "(`snnrun --mismatch-granularity cell|parameter`). Büchel et al.'s Table 1 uses "
        "the per-parameter model.",
        *tables,
        *([note] if reduced and not a.quick else []),
        "Setup: " + setup,
        "Command: `.venv/bin/python examples/experiments/mismatch.py "
        + " ".join(a.argv) + "`",
        f"![mismatch](mismatch.{a.format})",
    ]
    C.write_doc(a.out, "mismatch", "Mismatch robustness on the chip", sections,
                {"setup": setup, "results": results})
    import figures
    figures.mismatch(json.loads((a.out / "mismatch.json").read_text()), a.out, a.format)


if __name__ == "__main__":
    sys.exit(main())
