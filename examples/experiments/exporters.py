"""Issue 20's headline case: one residual CNN, both torch exporters, compiled and run on the chip.

    .venv/bin/python examples/experiments/exporters.py          # ~2 min on 2 idle cores
    .venv/bin/python examples/experiments/exporters.py --quick  # smoke run (1 epoch)

A residual CNN (bias-free conv + BatchNorm, a residual add, a strided conv,
``nn.AdaptiveAvgPool2d(1)``, Linear) is trained as an ANN on scikit-learn's digits (seeded,
CPU), then exported twice, as a new user would:

    dynamo       torch.onnx.export(..., dynamo=True)   the default since torch 2.9 (opset 18+):
                 global average pooling written as ReduceMean + Reshape, static batch 1
    torchscript  torch.onnx.export(..., dynamo=False)  GlobalAveragePool + Flatten, dynamic
                 batch dim

(both exporters of torch 2.13 fold eval-mode BatchNorm into the convolutions; the table lists
the ops each file holds).

Each file is compiled with the CLI a user runs, ``snnc compile FILE --calib digits --timesteps
32 -o chip.bin`` (ANN -> IF conversion with the default p99.9 thresholds and v_init = theta/2,
8-bit weights), the chip image is loaded with ``runtime.image.load`` and the 360 test images are
run on the cycle-level runtime (direct encoding, META's T). The table gives the ANN's accuracy
(in torch and in snnc's float64 evaluator of each imported file), the chip's, and how often the
two chips predict the same class. Output: docs/experiments/exporters.{md,json}.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as C  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from frontends.training.trainer import TrainConfig, Trainer  # noqa: E402

EXPORTERS = ("dynamo", "torchscript")


class ResidualCNN(nn.Module):
    """conv-BN-ReLU (16x8x8) -> [conv-BN, + skip] -> ReLU -> strided conv-BN-ReLU (32x4x4)
    -> AdaptiveAvgPool2d(1) -> flatten -> Linear(32, 10)."""

    def __init__(self, c1: int = 16, c2: int = 32):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.conv2, self.bn2 = nn.Conv2d(c1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)
        self.conv3 = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, 10)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(h + self.bn2(self.conv2(h)))
        y = F.relu(self.bn3(self.conv3(y)))
        return self.fc(torch.flatten(self.pool(y), 1))


def export(model: nn.Module, path: Path, exporter: str) -> None:
    """torch.onnx.export as a user calls it (only the names and, for TorchScript, a dynamic
    batch dim given); the exporters' chatter is silenced."""
    model.eval()
    kw = dict(dynamo=True) if exporter == "dynamo" else \
        dict(dynamo=False, dynamic_axes={"x": {0: "batch"}})
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            torch.onnx.export(model, (torch.zeros(1, *C.INPUT_SHAPE),), str(path),
                              input_names=["x"], output_names=["logits"], **kw)
        finally:
            logging.disable(logging.NOTSET)


def op_histogram(path: Path) -> dict[str, int]:
    m = onnx.load(str(path))
    return dict(sorted(collections.Counter(n.op_type for n in m.graph.node).items()))


