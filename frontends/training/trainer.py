"""BPTT trainer for native SNNs: seeded, resumable, CPU or CUDA (stage: training; docs/training.md).

    from frontends.training.trainer import Trainer, TrainConfig
    cfg = TrainConfig(epochs=40, timesteps=8, batch_size=32, lr=3e-3, seed=0,
                      checkpoint="runs/digits.pt")
    trainer = Trainer(model, cfg)                       # + method=..., quantizer=...
    history = trainer.fit(x_train, y_train, x_val, y_val)
    trainer.evaluate(x_test, y_test)                    # float accuracy
    trainer.evaluate(x_test, y_test, integer=True)      # the chip's accuracy (needs a quantizer)

One step: encode the images (direct: the same image every step; the payload rounding
``rint(255 x) / 255`` of the chip is applied unless ``quantize_input=False``; or Bernoulli
``rate`` with a straight-through gradient), run the model for T steps (``run_scores``: output
score = count * v_threshold + v_final), let the *objective* (frontends/training/robust.py: standard
CE, forward noise, adversarial weights, AWP, adversarial inputs) compute and back-propagate the
loss, clip gradients (optional), step the optimizer. With a
:class:`~frontends.training.qat.Quantizer`
the forward *and* backward run inside ``quantizer.quantized()`` (chip values swapped in, float
masters restored before the optimizer step).

Determinism: ``fit`` seeds torch's global RNG with ``seed`` (fresh runs) and draws the epoch
permutations from its own generator; both states go into the checkpoint, so a resumed run
continues exactly as an uninterrupted one would. Checkpoints hold only tensors and plain
Python values (state dicts, RNG states, history, config) and are read with
``torch.load(..., weights_only=True)``: never unpickle a checkpoint you did not write.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compiler.errors import SnnError
from frontends.native.functional import direct, run_scores
from frontends.training.robust import Standard, StepContext

CHECKPOINT_FORMAT = "snnc-train-1"
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "none", "step")
ENCODINGS = ("direct", "rate", "phase", "latency", "latency-log")
# run options: may differ between a checkpoint and the run that resumes it
RUN_OPTIONS = ("epochs", "device", "checkpoint", "checkpoint_every", "resume", "progress",
               "eval_batch", "threads", "deterministic")


@dataclass
class TrainConfig:
    """Hyper-parameters and run options (every field is a plain value, saved in checkpoints)."""

    epochs: int = 20
    timesteps: int = 8
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    optimizer: str = "adam"             # adam | adamw | sgd (momentum below)
    momentum: float = 0.9
    schedule: str = "cosine"            # cosine (per epoch, T_max = epochs) | step | none
    step_size: int = 10                 # 'step': multiply lr by gamma every step_size epochs
    gamma: float = 0.1
    grad_clip: float | None = None      # max global L2 norm of the gradients
    seed: int = 0
    device: str | None = None           # None: cuda if available, else cpu
    encoding: str = "direct"            # direct | rate | phase | latency | latency-log
    quantize_input: bool = True         # direct: rint(255 x)/255, what the chip receives
    checkpoint: str | None = None       # path; written every checkpoint_every epochs and at the end
    checkpoint_every: int = 1
    resume: bool | str = True           # continue from ``checkpoint`` when it exists (its config
    #                                     and model signature must match; 'force': load anyway)
    progress: bool = True               # a bar over each epoch's steps (compiler/progress.py)
    deterministic: bool = True
    eval_batch: int = 512
    threads: int | None = None          # torch.set_num_threads for the run (CPU)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.epochs < 0 or self.timesteps < 1 or self.batch_size < 1:
            raise ValueError("epochs >= 0, timesteps >= 1 and batch_size >= 1 are required")
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)
        if self.resume not in (True, False, "force"):
            raise ValueError(f"resume must be True, False or 'force', got {self.resume!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class History:
    """Per-epoch records (lists of floats), ``epochs_done`` and the wall time."""

    loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    @property
    def epochs_done(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict:
        return {k: [float(v) for v in getattr(self, k)] for k in
                ("loss", "train_accuracy", "val_accuracy", "lr", "seconds")}

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**{k: list(d.get(k, [])) for k in
                      ("loss", "train_accuracy", "val_accuracy", "lr", "seconds")})


def pick_device(device: str | None = None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _tensor(a, dtype=None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


class Trainer:
    """BPTT training of a native SNN (see the module docstring).

    Args:
        model: a native model (ends with its output IF/LIF).
        config: :class:`TrainConfig`.
        method: the objective (default :class:`~frontends.training.robust.Standard`).
        quantizer: a :class:`~frontends.training.qat.Quantizer` of ``model`` for QAT.
        loss_fn: ``(scores [B, K], y [B]) -> scalar`` (default cross-entropy).
        encoder: custom ``(x [B, ...], T) -> [T, B, ...]`` replacing ``config.encoding``.
        ann: train a plain ANN (scores = ``model(x)``, no time steps), e.g. with
            :class:`~frontends.training.qcfs.QCFS` activations for conversion.
    """

    def __init__(self, model: nn.Module, config: TrainConfig | None = None, *,
                 method=None, quantizer=None, loss_fn: Callable | None = None,
                 encoder: Callable | None = None, ann: bool = False):
        self.config = config or TrainConfig()
        self.device = pick_device(self.config.device)
        self.model = model.to(self.device)
        self.method = method or Standard()
        self.quantizer = quantizer
        self.loss_fn = loss_fn or F.cross_entropy
        self.encoder = encoder
        self.ann = bool(ann)
        self.history = History()
        self.optimizer = self._make_optimizer()
        self.scheduler = self._make_scheduler()
        self.generator = torch.Generator().manual_seed(int(self.config.seed))

    # --- construction -------------------------------------------------------------------------
    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer == "adam":
            return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay)

    def _make_scheduler(self):
        c = self.config
        if c.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer,
                                                              T_max=max(1, c.epochs))
        if c.schedule == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, c.step_size, c.gamma)
        return None

    # --- forward --------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [B, ...] -> inputs [T, B, ...] as the chip will receive them."""
        T = int(self.config.timesteps)
        if self.encoder is not None:
            return self.encoder(x, T)
        if self.config.encoding in ("phase", "latency", "latency-log"):
            return self._chip_encode(x, T)
        if self.config.encoding == "rate":
            u = torch.rand((T,) + tuple(x.shape), device=x.device, dtype=x.dtype)
            s = (u < x.unsqueeze(0)).to(x.dtype)
            return x.unsqueeze(0) + (s - x.unsqueeze(0)).detach()
        if self.config.quantize_input:
            from frontends.training.qat import quantize_input
            x = quantize_input(x)
        return direct(x, T)

    def _chip_encode(self, x: torch.Tensor, T: int) -> torch.Tensor:
        """phase / latency codes: exactly the chip's payloads / 255 (compiler.encoding), with
        the straight-through gradient of :func:`compiler.encoding.encode_torch`; any model."""
        from compiler.encoding import encode_torch
        self._enc_calls = getattr(self, "_enc_calls", 0) + 1
        seed = int(self.config.seed) * 100003 + self._enc_calls
        p = encode_torch(self.config.encoding, x.clamp(0, 1), T, seed=seed)
        return p.to(device=x.device, dtype=x.dtype).reshape((T,) + tuple(x.shape))

    def training_record(self) -> dict:
        """What this run trains for (compiler/training_record.py): encoding, T and, with a
        quantizer, its bits/per_channel/clip. Exported models carry it (:meth:`export_onnx`)."""
        rec = {"encoding": self.config.encoding if self.encoder is None else "custom",
               "timesteps": int(self.config.timesteps)}
        if self.quantizer is not None:
            rec = dict(self.quantizer.training_record(rec["encoding"], rec["timesteps"]))
        return rec

    def export_onnx(self, path, input_shape=None) -> None:
        """Write the trained model as ONNX with its training record (with a quantizer: the QAT
        export, ShiftBN folded), so ``snnc compile`` needs no options."""
        if self.quantizer is not None:
            self.quantizer.export_onnx(path, encoding=self.config.encoding,
                                       timesteps=self.config.timesteps)
            return
        if input_shape is None:
            raise ValueError("export_onnx needs input_shape (C, H, W) without a quantizer")
        from frontends.onnx import export_onnx
        export_onnx(self.model.cpu(), path, input_shape=tuple(input_shape),
                    training=self.training_record())

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Output scores [B, classes] (differentiable) of images ``x`` on the current weights."""
        if self.ann:
            return self.model(x)
        return run_scores(self.model, self.encode(x))

    # --- checkpoints ----------------------------------------------------------------------------
    def state(self, epoch: int) -> dict:
        st = {
            "format": CHECKPOINT_FORMAT,
            "epoch": int(epoch),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generator": self.generator.get_state(),
            "history": self.history.to_dict(),
            "config": self.config.to_dict(),
            "signature": model_signature(self.model),
        }
        return st

    def save_checkpoint(self, path, epoch: int | None = None) -> Path:
        """Write a checkpoint atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(self.state(self.history.epochs_done if epoch is None else epoch), tmp)
        os.replace(tmp, path)
        return path

    def load_checkpoint(self, path, model_only: bool = False) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint` (``weights_only=True``);
        returns the number of epochs it holds."""
        st = torch.load(Path(path), map_location=self.device, weights_only=True)
        if not isinstance(st, dict) or st.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path}: not a snnc training checkpoint ({CHECKPOINT_FORMAT})")
        check_checkpoint(st, self.model, self.config, path,
                         force=self.config.resume == "force" or model_only)
        self.model.load_state_dict(st["model"])
        if model_only:
            return int(st["epoch"])
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scheduler is not None and st["scheduler"]:
            self.scheduler.load_state_dict(st["scheduler"])
        torch.set_rng_state(st["rng_cpu"].cpu())
        if st["rng_cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in st["rng_cuda"]])
        self.generator.set_state(st["generator"].cpu())
        self.history = History.from_dict(st["history"])
        return int(st["epoch"])

    # --- training -------------------------------------------------------------------------------
    def _step(self, xb: torch.Tensor, yb: torch.Tensor) -> dict:
        ctx = StepContext(self.model, xb, yb, self.scores, self.loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        if self.quantizer is not None:
            with self.quantizer.quantized():
                out = self.method(ctx)
        else:
            out = self.method(ctx)
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return out

    def fit(self, x, y, x_val=None, y_val=None, until: int | None = None) -> History:
        """Train up to ``config.epochs`` epochs (continuing a checkpoint when resuming).

        ``until``: stop after that epoch (the schedule still spans ``config.epochs``; a later
        ``fit`` with the same checkpoint continues), e.g. for staged or time-boxed runs.
        """
        c = self.config
        threads = torch.get_num_threads()
        if c.threads:
            torch.set_num_threads(int(c.threads))
        try:
            return self._fit(x, y, x_val, y_val, until)
        finally:
            torch.set_num_threads(threads)

    def _fit(self, x, y, x_val, y_val, until=None) -> History:
        c = self.config
        if c.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        start = 0
        if c.checkpoint and c.resume and Path(c.checkpoint).is_file():
            start = self.load_checkpoint(c.checkpoint)
        else:
            torch.manual_seed(int(c.seed))
            self.generator.manual_seed(int(c.seed))
        x = _tensor(x, torch.float32)
        y = _tensor(y, torch.long)
        stop = c.epochs if until is None else min(c.epochs, int(until))
        from compiler.progress import bar as _bar
        from compiler.progress import enabled as _enabled
        if c.checkpoint and start >= stop and start > 0:
            from compiler.progress import note
            note(f"train: {c.checkpoint} already holds {start} epoch(s) of this configuration "
                 f"(asked for {stop}); nothing to train (resume=False or another checkpoint "
                 f"path retrains)")
        steps = (len(x) + c.batch_size - 1) // c.batch_size
        for epoch in range(start, stop):
            t0 = time.perf_counter()
            self.model.train()
            perm = torch.randperm(len(x), generator=self.generator)
            total, correct, n = 0.0, 0, 0
            pb = _bar(steps, f"train epoch {epoch + 1}/{stop}", unit="step",
                      enabled=_enabled(bool(c.progress)))
            for i in range(0, len(perm), c.batch_size):
                idx = perm[i:i + c.batch_size]
                xb, yb = x[idx].to(self.device), y[idx].to(self.device)
                out = self._step(xb, yb)
                total += out["loss"] * len(idx)
                correct += int((out["scores"].argmax(1) == yb).sum())
                n += len(idx)
                pb.update(1)
                pb.set_postfix_str(f"loss {total / max(n, 1):.4f}")
            lr = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            val = float("nan")
            if x_val is not None:
                val = self.evaluate(x_val, y_val, quantized=self.quantizer is not None)
            h = self.history
            h.loss.append(total / max(n, 1))
            h.train_accuracy.append(correct / max(n, 1))
            h.val_accuracy.append(val)
            h.lr.append(lr)
            h.seconds.append(time.perf_counter() - t0)
            post = f"loss {h.loss[-1]:.4f}, train acc {h.train_accuracy[-1]:.3f}"
            if not math.isnan(val):
                post += f", val {val:.3f}"
            pb.set_postfix_str(post)
            pb.close()
            done = epoch + 1
            if c.checkpoint and (done % max(1, c.checkpoint_every) == 0 or done == stop):
                self.save_checkpoint(c.checkpoint, done)
        return self.history

    # --- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_scores(self, x, quantized: bool = False) -> torch.Tensor:
        """Scores [B, classes] on CPU in eval mode; ``quantized``: the QAT forward (float)."""
        was = self.model.training
        self.model.eval()
        x = _tensor(x, torch.float32)
        out = []
        try:
            for i in range(0, len(x), self.config.eval_batch):
                xb = x[i:i + self.config.eval_batch].to(self.device)
                if quantized and self.quantizer is not None:
                    with self.quantizer.quantized():
                        out.append(self.scores(xb).cpu())
                else:
                    out.append(self.scores(xb).cpu())
        finally:
            self.model.train(was)
        return torch.cat(out) if out else torch.zeros(0)

    def evaluate(self, x, y, quantized: bool = False, integer: bool = False) -> float:
        """Accuracy: float model, QAT float forward (``quantized``) or the integer model
        (``integer``: ``quantizer.run_int``, equal to the compiled chip; direct encoding)."""
        y = _tensor(y, torch.long).cpu().numpy()
        if integer:
            if self.quantizer is None:
                raise ValueError("integer evaluation needs a quantizer")
            xs = _tensor(x, torch.float32)
            r = self.quantizer.run_int(xs, self.config.timesteps, self.config.eval_batch)
            return float(np.mean(r.predictions == y))
        s = self.predict_scores(x, quantized)
        return float(np.mean(s.argmax(1).numpy() == y)) if len(y) else float("nan")


class CheckpointMismatchError(SnnError, ValueError):
    """A checkpoint written for another configuration or another model."""


def model_signature(model: nn.Module) -> dict:
    """The model's class and every state tensor's shape (what a checkpoint must match)."""
    return {"class": type(model).__name__,
            "tensors": {k: list(v.shape) for k, v in model.state_dict().items()}}


def check_checkpoint(st: dict, model: nn.Module, config: TrainConfig, path,
                     force: bool = False) -> None:
    """Refuse a checkpoint of another model (always) or another configuration (unless
    ``force``): never resume silently from something else."""
    sig = st.get("signature")
    mine = model_signature(model)
    if sig is not None and sig["tensors"] != mine["tensors"]:
        diff = [f"{k}: checkpoint {sig['tensors'].get(k)} vs model {mine['tensors'].get(k)}"
                for k in sorted(set(sig["tensors"]) | set(mine["tensors"]))
                if sig["tensors"].get(k) != mine["tensors"].get(k)]
        raise CheckpointMismatchError(
            f"checkpoint {path} was written for another model ({sig['class']}, "
            f"{len(diff)} tensor(s) differ: {'; '.join(diff[:3])}"
            f"{' ...' if len(diff) > 3 else ''})",
            "use another checkpoint path for this model, or delete the old checkpoint")
    if force:
        return
    old = dict(st.get("config") or {})
    new = config.to_dict()
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
               if k not in RUN_OPTIONS and old.get(k) != new.get(k)]
    if changed:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with other hyper-parameters ({', '.join(changed)});"
            f" resuming would silently continue (or skip) that run",
            "use another checkpoint path, delete it to retrain, or resume anyway with "
            "resume='force' (--resume force)")


def train(model: nn.Module, x, y, config: TrainConfig | None = None, **kw) -> History:
    """One-call form: ``Trainer(model, config, **kw).fit(x, y)``."""
    return Trainer(model, config, **kw).fit(x, y)


__all__ = ["Trainer", "TrainConfig", "History", "train", "pick_device", "CHECKPOINT_FORMAT",
           "CheckpointMismatchError", "model_signature", "check_checkpoint"]
