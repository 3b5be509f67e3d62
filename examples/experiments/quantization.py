"""Quantization on the chip: post-training quantization vs QAT, and IntegerNet shift batch-norm.

    .venv/bin/python examples/experiments/quantization.py          # ~5-10 min on 2 idle cores
    .venv/bin/python examples/experiments/quantization.py --quick

Rows (digits SNN, T = 8, direct encoding; every accuracy measured on the compiled chip runtime):

* PTQ: the float-trained model compiled at 8/4/2 bits, per-layer and per-channel scales;
* QAT: the same float model fine-tuned with ``frontends.training.qat.Quantizer`` at that width and
  scale mode, then compiled; the column ``QAT == chip`` says whether the QAT model's integer
  evaluation (``Quantizer.run_int``) equals the runtime's output on every test image (counts,
  membranes and scores of the output layer);
* BatchNorm: conv -> BN -> IF trained in float, BN folded (``fold_batchnorm``), then PTQ and QAT
  at 4 bits per channel (BN's per-channel gain needs per-channel scales);
* ShiftBN: conv -> ShiftBN -> IF (IntegerNet-style: integer bias, power-of-two scaling), QAT at
  4 bits with a *per-layer* weight scale, exported with ``export_model``: the chip's thresholds
  are then all powers of two (checked) -- the accuracy cost is the last row vs the BN rows.

Output: docs/experiments/quantization.{md,png,json}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from frontends.training.qat import Quantizer, export_model, fold_batchnorm  # noqa: E402
from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15, help="float training epochs")
    p.add_argument("--qat-epochs", type=int, default=5, help="QAT fine-tuning epochs")
    p.add_argument("--bits", default="8,4,2")
    p.add_argument("--timesteps", type=int, default=8)
    a = p.parse_args(argv)
    if C.replot(a, "quantization"):
        return 0
    if a.quick:
        a.epochs, a.qat_epochs, a.bits = 2, 1, "4"
    C.setup(a)
    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    T = a.timesteps
    base = dict(timesteps=T, batch_size=64, weight_decay=1e-4, seed=a.seed, progress=False,
                device=a.device, threads=a.threads)
    rows = []

    def chip_row(label, model, bits, per_channel, training, quantizer=None, extra=None):
        prog, image = C.compile_image(model, bits=bits, per_channel=per_channel, timesteps=T)
        res = C.chip_run(image, xte, T)
        exact = None
        if quantizer is not None:
            mine = quantizer.run_int(xte, T)
            exact = bool(np.array_equal(mine.counts["out"], res.out_counts)
                         and np.array_equal(mine.v_final["out"], res.v_out)
                         and np.array_equal(mine.scores, res.scores))
        r = {"model": label, "bits": bits, "scales": "per-channel" if per_channel else "per-layer",
             "training": training, "chip_accuracy": res.accuracy(yte), "qat_equals_chip": exact}
        r.update(extra or {})
        rows.append(r)
        C.log(f"{label} {bits}b {r['scales']} {training}: {r['chip_accuracy']:.4f} "
              f"exact={exact} ({clock():.0f} s)")
        return prog

    # --- plain model: float, PTQ, QAT ------------------------------------------------------
    torch.manual_seed(a.seed)
    fl = C.build_snn()
    tf = Trainer(fl, TrainConfig(epochs=a.epochs, lr=3e-3, **base))
    tf.fit(xtr, ytr)
    float_acc = tf.evaluate(xte, yte)
    init = {k: v.clone() for k, v in fl.state_dict().items()}
    rows.append({"model": "plain", "bits": "float", "scales": "-", "training": "float",
                 "chip_accuracy": float("nan"), "float_accuracy": float_acc,
                 "qat_equals_chip": None})
    for bits in [int(b) for b in a.bits.split(",")]:
        for pc in (False, True):
            chip_row("plain", fl, bits, pc, "PTQ")
            m = C.build_snn()
            m.load_state_dict(init)
            q = Quantizer(m, C.INPUT_SHAPE, bits=bits, per_channel=pc)
            Trainer(m, TrainConfig(epochs=a.qat_epochs, lr=1e-3, **base), quantizer=q).fit(
                xtr, ytr)
            chip_row("plain", m, bits, pc, f"QAT {a.qat_epochs} ep", q)

    # --- BatchNorm model: float -> fold -> PTQ / QAT at 4 bits per channel ------------------
    torch.manual_seed(a.seed)
    bn = C.build_snn(bn="bn")
    tb = Trainer(bn, TrainConfig(epochs=a.epochs, lr=3e-3, **base))
    tb.fit(xtr, ytr)
    bn_float = tb.evaluate(xte, yte)
    folded = fold_batchnorm(bn.cpu().eval())
    rows.append({"model": "BatchNorm", "bits": "float", "scales": "-", "training": "float",
                 "chip_accuracy": float("nan"), "float_accuracy": bn_float,
                 "qat_equals_chip": None})
    chip_row("BatchNorm (folded)", folded, 4, True, "PTQ")
    chip_row("BatchNorm (folded)", folded, 4, False, "PTQ")
    q = Quantizer(folded, C.INPUT_SHAPE, bits=4, per_channel=True)
    Trainer(folded, TrainConfig(epochs=a.qat_epochs, lr=1e-3, **base), quantizer=q).fit(xtr, ytr)
    chip_row("BatchNorm (folded)", folded, 4, True, f"QAT {a.qat_epochs} ep", q)

    # --- ShiftBN model: QAT from scratch at 4 bits, per-layer scale ----------------------------
    torch.manual_seed(a.seed)
    sb = C.build_snn(bn="shift")
    qs = Quantizer(sb, C.INPUT_SHAPE, bits=4, per_channel=False)
    Trainer(sb, TrainConfig(epochs=a.epochs + a.qat_epochs, lr=3e-3, **base),
            quantizer=qs).fit(xtr, ytr)
    sb.eval()
    plain = export_model(sb, qs)
    prog = chip_row("ShiftBN (exported)", plain, 4, False,
                    f"QAT {a.epochs + a.qat_epochs} ep from scratch", qs)
    g = prog.history["fold-thresholds"]
    pow2 = {}
    for layer in ("if1", "if2"):
        th = g.node(layer).regs.th_pos
        pow2[layer] = {"all_powers_of_two": bool(np.all(th == 2 ** np.round(np.log2(th)))),
                       "shifts": sorted(set(np.log2(th).astype(int).tolist()))}
    rows[-1]["thresholds"] = pow2
    _report(a, rows, clock(), float_acc, bn_float, pow2)
    return 0


def _report(a, rows, seconds, float_acc, bn_float, pow2) -> None:
    head = ["model", "weights", "scales", "training", "chip accuracy %", "QAT == chip"]
    body = []
    for r in rows:
        acc = r["chip_accuracy"]
        acc_s = C.fmt_pct(acc, 2) if not np.isnan(acc) else \
            f"(float model {C.fmt_pct(r['float_accuracy'], 2)})"
        ex = {None: "-", True: "yes", False: "**no**"}[r["qat_equals_chip"]]
        body.append([r["model"], f"{r['bits']}-bit" if r["bits"] != "float" else "float",
                     r["scales"], r["training"], acc_s, ex])
    shift_txt = "; ".join(f"{k}: all powers of two = {v['all_powers_of_two']}, shifts "
                          f"{v['shifts']}" for k, v in pow2.items())
    setup = (f"Digits SNN (examples/digits architecture), T = {a.timesteps}, direct encoding, "
             f"float training {a.epochs} epochs (Adam 3e-3, batch 64), QAT fine-tuning "
             f"{a.qat_epochs} epochs (Adam 1e-3) from the float weights. 360 test images, "
             f"every accuracy from the chip runtime (runtime.engines.tick.run on the compiled "
             f"image). Seed {a.seed}; {seconds:.0f} s ({C.environment(a)})."
             + (" **--quick smoke run: not meaningful.**" if a.quick else ""))
    sections = [
        C.md_table(head, body),
        "ShiftBN chip thresholds (th_pos registers of the hidden layers): " + shift_txt,
        "Setup: " + setup,
        "Command: `.venv/bin/python examples/experiments/quantization.py"
        + (" --quick" if a.quick else "") + "`",
        f"![quantization](quantization.{a.format})",
    ]
    C.write_doc(a.out, "quantization", "PTQ vs QAT and shift batch-norm on the chip", sections,
                {"setup": setup, "rows": rows, "float_accuracy": float_acc,
                 "bn_float_accuracy": bn_float})
    import figures
    figures.quantization(json.loads((a.out / "quantization.json").read_text()), a.out, a.format)


if __name__ == "__main__":
    sys.exit(main())
