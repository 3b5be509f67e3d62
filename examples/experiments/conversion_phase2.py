"""Dual-phase conversion (phase II) on a deeper network: ReLU vs QCFS vs dual-phase per T.

    .venv/bin/python examples/experiments/conversion_phase2.py          # ~30 min on 2 busy cores
    .venv/bin/python examples/experiments/conversion_phase2.py --quick

Network: the seed VGG5 (conv-pool-conv-conv-pool-fc-fc) at reduced width (--width, default 8:
channels 8-16-16, fc 64) on the digits upsampled to 32x32 (bilinear). Two ANNs with the same
recipe, only the activation differs: ReLU, and QCFS with L = --L (Bu et al.; trainable lambda).
Each is exported to ONNX, imported, and converted by ``frontends.training.dual_phase`` methods:

    relu ANN -> relu       percentile p99.9 thresholds, v_init = 0 (classic rate conversion)
    qcfs ANN -> qcfs       Clip bound lambda -> threshold, v_init = theta/2 (phase I)
    qcfs ANN -> dual-phase phase I + phase II at each T (v_init calibration on the chip's
                           integers, layer-wise KL fine-tuning through the QAT quantizer,
                           recalibration, best checkpoint by calibration accuracy)

All SNN accuracies are on the chip's integer arithmetic (``compiler.reference.run_int``, 8-bit
weights, bit-exact with the runtime; the dual-phase image at T = 4 is also run on the
cycle-level runtime as a check). Error decomposition per T (accuracy, QCFS ANN): ANN ->
clipped ANN (clipping error) -> clipped + quantized to T levels (quantization error) -> float
SNN, phase I (residual-membrane error) -> 8-bit chip (weight quantization) -> dual-phase chip.
Output: docs/experiments/conversion_phase2.{json,png} and a section of conversion.md.
"""

from __future__ import annotations

import sys
import tempfile
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from frontends.training.qcfs import QCFS, export_ann  # noqa: E402
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402

BEGIN, END = "<!-- phase2:begin -->", "<!-- phase2:end -->"
SHAPE = (1, 32, 32)


def vgg5(act, w: int = 8) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, w, 3, padding=1)), ("act1", act()), ("pool1", nn.AvgPool2d(2)),
        ("conv2", nn.Conv2d(w, 2 * w, 3, padding=1)), ("act2", act()),
        ("conv3", nn.Conv2d(2 * w, 2 * w, 3, padding=1)), ("act3", act()),
        ("pool2", nn.AvgPool2d(2)), ("flat", nn.Flatten()),
        ("fc1", nn.Linear(2 * w * 64, 8 * w)), ("act4", act()), ("fc2", nn.Linear(8 * w, 10))]))


