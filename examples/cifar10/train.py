"""Train a VGG5 / VGG9 for the chip on CIFAR-10 (binary version on disk): BPTT + QAT, or an ANN
for ANN -> SNN conversion. Writes ONNX files for `snnc compile` (examples/cifar10/README.md).

    # direct training: float BPTT, BatchNorm folded, then QAT at each width (4 and 8 bits)
    python examples/cifar10/train.py --data cifar10:DATA --net vgg5 --method snn --bits 4,8
    # ANN for conversion (ReLU, or QCFS for low latency), converted by `snnc compile --calib`
    python examples/cifar10/train.py --data cifar10:DATA --net vgg9 --method ann --act qcfs

Networks (benchmarks/networks.py, the seed papers' widths at --width 1): VGG5 conv 64, P, 128,
128, P; VGG9 conv 64, 64, P, 128, 128, P, 256, 256, 256, P; 3x3 convs with padding 1,
BatchNorm, AvgPool 2x2; FC 1024, 10. ``--width`` scales every conv and the FC layer;
``--input-size 16`` (or 8) puts an AvgPool first, so the network runs at that size while the
chip still takes the 32 x 32 CIFAR images (`snnrun --data cifar10:DIR` works unchanged).

``--method snn`` (BPTT through time with surrogate gradients, frontends.training):
  1. float training with BatchNorm (``--epochs``), direct encoding (the chip's input rounding
     rint(255 x)/255 applied), IF neurons, score = count * threshold + final membrane;
  2. BatchNorm folded into the convolutions (``fold_batchnorm``);
  3. for each ``--bits``: QAT fine-tuning (``--qat-epochs``) with a ``Quantizer`` that quantizes
     exactly like ``snnc compile --bits B --per-channel``; the integer accuracy it reports is the
     chip's accuracy; export ``NET_qatB.onnx`` (``export_model`` + ``export_onnx``).
``--method ann``: a ReLU or QCFS ANN (``--act``), trained as an ANN and exported as a standard
ONNX CNN (``NET_ann_ACT.onnx``); snnc converts ReLU/Clip to IF neurons with ``--calib``.

Training uses random crops (4-pixel padding) and horizontal flips (``--no-augment`` to turn
off), Adam with a cosine schedule, and checkpoints every epoch into ``--out`` (a rerun resumes).
Everything is seeded (``--seed``). Outputs go to ``--out`` together with ``NET_METHOD.json``
(accuracies, timings, configuration and the snnc commands for the written models).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # runnable from anywhere without installing the package
    sys.path.insert(0, str(ROOT))

from benchmarks.networks import (  # noqa: E402
    SEED_FC,
    VGG5_SEED_CHANNELS,
    VGG9_SEED_CHANNELS,
    scale_channels,
    vgg_ann,
    vgg_native,
)
from frontends.datasets import load_dataset  # noqa: E402
from frontends.training.robust import Standard  # noqa: E402

NETS = {"vgg5": VGG5_SEED_CHANNELS, "vgg9": VGG9_SEED_CHANNELS}
INPUT_SHAPE = (3, 32, 32)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="cifar10:DIR (the binary version: data_batch_1..5.bin, test_batch.bin)")
    p.add_argument("--net", choices=sorted(NETS), default="vgg5")
    p.add_argument("--method", choices=("snn", "ann"), default="snn",
                   help="snn: BPTT + QAT; ann: an ANN for conversion")
    p.add_argument("--bits", default="4,8", help="snn: QAT weight widths, e.g. 4,8")
    p.add_argument("--act", choices=("relu", "qcfs"), default="qcfs", help="ann: activation")
    p.add_argument("--qcfs-levels", type=int, default=8, help="ann: QCFS quantization levels L")
    p.add_argument("--convert-bits", type=int, choices=(1, 2, 4, 8), default=None,
                   help="ann: weight width in the printed compile command (default 8 for vgg5, "
                        "4 for vgg9: the seed-width VGG9 needs more than 64 chips at 8 bits)")
    p.add_argument("--width", type=float, default=1.0,
                   help="multiplier on every conv width and the FC width (1 = seed widths)")
    p.add_argument("--fc", type=int, default=None,
                   help=f"hidden FC width before --width (default {SEED_FC})")
    p.add_argument("--input-size", type=int, default=32, choices=(32, 16, 8),
                   help="size the network runs at (AvgPool first when < 32)")
    p.add_argument("--epochs", type=int, default=100, help="float (snn) or ANN epochs")
    p.add_argument("--qat-epochs", type=int, default=20, help="snn: QAT epochs per bit width")
    p.add_argument("--timesteps", "-T", type=int, default=4, help="snn: BPTT time steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--qat-lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop / horizontal flip")
    p.add_argument("--train-limit", type=int, default=None, help="first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="first N test images")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda if any)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/cifar10"))
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore existing checkpoints in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    if a.width <= 0:
        p.error(f"--width must be > 0, got {a.width}")
    try:
        a.bits = [int(b) for b in str(a.bits).split(",") if b.strip()]
    except ValueError:
        p.error(f"--bits takes a comma list of 1, 2, 4, 8, got {a.bits!r}")
    if not a.bits or any(b not in (1, 2, 4, 8) for b in a.bits):
        p.error(f"--bits takes a comma list of 1, 2, 4, 8, got {a.bits}")
    for name in ("epochs", "qat_epochs"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must be >= 0")
    if a.timesteps < 1 or a.batch_size < 1 or a.qcfs_levels < 1:
        p.error("--timesteps, --batch-size and --qcfs-levels must be >= 1")
    return a


class Augment:
    """Training-time augmentation wrapped around an objective: random crop (zero padding
    ``pad``) and horizontal flip of the batch, on the batch's device, drawn from torch's global
    RNG (seeded by the trainer, saved in its checkpoints)."""

    def __init__(self, method=None, pad: int = 4):
        self.method = method or Standard()
        self.pad = int(pad)

    def __call__(self, ctx):
        x = ctx.x
        B, _, H, W = x.shape
        flip = torch.rand(B, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        if self.pad:
            xp = F.pad(x, (self.pad,) * 4)
            dy = torch.randint(0, 2 * self.pad + 1, (B,), device=x.device)
            dx = torch.randint(0, 2 * self.pad + 1, (B,), device=x.device)
            rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]
            cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]
            b = torch.arange(B, device=x.device)[:, None, None, None]
            c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = xp[b, c, rows, cols]
        return self.method(dataclasses.replace(ctx, x=x))


def build(a):
    channels = scale_channels(NETS[a.net], a.width)
    fc = max(1, int(round((a.fc or SEED_FC) * a.width)))
    pool = 32 // a.input_size
    if a.method == "snn":
        model = vgg_native(channels, fc=fc, hw=32, input_pool=pool)
    else:
        model = vgg_ann(channels, fc=fc, hw=32, act=a.act, L=a.qcfs_levels, input_pool=pool)
    return model, channels, fc


@torch.no_grad()
def recalibrate_bn(trainer, x, limit: int = 2048) -> None:
    """Replace every BatchNorm's running statistics by the exact mean/variance over (up to
    ``limit``) training images, forward in train mode without augmentation. After a short
    run the exponential running averages are far from the population statistics, and the
    folded (deployed) network would inherit that error."""
    bns = [m for m in trainer.model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    was = trainer.model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                   # cumulative average over the batches below
    trainer.model.train()
    xs = torch.as_tensor(np.asarray(x[:limit], np.float32))
    try:
        for i in range(0, len(xs), trainer.config.batch_size):
            trainer.scores(xs[i:i + trainer.config.batch_size].to(trainer.device))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        trainer.model.train(was)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> dict:
    a = parse_args(argv)
    from frontends.training.trainer import TrainConfig, Trainer, pick_device

    t_start = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    tr = load_dataset(a.data, "train", a.train_limit)
    te = load_dataset(a.data, "test", a.test_limit)
    if tr.shape != INPUT_SHAPE:
        raise SystemExit(f"error: {a.data}: images of shape {tr.shape}, expected {INPUT_SHAPE}")
    torch.manual_seed(a.seed)                     # the initial weights
    model, channels, fc = build(a)
    device = str(pick_device(a.device))
    tag = f"{a.net}_{a.method}" + (f"_{a.act}" if a.method == "ann" else "")
    log(f"{tag}: conv {channels}, FC {fc}, input {a.input_size}x{a.input_size}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters, {len(tr)} train / "
        f"{len(te)} test images, device {device}")
    method = Augment() if a.augment else Standard()

    def cfg(epochs, lr, name):
        return TrainConfig(epochs=epochs, timesteps=a.timesteps, batch_size=a.batch_size, lr=lr,
                           weight_decay=a.weight_decay, seed=a.seed, device=a.device,
                           threads=a.threads, progress=not a.quiet, resume=a.resume,
                           checkpoint=str(a.out / f"{name}.pt"), eval_batch=256)

    summary = {"net": a.net, "method": a.method, "channels": list(channels), "fc": fc,
               "input_size": a.input_size, "data": a.data, "train_images": len(tr),
               "test_images": len(te), "device": device, "timesteps": a.timesteps,
               "augment": a.augment, "seed": a.seed, "models": []}
    if a.method == "ann":
        summary.update(act=a.act, qcfs_levels=a.qcfs_levels if a.act == "qcfs" else None)
        if a.act == "relu":
            log("note: a ReLU ANN is converted with percentile thresholds from --calib; it needs "
                "more time steps than QCFS (the printed command uses T=16)")
        t0 = time.perf_counter()
        trainer = Trainer(model, cfg(a.epochs, a.lr, f"{tag}_train"), ann=True, method=method)
        trainer.fit(tr.x, tr.y)
        recalibrate_bn(trainer, tr.x)
        acc = trainer.evaluate(te.x, te.y)
        from frontends.training.qcfs import export_ann
        path = export_ann(model, a.out / f"{tag}.onnx", INPUT_SHAPE)
        log(f"ANN test accuracy {100 * acc:.2f} %  -> {path}")
        summary["models"].append({"onnx": str(path), "ann_accuracy": acc,
                                  "train_seconds": time.perf_counter() - t0,
                                  "commands": commands(a, path, None)})
    else:
        from frontends.onnx import export_onnx
        from frontends.training.qat import Quantizer, export_model, fold_batchnorm

        t0 = time.perf_counter()
        trainer = Trainer(model, cfg(a.epochs, a.lr, f"{tag}_float"), method=method)
        trainer.fit(tr.x, tr.y)
        recalibrate_bn(trainer, tr.x)
        acc = trainer.evaluate(te.x, te.y)
        summary["float_accuracy"] = acc
        summary["float_seconds"] = time.perf_counter() - t0
        log(f"float SNN test accuracy {100 * acc:.2f} % (T={a.timesteps})")
        folded = fold_batchnorm(model.eval())
        for bits in a.bits:
            t0 = time.perf_counter()
            m = copy.deepcopy(folded)
            q = Quantizer(m, INPUT_SHAPE, bits=bits, per_channel=True)
            qt = Trainer(m, cfg(a.qat_epochs, a.qat_lr, f"{tag}_qat{bits}"), quantizer=q,
                         method=method)
            qt.fit(tr.x, tr.y)
            m.eval()
            acc_int = qt.evaluate(te.x, te.y, integer=True)
            path = a.out / f"{a.net}_qat{bits}.onnx"
            export_onnx(export_model(m.cpu(), q), path, input_shape=INPUT_SHAPE)
            log(f"{bits}-bit QAT: integer (= chip) test accuracy {100 * acc_int:.2f} %  -> {path}")
            summary["models"].append({"onnx": str(path), "bits": bits, "per_channel": True,
                                      "integer_accuracy": acc_int,
                                      "train_seconds": time.perf_counter() - t0,
                                      "commands": commands(a, path, bits)})
    summary["seconds"] = time.perf_counter() - t_start
    js = a.out / f"{tag}.json"
    js.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"summary -> {js}")
    for m in summary["models"]:
        log("next:\n  " + "\n  ".join(m["commands"]))
    return summary


def commands(a, onnx: Path, bits: int | None) -> list[str]:
    """The snnc / snnrun commands that deploy and evaluate ``onnx`` (README.md, step 2-4)."""
    chip = onnx.with_suffix(".bin")
    q = shlex.quote
    if bits is None:        # ANN: conversion at T = QCFS L (16 for ReLU), --convert-bits
        T = a.qcfs_levels if a.act == "qcfs" else 16
        bits = a.convert_bits or (4 if a.net == "vgg9" else 8)
        comp = (f"snnc compile {q(str(onnx))} --calib {q(a.data)} --timesteps {T} --bits {bits} "
                f"--chips auto -o {q(str(chip))}")
    else:
        comp = (f"snnc compile {q(str(onnx))} --bits {bits} --per-channel "
                f"--timesteps {a.timesteps} --chips auto -o {q(str(chip))}")
    data = q(a.data)
    return [comp,
            f"snnrun {q(str(chip))} --data {data} --limit 1000 --check",
            f"snnrun {q(str(chip))} --data {data} --limit 500 --attack fgsm "
            f"--eps 1/255,2/255,4/255,8/255",
            f"snnrun {q(str(chip))} --data {data} --limit 500 --mismatch 0.1,0.2,0.3 "
            f"--samples 10"]


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:   # DatasetError etc.: one clear line, no traceback
        from compiler.errors import SnnError
        if isinstance(e, SnnError):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
