"""ANN -> SNN conversion: latency/accuracy trade-off (ANN vs SNN at T = 2..64), ReLU vs QCFS.

    .venv/bin/python examples/experiments/conversion.py          # ~5 min on 2 idle cores
    .venv/bin/python examples/experiments/conversion.py --quick

Three ANNs with the digits architecture (conv 16 -> act -> avgpool -> conv 32 -> act -> avgpool
-> fc 10) are trained with the same recipe; only the activation differs:

    relu      ReLU; conversion thresholds = 99.9th percentile of the activations on 256
              calibration images (snnc's default)
    qcfs-L4   QCFS with L = 4 (Bu et al. 2022; trainable lambda, floor + shift 1/2)
    qcfs-L8   QCFS with L = 8

Each is exported to ONNX (QCFS as Clip(0, lambda): frontends.training.qcfs.export_ann), imported
by snnc's ANN importer and converted (Clip bound -> IF threshold, v_init = theta/2, soft reset;
frontends.onnx.ann), compiled at 8 bits and evaluated with the integer reference at every T
(``compiler.reference.run_int``, bit-exact with the chip runtime; one T per model is also run on
the runtime as a check). For comparison, a BPTT-trained SNN of the same architecture (the
digits example recipe, trained at T = 8) is compiled and run on the runtime at every T.
Output: docs/experiments/conversion.{md,png,json}.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from frontends.training.qcfs import QCFS, export_ann, thresholds  # noqa: E402
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402


def build_ann(act) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("act1", act()), ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("act2", act()), ("pool2", nn.AvgPool2d(2)),
        ("flat", nn.Flatten()), ("fc", nn.Linear(128, 10))]))


ACTS = {
    "relu": nn.ReLU,
    "qcfs-L4": lambda: QCFS(L=4, lam=2.0),
    "qcfs-L8": lambda: QCFS(L=8, lam=2.0),
}


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--snn-epochs", type=int, default=20)
    p.add_argument("--timesteps", default="2,4,8,16,32,64")
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--calib", type=int, default=256, help="calibration images (train split)")
    a = p.parse_args(argv)
    if C.replot(a, "conversion"):
        return 0
    if a.quick:
        a.epochs, a.snn_epochs, a.timesteps = 2, 1, "4,16"
    C.setup(a)
    from frontends.onnx import import_ann, report
    from runtime.engines.tick import run_payloads
    from runtime.image import from_sections

    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    Ts = [int(t) for t in a.timesteps.split(",")]
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="snnc-conv-"))
    for name, act in ACTS.items():
        torch.manual_seed(a.seed)
        model = build_ann(act)
        cfg = TrainConfig(epochs=a.epochs, batch_size=64, lr=3e-3, weight_decay=1e-4,
                          seed=a.seed, progress=False, device=a.device, threads=a.threads)
        tr = Trainer(model, cfg, ann=True)
        tr.fit(xtr, ytr)
        ann_acc_torch = tr.evaluate(xte, yte)
        path = export_ann(model, tmp / f"{name}.onnx", C.INPUT_SHAPE)
        ann = import_ann(path)
        rep = report(ann, xtr[:a.calib], xte, yte, timesteps=Ts, bits=a.bits)
        rows = rep["rows"]
        # one runtime check per model (largest T), bit-exact with the integer reference
        from compiler import compile_model
        from frontends.onnx import convert, snn_payloads
        conv = convert(ann, xtr[:a.calib], timesteps=Ts[-1], check=False)
        prog = compile_model(conv.graph, bits=a.bits, timesteps=Ts[-1])
        img = from_sections(prog.sections(), prog.spec.digest())
        rr = run_payloads(img, snn_payloads(xte, Ts[-1]).astype(np.uint8))
        results[name] = {"ann_accuracy": rep["ann_accuracy"], "ann_accuracy_torch": ann_acc_torch,
                         "lambda": thresholds(model),
                         "rows": [{k: r[k] for k in ("timesteps", "snn_float_accuracy",
                                                     "snn_int_accuracy")} for r in rows],
                         "runtime_check": {"timesteps": Ts[-1],
                                           "runtime_accuracy": rr.accuracy(yte),
                                           "int_accuracy": rows[-1]["snn_int_accuracy"]}}
        C.log(f"{name}: ANN {rep['ann_accuracy']:.4f}; " + ", ".join(
            f"T={r['timesteps']}: {r['snn_int_accuracy']:.3f}" for r in rows)
            + f" ({clock():.0f} s)")
    # BPTT-trained SNN (digits example recipe) evaluated at every T on the runtime
    torch.manual_seed(a.seed)
    snn = C.build_snn()
    scfg = TrainConfig(epochs=a.snn_epochs, timesteps=8, batch_size=32, lr=3e-3, seed=a.seed,
                       progress=False, device=a.device, threads=a.threads)
    Trainer(snn, scfg).fit(xtr, ytr)
    _, image = C.compile_image(snn, bits=a.bits, timesteps=8)
    results["bptt-snn (T=8)"] = {"rows": [{"timesteps": T, "snn_int_accuracy":
                                           C.chip_accuracy(image, xte, yte, T)} for T in Ts]}
    _report(a, results, Ts, clock())
    return 0


def _report(a, results, Ts, seconds) -> None:
    head = ["model", "ANN"] + [f"T={T}" for T in Ts]
    rows = []
    for name, r in results.items():
        rows.append([name, C.fmt_pct(r["ann_accuracy"]) if "ann_accuracy" in r else "-"]
                    + [C.fmt_pct(x["snn_int_accuracy"]) for x in r["rows"]])
    lam = "; ".join(f"{n}: " + ", ".join(f"{k} {v:.3g}" for k, v in r["lambda"].items())
                    for n, r in results.items() if r.get("lambda"))
    checks = "; ".join(f"{n}: T={r['runtime_check']['timesteps']} runtime "
                       f"{C.fmt_pct(r['runtime_check']['runtime_accuracy'], 2)} vs integer "
                       f"reference {C.fmt_pct(r['runtime_check']['int_accuracy'], 2)}"
                       for n, r in results.items() if "runtime_check" in r)
    setup = (f"Digits, ANNs trained {a.epochs} epochs (Adam 3e-3, batch 64, cosine), converted "
             f"with snnc (thresholds: Clip bound for QCFS, p99.9 of {a.calib} calibration "
             f"images for ReLU; v_init = theta/2), {a.bits}-bit weights, direct encoding, "
             f"360 test images; SNN accuracy from the integer reference (== chip). The BPTT "
             f"SNN was trained {a.snn_epochs} epochs at T = 8 and run on the chip runtime at "
             f"each T. Seed {a.seed}; {seconds:.0f} s ({C.environment(a)})."
             + (" **--quick smoke run: not meaningful.**" if a.quick else ""))
    sections = [
        "Test accuracy (%) of the ANN and of the converted SNN on the chip at T time steps.",
        C.md_table(head, rows),
        "Trained QCFS thresholds lambda: " + (lam or "-"),
        "Runtime checks: " + checks,
        "Setup: " + setup,
        "Command: `.venv/bin/python examples/experiments/conversion.py"
        + (" --quick" if a.quick else "") + "`",
        f"![conversion](conversion.{a.format})",
    ]
    md = a.out / "conversion.md"
    old = md.read_text() if md.exists() else ""
    keep = ""          # the phase II section written by conversion_phase2.py survives a rerun
    if "<!-- phase2:begin -->" in old and "<!-- phase2:end -->" in old:
        keep = old[old.index("<!-- phase2:begin -->"):old.index("<!-- phase2:end -->")
                   + len("<!-- phase2:end -->")]
    C.write_doc(a.out, "conversion", "ANN -> SNN conversion: latency vs accuracy", sections,
                {"setup": setup, "results": results})
    if keep:
        md.write_text(md.read_text().rstrip("\n") + "\n\n" + keep + "\n")
    import figures
    figures.conversion(json.loads((a.out / "conversion.json").read_text()), a.out, a.format)


if __name__ == "__main__":
    sys.exit(main())