def weight_diff(a: Path, b: Path) -> float:
    """Largest |difference| between the Conv/Gemm weights and biases of two exports of one
    network (matched by node order)."""
    from onnx import numpy_helper

    def params(path):
        m = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
        for n in m.graph.node:      # Constant nodes hold weights in some exports
            if n.op_type == "Constant":
                init[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        return [init[i].astype(np.float64) for n in m.graph.node
                if n.op_type in ("Conv", "Gemm") for i in n.input[1:] if i in init]

    pa, pb = params(a), params(b)
    if len(pa) != len(pb) or any(x.shape != y.shape for x, y in zip(pa, pb)):
        return float("nan")
    return float(max(np.abs(x - y).max() for x, y in zip(pa, pb)))


def snnc_compile(path: Path, out: Path, T: int, bits: int, calib_limit: int) -> float:
    """``snnc compile`` as a subprocess (the user's path); returns its wall time."""
    cmd = [sys.executable, "-m", "compiler.cli", "compile", str(path), "--calib", "digits",
           "--calib-limit", str(calib_limit), "--timesteps", str(T), "--bits", str(bits),
           "-o", str(out), "--quiet"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=C.ROOT,
                       env=dict(__import__("os").environ, PYTHONPATH=str(C.ROOT)))
    if r.returncode != 0:
        raise SystemExit(f"snnc compile {path.name} failed ({r.returncode}):\n{r.stderr}")
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--timesteps", type=int, default=32)
    p.add_argument("--bits", type=int, default=8)
    p.add_argument("--calib-limit", type=int, default=512)
    a = p.parse_args(argv)
    if a.quick:
        a.epochs = 1
    C.setup(a)
    from frontends.onnx import check_onnxruntime, import_ann, run_ann
    from runtime.engines.tick import run
    from runtime.image import load

    clock = C.Clock()
    xtr, ytr, xte, yte = C.digits()
    torch.manual_seed(a.seed)
    model = ResidualCNN()
    cfg = TrainConfig(epochs=a.epochs, batch_size=32, lr=3e-3, weight_decay=1e-4, seed=a.seed,
                      progress=False, device=a.device, threads=a.threads)
    tr = Trainer(model, cfg, ann=True)
    tr.fit(xtr, ytr)
    model = model.cpu().eval()
    ann_torch = tr.evaluate(xte, yte)
    train_s = clock()
    C.log(f"trained {a.epochs} epochs: ANN {ann_torch:.4f} ({train_s:.0f} s)")

    tmp = Path(tempfile.mkdtemp(prefix="snnc-exporters-"))
    res: dict[str, dict] = {}
    preds: dict[str, np.ndarray] = {}
    scores: dict[str, np.ndarray] = {}
    for exp in EXPORTERS:
        onnx_path, chip = tmp / f"{exp}.onnx", tmp / f"{exp}.bin"
        export(model, onnx_path, exp)
        ann = import_ann(onnx_path)
        ort = check_onnxruntime(ann, xte)
        logits = run_ann(ann.graph, xte).reshape(len(xte), -1)
        compile_s = snnc_compile(onnx_path, chip, a.timesteps, a.bits, a.calib_limit)
        image = load(chip)
        rr = run(image, xte)
        preds[exp], scores[exp] = rr.predictions, rr.scores
        res[exp] = {"ops": op_histogram(onnx_path),
                    "opset": max(o.version for o in onnx.load(str(onnx_path)).opset_import
                                 if o.domain in ("", "ai.onnx")),
                    "ann_accuracy_snnc": float(np.mean(np.argmax(logits, 1) == yte)),
                    "onnxruntime_max_abs_diff": ort["max_abs_diff"],
                    "chip_accuracy": rr.accuracy(yte), "chip_timesteps": int(image.meta[
                        "timesteps"]), "compile_seconds": compile_s,
                    "import_notes": list(ann.notes), "chip_bytes": chip.stat().st_size}
        C.log(f"{exp}: ANN {res[exp]['ann_accuracy_snnc']:.4f} -> chip "
              f"{res[exp]['chip_accuracy']:.4f} (compile {compile_s:.0f} s)")
    a_, b_ = (preds[e] for e in EXPORTERS)
    agree = float(np.mean(a_ == b_))
    sa, sb = (scores[e].astype(np.int64) for e in EXPORTERS)
    same_rows = float(np.mean(np.all(sa == sb, axis=1)))
    wdiff = weight_diff(*(tmp / f"{e}.onnx" for e in EXPORTERS))
    data = {"ann_accuracy_torch": ann_torch, "exporters": res, "prediction_agreement": agree,
            "identical_score_rows": same_rows,
            "max_abs_score_diff": int(np.abs(sa - sb).max()),
            "score_range": [int(min(sa.min(), sb.min())), int(max(sa.max(), sb.max()))],
            "weights_max_abs_diff": wdiff,
            "n_test": int(len(yte)), "timesteps": a.timesteps, "bits": a.bits,
            "epochs": a.epochs, "seed": a.seed, "train_seconds": train_s,
            "torch": torch.__version__, "seconds": clock()}
    _report(a, data)
    C.log(f"agreement {agree:.4f}; {clock():.0f} s")
    return 0


def _report(a, d) -> None:
    rows = []
    for exp in EXPORTERS:
        r = d["exporters"][exp]
        ops = ", ".join(f"{k} {v}" for k, v in r["ops"].items())
        rows.append([f"{exp} (opset {r['opset']})", C.fmt_pct(d["ann_accuracy_torch"], 2),
                     C.fmt_pct(r["ann_accuracy_snnc"], 2), C.fmt_pct(r["chip_accuracy"], 2),
                     f"{r['onnxruntime_max_abs_diff']:.1e}", ops])
    setup = (f"Digits (1,437 train / {d['n_test']} test images), the residual CNN of "
             f"`examples/experiments/exporters.py` trained as an ANN for {d['epochs']} epochs "
             f"(Adam 3e-3, batch 32, cosine, seed {d['seed']}, {d['train_seconds']:.0f} s), "
             f"exported with both exporters of torch {d['torch']}, each compiled with `snnc "
             f"compile FILE --calib digits --calib-limit {a.calib_limit} --timesteps "
             f"{d['timesteps']} --bits {d['bits']}` and run on the cycle-level runtime "
             f"(direct encoding, T = {d['timesteps']}). {d['seconds']:.0f} s in all "
             f"({C.environment(a)})." + (" **--quick smoke run: not meaningful.**"
                                         if a.quick else ""))
    sections = [
        "Test accuracy (%) of one trained residual CNN (bias-free conv + BatchNorm, residual "
        "add, strided conv, `nn.AdaptiveAvgPool2d(1)`) exported with each torch exporter and "
        "converted to a chip image by snnc.",
        C.md_table(["exporter", "ANN (torch)", "ANN (snnc import)", f"chip (T={d['timesteps']})",
                    "max abs diff, onnxruntime vs snnc (test set)", "ONNX ops"], rows),
        f"The two chips predict the same class on {C.fmt_pct(d['prediction_agreement'], 2)} % "
        f"of the {d['n_test']} test images; their integer output scores are identical on "
        f"{C.fmt_pct(d['identical_score_rows'], 2)} % of the images (largest difference "
        f"{d['max_abs_score_diff']}, scores in [{d['score_range'][0]}, "
        f"{d['score_range'][1]}]). The two files hold the same network up to float32 rounding: "
        f"both exporters fold the BatchNorms into the convolutions, each in its own "
        f"arithmetic, and their weights differ by at most {d['weights_max_abs_diff']:.1e}"
        + (", which moved no quantized weight or calibrated threshold here." if
           d["identical_score_rows"] == 1.0 else "; a last-bit difference can move a quantized "
           "weight or a calibrated threshold by one step."),
        "Setup: " + setup,
        "Command: `.venv/bin/python examples/experiments/exporters.py"
        + (" --quick" if a.quick else "") + "`",
    ]
    C.write_doc(a.out, "exporters", "One residual CNN, both torch exporters, on the chip",
                sections, d)


if __name__ == "__main__":
    sys.exit(main())
