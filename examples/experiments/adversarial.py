"""Adversarial inputs on the chip: weight bits x input encoding x FGSM strength, and a ranking of
hardware-ish design choices by robustness impact (seed 000, Tables 1-2 form).

    .venv/bin/python examples/experiments/adversarial.py          # ~10-20 min on 2 idle cores
    .venv/bin/python examples/experiments/adversarial.py --quick

Models: the digits SNN trained (BPTT, T = 8) with each input encoding -- direct (analog input
current), rate (Bernoulli spikes) and latency (one spike per pixel: the sparse code) -- plus a
direct-coded model with every hidden threshold raised to 2 ("threshold increase"). Each is
compiled at 8 bits (post-training quantization, lossless here) and, after a short QAT fine-tune
with the same encoding (frontends.training.qat; ``--ptq`` compiles the float model instead), at 4
and 2 bits. Every model is attacked with FGSM (white box on the deployed integer weights through
runtime.lab.twin, rate with EOT over 2 encoder draws), every adversarial example evaluated on the
chip runtime (runtime.lab.attacks.attack_sweep).

Table 1: chip accuracy per (encoding, bits) and eps. Table 2: each single change against the
baseline (direct, 8-bit, threshold 1), ranked by the change of *relative* robustness (mean over
eps > 0 of adversarial / clean accuracy; larger = more robust), with the changes of clean
accuracy and of mean adversarial accuracy beside it.
Output: docs/experiments/adversarial.{md,png,json}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from frontends.training.qat import Quantizer  # noqa: E402
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402

VARIANTS = {  # name: (encoding, hidden threshold)
    "direct": ("direct", 1.0),
    "rate": ("rate", 1.0),
    "latency": ("latency", 1.0),
    "direct-th2": ("direct", 2.0),
}


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--bits", default="8,4,2")
    p.add_argument("--eps", default="0,2,4,8,16,32", help="FGSM eps in 1/255 units")
    p.add_argument("--timesteps", type=int, default=8)
    p.add_argument("--limit", type=int, default=200, help="test images attacked")
    p.add_argument("--eot", type=int, default=2, help="encoder draws per gradient (rate)")
    p.add_argument("--qat-epochs", type=int, default=5, help="QAT fine-tuning for 4/2 bits")
    p.add_argument("--ptq", action="store_true", help="4/2 bits without QAT")
    a = p.parse_args(argv)
    if C.replot(a, "adversarial"):
        return 0
    if a.quick:
        a.epochs, a.bits, a.eps, a.limit, a.qat_epochs = 2, "8,2", "0,8", 40, 1
    C.setup(a)
    from runtime.lab.attacks import SweepConfig, attack_sweep

    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    xte, yte = xte[:a.limit], yte[:a.limit]
    T = a.timesteps
    bits_list = [int(b) for b in a.bits.split(",")]
    eps = tuple(float(e) / 255 for e in a.eps.split(","))
    results = {}
    for name, (enc, th) in VARIANTS.items():
        torch.manual_seed(a.seed)
        model = C.build_snn(threshold=th)
        cfg = TrainConfig(epochs=a.epochs, timesteps=T, batch_size=64, lr=3e-3, seed=a.seed,
                          progress=False, device=a.device, threads=a.threads)
        encoder = None if enc == "direct" else C.torch_encoder(enc, a.seed)
        Trainer(model, cfg, encoder=encoder).fit(xtr, ytr)
        C.log(f"trained {name} ({clock():.0f} s)")
        init = {k: v.clone() for k, v in model.state_dict().items()}
        for bits in ([8] if name == "direct-th2" else bits_list):
            deployed, how = model, "PTQ"
            if bits < 8 and not a.ptq:
                deployed = C.build_snn(threshold=th)
                deployed.load_state_dict(init)
                q = Quantizer(deployed, C.INPUT_SHAPE, bits=bits)
                qcfg = TrainConfig(epochs=a.qat_epochs, timesteps=T, batch_size=64, lr=1e-3,
                                   seed=a.seed, progress=False, device=a.device, threads=a.threads)
                enc_q = None if enc == "direct" else C.torch_encoder(enc, a.seed + bits)
                Trainer(deployed, qcfg, encoder=enc_q, quantizer=q).fit(xtr, ytr)
                how = f"QAT {a.qat_epochs} ep"
            _, image = C.compile_image(deployed, bits=bits, timesteps=T, encoding=enc)
            sc = SweepConfig(attack="fgsm", eps=eps, encoding=enc, T=T, eot=a.eot,
                             seed=a.seed, batch=100)
            out = attack_sweep(image, xte, yte, sc)
            results[f"{name}/{bits}"] = {
                "variant": name, "encoding": enc, "threshold": th, "bits": bits, "how": how,
                "clean": out["results"][0]["clean_accuracy"],
                "adv": {f"{r['eps_255']:g}": r["adv_accuracy"] for r in out["results"]},
                "spike_activity_change": {f"{r['eps_255']:g}": r["spike_activity_change"]
                                          for r in out["results"]}}
            C.log(f"  {name} {bits}-bit: " + ", ".join(
                f"{k}: {v:.3f}" for k, v in results[f'{name}/{bits}']['adv'].items())
                + f" ({clock():.0f} s)")
    _report(a, results, eps, clock())
    return 0


def _mean_adv(r: dict) -> float:
    vals = [v for k, v in r["adv"].items() if float(k) > 0]
    return float(np.mean(vals)) if vals else float("nan")


def _relative(r: dict) -> float:
    """Mean over eps > 0 of adversarial / clean accuracy (1 = the attack changes nothing)."""
    return _mean_adv(r) / r["clean"] if r["clean"] > 0 else float("nan")


def _report(a, results: dict, eps, seconds: float) -> None:
    keys = [f"{e * 255:g}" for e in eps]
    head = ["encoding", "hidden threshold", "bits", "deployed by"] + [f"eps={k}/255"
                                                                       for k in keys]
    rows = [[r["encoding"], f"{r['threshold']:g}", r["bits"], r["how"]]
            + [C.fmt_pct(r["adv"][k]) for k in keys] for r in results.values()]
    base = results.get("direct/8")
    changes = []
    cand = {"threshold increase (1 -> 2)": "direct-th2/8",
            "weight bits 8 -> 4": "direct/4", "weight bits 8 -> 2": "direct/2",
            "sparse coding (latency)": "latency/8", "rate coding": "rate/8"}
    for label, k in cand.items():
        if base is None or k not in results:
            continue
        r = results[k]
        changes.append({"change": label, "clean_delta": r["clean"] - base["clean"],
                        "robust_delta": _mean_adv(r) - _mean_adv(base),
                        "relative": _relative(r),
                        "relative_delta": _relative(r) - _relative(base),
                        "mean_adv": _mean_adv(r)})
    changes.sort(key=lambda c: -c["relative_delta"])
    rank = [[i + 1, c["change"], f"{c['relative']:.3f} ({c['relative_delta']:+.3f})",
             f"{100 * c['clean_delta']:+.1f}", f"{100 * c['robust_delta']:+.1f}",
             C.fmt_pct(c["mean_adv"])] for i, c in enumerate(changes)]
    base_rel = f"{_relative(base):.3f}" if base else "n/a"
    how = "post-training quantization" if a.ptq else f"{a.qat_epochs} QAT epochs"
    setup = (f"Digits SNN (examples/digits architecture), T = {a.timesteps}, trained "
             f"{a.epochs} epochs per encoding (Adam 3e-3, batch 64, BPTT; rate/latency through "
             f"the runtime's encoders with a straight-through gradient). 8 bits: post-training "
             f"quantization; 4 and 2 bits: {how}. FGSM (torchattacks convention, x in [0, 1]) "
             f"on the first {a.limit} test images, white-box on the deployed integer weights "
             f"(runtime.lab.twin, atan surrogate; rate: EOT {a.eot}); accuracy of the adversarial "
             f"images on the chip runtime. Seed {a.seed}; {seconds:.0f} s "
             f"({C.environment(a)})." + (" **--quick smoke run: not meaningful.**"
                                         if a.quick else ""))
    sections = [
        "## Table 1: chip accuracy (%) under FGSM",
        C.md_table(head, rows),
        "## Table 2: robustness impact of one change vs the baseline (direct, 8-bit, "
        "threshold 1)",
        f"Relative robustness = mean over eps > 0 of adv/clean accuracy (baseline {base_rel}); "
        "deltas of clean and mean adversarial accuracy in percentage points.",
        C.md_table(["rank", "change", "relative robustness (delta)", "clean delta",
                    "adv. delta", "mean adv. acc %"], rank),
        "Setup: " + setup,
        "Command: `.venv/bin/python examples/experiments/adversarial.py"
        + (" --quick" if a.quick else "") + "`",
        f"![adversarial](adversarial.{a.format})",
    ]
    C.write_doc(a.out, "adversarial", "Adversarial inputs: bits x encoding x FGSM", sections,
                {"setup": setup, "results": results, "ranking": changes})
    import figures
    figures.adversarial(json.loads((a.out / "adversarial.json").read_text()), a.out, a.format)


if __name__ == "__main__":
    sys.exit(main())
