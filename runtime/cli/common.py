"""Helpers shared by the snnrun modes (runtime/cli/*): option parsing, the run context, the
bit-exactness check. Imports nothing of the lab."""

from __future__ import annotations

from dataclasses import dataclass, field

import click
import numpy as np

ENCODINGS = ["direct", "rate", "phase", "latency", "latency-log"]


@dataclass
class RunContext:
    """Everything a snnrun mode (plain run, noise sweep, attack) needs; params = all options."""

    image: object
    image_path: str
    dataset: object
    timesteps: int
    encoding: str
    seed: int
    batch: int
    workers: int | None
    as_json: bool
    report_dir: str | None
    plots: bool
    params: dict = field(default_factory=dict)


def parse_list(text: str | None, what: str) -> list[float]:
    """'0.1,0.2' or '2/255,8/255' -> floats; clear error on junk."""
    if not text:
        return []
    out = []
    for tok in text.split(","):
        tok = tok.strip()
        try:
            if "/" in tok:
                a, b = tok.split("/")
                out.append(float(a) / float(b))
            else:
                out.append(float(tok))
        except (ValueError, ZeroDivisionError) as e:
            raise click.BadParameter(
                f"{what}: '{tok}' is not a number or a fraction like 8/255") from e
    return out


def check_bit_exact(image, payloads, result, ref=None) -> tuple[bool, dict | None]:
    """Compare a recorded run with compiler.reference.run_int on image.unmap() (or with
    ``ref``, that reference result already computed); returns (ok, first divergence)."""
    from compiler import reference
    rq = ref if ref is not None else reference.run_int(
        image.unmap(), payloads, membrane_bits=image.spec.membrane_bits)
    for li, L in enumerate(image.layers):
        glob = image.layer_neurons(li)
        c_ok = np.array_equal(result.counts_all[:, glob], rq.counts[L["name"]])
        v_ok = np.array_equal(result.v_all[:, glob], rq.v_final[L["name"]])
        if not (c_ok and v_ok):
            diff = (result.counts_all[:, glob] != rq.counts[L["name"]]) | (
                result.v_all[:, glob] != rq.v_final[L["name"]])
            s, n = np.argwhere(diff)[0]
            return False, {"layer": L["name"], "sample": int(s), "neuron": int(n),
                           "runtime_count": int(result.counts_all[s, glob[n]]),
                           "reference_count": int(rq.counts[L["name"]][s, n]),
                           "runtime_v": int(result.v_all[s, glob[n]]),
                           "reference_v": int(rq.v_final[L["name"]][s, n])}
    return True, None


FIGURE_FORMATS = ["png", "pdf", "svg"]


def result_warnings(ctx, clean_accuracy, n=None, encoding=None, what="clean accuracy"):
    """The honesty warnings (runtime/lab/honesty.py) of a result of this run."""
    from runtime.lab.honesty import result_warnings as _rw
    return _rw(ctx.image, clean_accuracy=clean_accuracy,
               n=len(ctx.dataset.y) if n is None else n,
               encoding=ctx.encoding if encoding is None else encoding, what=what)


def echo_warnings(warnings) -> None:
    """Warnings on stderr (console form; JSON results carry them under 'warnings')."""
    for w in warnings or []:
        click.echo(f"warning: {w}", err=True)


def run_provenance(ctx, **seeds) -> dict:
    """Provenance (runtime/reports/provenance.py) of a snnrun result."""
    from runtime.reports.provenance import provenance
    p = ctx.params
    return provenance(image=ctx.image, image_path=ctx.image_path, model_path=p.get("source"),
                      seeds={"seed": ctx.seed, **seeds}, engine=p.get("engine") or "tick",
                      extra={"data": p.get("data")})


def figure_format(ctx) -> str:
    return (ctx.params.get("fmt") or "png").lower()
