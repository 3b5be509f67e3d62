"""snnrun attack mode: ``snnrun chip.bin --attack fgsm|pgd|sda ...`` (options in runtime/cli, the
algorithms in runtime/lab/attacks.py, tables and figures in runtime/reports/attack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import echo_json, jsonable, nir_load_options
from compiler.errors import SnnError
from runtime.cli.common import parse_list
from runtime.lab.attacks import DEFAULT_EPS, SweepConfig, attack_sweep, float_graph_of, sda_run
from runtime.lab.cluster import connect
from runtime.reports.attack import (
    attack_caption,
    markdown_results,
    plot_accuracy_vs_eps,
    results_table,
)


def main_attack(ctx) -> None:
    """``snnrun chip.bin --attack fgsm|pgd|sda ...`` (see runtime/cli/ for the options)."""
    from runtime.cli.common import echo_warnings, figure_format, result_warnings, run_provenance

    p = ctx.params
    attack = p["attack"]
    eps = parse_list(p.get("eps"), "--eps") or list(DEFAULT_EPS)
    if any(e < 0 or e > 1 for e in eps):
        raise click.BadParameter("--eps values must lie in [0, 1] (e.g. 8/255)")
    surrogate = p.get("surrogate") or "atan"
    steps = 10 if p.get("steps") is None else int(p["steps"])
    eot = 1 if p.get("eot") is None else int(p["eot"])
    if steps < 1 or eot < 1:
        raise click.BadParameter("--steps and --eot must be >= 1")
    ds, img = ctx.dataset, ctx.image
    x = np.asarray(ds.x, np.float64)
    y = np.asarray(ds.y, np.int64)
    n_out = int(img.meta["output"]["neurons"])
    if y.size and int(y.max()) >= n_out:
        raise SnnError(f"labels of the data go up to {int(y.max())} but {ctx.image_path} has "
                       f"{n_out} outputs", "attack the image with the data it was trained for")
    if attack == "sda":
        from frontends.datasets import binarize_events
        evs = binarize_events(ds, ctx.timesteps, seed=ctx.seed)
        iters = int(p.get("sda_iters") or 10 * steps)
        if iters < 1:
            raise click.BadParameter("--sda-iters must be >= 1")
        out = sda_run(img, evs.x, evs.y, surrogate=surrogate, iters=iters, seed=ctx.seed,
                      workers=ctx.workers, name=evs.name)
    else:
        src = None
        if p.get("source"):
            src = float_graph_of(p["source"], img.spec, tuple(img.meta["input"]["shape"]),
                                 **nir_load_options(p["source"], p.get("dt"),
                                                    p.get("nir_convention"), p.get("cubalif")))
            n_src = int(np.prod(src.node(src.input_name).input_type))
            if n_src != img.n_inputs:
                raise SnnError(f"--source {p['source']} takes {n_src} inputs but the chip image "
                               f"takes {img.n_inputs}",
                               "attack the model the image was compiled from")
        cfg = SweepConfig(attack, tuple(eps), ctx.encoding, ctx.timesteps, surrogate,
                          p.get("alpha"), steps, eot, ctx.seed, workers=ctx.workers,
                          progress=True)
        cluster = connect(p.get("ray_address"), progress=not ctx.as_json)
        out = attack_sweep(img, x, y, cfg, src, cluster=cluster)
        if cluster is not None:
            out["ray"] = cluster.info()
        if src is not None:
            out["source"] = str(p["source"])
            out["level"] = "transfer"
    out["image"] = ctx.image_path
    out["preset"] = p.get("preset")
    clean = out["results"][0]["clean_accuracy"] if out.get("results") else None
    out["warnings"] = result_warnings(ctx, clean, n=out.get("n"))
    out["provenance"] = run_provenance(ctx)
    if ctx.report_dir:
        d = Path(ctx.report_dir)
        d.mkdir(parents=True, exist_ok=True)
        if ctx.plots and attack != "sda":
            fmt = figure_format(ctx)
            out["figure"] = plot_accuracy_vs_eps(
                [out], d / f"accuracy_vs_eps.{fmt}",
                title=f"{attack.upper()} on the chip ({out['level']} level)",
                caption=attack_caption(out, p.get("data")), chance=1.0 / n_out)
        (d / "attack.json").write_text(json.dumps(jsonable(out), indent=2))
        (d / "attack.md").write_text(markdown_results(out))
    if ctx.as_json:
        echo_json(out)
    else:
        click.echo(results_table(out))
        echo_warnings(out["warnings"])
        if ctx.report_dir:
            click.echo(f"\nreport written to {ctx.report_dir}/")