def up32(x: np.ndarray) -> np.ndarray:
    t = F.interpolate(torch.as_tensor(x), size=(32, 32), mode="bilinear", align_corners=False)
    return t.clamp(0, 1).numpy().astype(np.float32)


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--L", type=int, default=4, help="QCFS levels")
    p.add_argument("--timesteps", default="1,2,4,8,16,32,64")
    p.add_argument("--phase2-max-t", type=int, default=16,
                   help="run phase II for T up to this (cost grows with T)")
    p.add_argument("--phase2-epochs", type=int, default=2)
    p.add_argument("--calib", type=int, default=256, help="calibration images (train split)")
    a = p.parse_args(argv)
    if a.quick:
        a.epochs, a.timesteps, a.phase2_epochs, a.calib = 2, "2,4", 1, 64
    C.setup(a)
    from compiler import compile_model
    from frontends.onnx_io import import_ann
    from frontends.training import dual_phase as DP
    from runtime.engines.tick import run_payloads
    from runtime.image import from_sections

    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    xtr, xte = up32(xtr), up32(xte)
    xc, yc = xtr[:a.calib], ytr[:a.calib]
    Ts = [int(t) for t in a.timesteps.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="snnc-p2-"))
    opts = DP.Options()
    res: dict = {"curves": {}, "decomposition": {}, "phase2": {}, "ann": {}}

    def chip_acc(graph, T):
        prog = compile_model(graph, opts.spec, bits=opts.bits, timesteps=T,
                             stop_after="fold-thresholds")
        _, sc = DP.run_chip_int(prog, xte, T)
        return float(np.mean(np.argmax(sc, 1) == yte))

    anns = {}
    for name, act in (("relu", nn.ReLU), ("qcfs", lambda: QCFS(L=a.L, lam=2.0))):
        torch.manual_seed(a.seed)
        model = vgg5(act, a.width)
        cfg = TrainConfig(epochs=a.epochs, batch_size=64, lr=3e-3, weight_decay=1e-4,
                          seed=a.seed, progress=False, device=a.device, threads=a.threads)
        Trainer(model, cfg, ann=True).fit(xtr, ytr)
        anns[name] = import_ann(export_ann(model, tmp / f"{name}.onnx", SHAPE))
        logits = DP.run_ann(anns[name].graph, xte).reshape(len(xte), -1)
        res["ann"][name] = float(np.mean(np.argmax(logits, 1) == yte))
        C.log(f"{name} ANN: {res['ann'][name]:.4f} ({clock():.0f} s)")

    runs = [("relu", "relu", "relu"), ("qcfs", "qcfs", f"qcfs-L{a.L}"),
            ("qcfs", "dual-phase", f"qcfs-L{a.L} + phase II")]
    for ann_name, method, label in runs:
        rows = []
        for T in Ts:
            if method == "dual-phase" and T > a.phase2_max_t:
                continue
            g, info = DP.convert_method(anns[ann_name], xc, method, T, yc,
                                        epochs=a.phase2_epochs, seed=a.seed)
            acc = chip_acc(g, T)
            rows.append({"timesteps": T, "accuracy": acc})
            if method == "dual-phase":
                res["phase2"][str(T)] = {"best": info["best"], "checkpoints":
                                         info["checkpoints"], "test_accuracy": acc}
                if T == 4 or (T == Ts[0] and a.quick):
                    prog = compile_model(g, opts.spec, bits=opts.bits, timesteps=T, chips=4)
                    img = from_sections(prog.sections(), prog.spec.digest())
                    from compiler.passes.calibrate import direct_payloads
                    pr = run_payloads(img, direct_payloads(xte, T, 255.0).astype(np.uint8))
                    res["runtime_check"] = {"timesteps": T,
                                            "runtime_accuracy": pr.accuracy(yte),
                                            "int_accuracy": acc}
            C.log(f"{label} T={T}: {acc:.4f} ({clock():.0f} s)")
        res["curves"][label] = {"ann": ann_name, "method": method, "rows": rows}

    # error decomposition (phase I models; dual-phase from the curve)
    for ann_name in anns:
        ann = anns[ann_name]
        relu = ann_name == "relu"
        th = DP.activation_thresholds(ann, xc, "p99.9", use_clip=not relu)
        vin = None
        m, pops = DP.build_snn(ann, th, vin)
        if relu:                                  # the relu method: v_init = 0
            for p_ in pops:
                if p_.activation is not None:
                    nrn = dict(m.named_modules())[p_.module]
                    nrn.v_init = torch.zeros_like(nrn.v_init)
        clipped = DP.rate_model_accuracy(m, pops, xte, yte)
        dec = []
        for T in Ts:
            q = DP.rate_model_accuracy(m, pops, xte, yte, levels=T)
            fs = DP.float_snn_accuracy(m, xte, yte, T)
            dec.append({"timesteps": T, "ann": res["ann"][ann_name], "clipped": clipped,
                        "quantized": q, "snn_float": fs})
        res["decomposition"][ann_name] = dec
        C.log(f"decomposition {ann_name} ({clock():.0f} s)")
    _report(a, res, Ts, clock())
    return 0


def _pct(v):
    return C.fmt_pct(v) if v is not None else "-"


def _report(a, res, Ts, seconds) -> None:
    head = ["ANN -> method", "ANN"] + [f"T={T}" for T in Ts]
    rows = []
    for label, c in res["curves"].items():
        acc = {r["timesteps"]: r["accuracy"] for r in c["rows"]}
        rows.append([label, _pct(res["ann"][c["ann"]])] + [_pct(acc.get(T)) for T in Ts])
    L = f"qcfs-L{a.L}"
    chip = {lab: {r["timesteps"]: r["accuracy"] for r in c["rows"]}
            for lab, c in res["curves"].items()}
    drow = []
    for ann_name, dec in res["decomposition"].items():
        key = "relu" if ann_name == "relu" else L
        for d in dec:
            T = d["timesteps"]
            dp = chip.get(f"{L} + phase II", {}).get(T) if ann_name == "qcfs" else None
            drow.append([ann_name, T, _pct(d["ann"]), _pct(d["clipped"]), _pct(d["quantized"]),
                         _pct(d["snn_float"]), _pct(chip[key].get(T)), _pct(dp)])
    p2 = []
    for T, r in res["phase2"].items():
        cks = {c["stage"]: c["calib_accuracy"] for c in r["checkpoints"]}
        p2.append([T] + [_pct(cks.get(s)) for s in ("phase-1", "calibrated", "fine-tuned",
                                                     "recalibrated")] + [r["best"],
                                                                         _pct(r["test_accuracy"])])
    rc = res.get("runtime_check")
    setup = (f"Digits upsampled to 32x32 (bilinear; 1437 train / 360 test), VGG5 at width "
             f"{a.width} (conv {a.width}-{2 * a.width}-{2 * a.width}, fc {8 * a.width}-10, "
             f"AvgPool), ANNs trained {a.epochs} epochs (Adam 3e-3, batch 64, cosine); QCFS "
             f"L = {a.L}. Conversion with snnc, {a.calib} calibration images (train split), "
             f"8-bit weights, direct encoding; SNN accuracy = integer reference (== chip). "
             f"Phase II: {a.phase2_epochs} fine-tuning epoch(s) per layer (KL, Adam 1e-3, "
             f"v_init lr 1e-2), run for T <= {a.phase2_max_t}. Seed {a.seed}; {seconds:.0f} s "
             f"({C.environment(a)})." + (" **--quick smoke run: not meaningful.**"
                                         if a.quick else ""))
    sec = [BEGIN, "## Phase II (dual-phase) on a deeper network",
           "Test accuracy (%) on the chip (8-bit, integer reference) at T time steps.",
           C.md_table(head, rows),
           "Error decomposition (test accuracy %, phase I): the ANN; with activations clipped "
           "at theta (clipping error); clipped and quantized to T levels with the 1/2 shift, "
           "what an SNN without residual membrane error emits (quantization error); the float "
           "SNN (residual-membrane error); the 8-bit chip (weight quantization); the chip "
           "after phase II.",
           C.md_table(["ANN", "T", "ANN", "clipped", "quantized", "SNN float", "chip",
                       "chip + phase II"], drow),
           "Phase II checkpoints (calibration-set accuracy %, chip arithmetic) and the test "
           "accuracy of the kept one:",
           C.md_table(["T", "phase I", "calibrated", "fine-tuned", "recalibrated", "kept",
                       "test"], p2),
           ("Runtime check: dual-phase at T=%d: runtime %s vs integer reference %s."
            % (rc["timesteps"], C.fmt_pct(rc["runtime_accuracy"], 2),
               C.fmt_pct(rc["int_accuracy"], 2))) if rc else "Runtime check: not run.",
           "Setup: " + setup,
           "Command: `.venv/bin/python examples/experiments/conversion_phase2.py"
           + "".join(" " + arg for arg in sys.argv[1:] if "--out" not in arg) + "`",
           "![phase II](conversion_phase2.png)", END]
    import json
    (a.out / "conversion_phase2.json").write_text(json.dumps({"setup": setup, **res},
                                                             indent=1, default=float))
    md = a.out / "conversion.md"
    text = md.read_text() if md.exists() else "# ANN -> SNN conversion: latency vs accuracy\n"
    block = "\n\n".join(sec) + "\n"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + block + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + block
    md.write_text(text)
    plt = C.plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, c in res["curves"].items():
        line, = ax.plot([r["timesteps"] for r in c["rows"]],
                        [100 * r["accuracy"] for r in c["rows"]], marker="o", label=label)
    for name, acc in res["ann"].items():
        ax.axhline(100 * acc, ls=":", lw=1, color="k" if name == "qcfs" else "gray",
                   label=f"{name} ANN")
    ax.set_xscale("log", base=2)
    ax.set_xticks(Ts, [str(t) for t in Ts])
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy on the chip (%)")
    ax.set_title("VGG5 (reduced) on digits 32x32: conversion methods")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out / "conversion_phase2.png", dpi=120)


if __name__ == "__main__":
    sys.exit(main())
