"""snnrun noise mode: ``snnrun chip.bin --mismatch ... | --pcm-time ... | --bitflip ... |
--stuck-at ... | --dead-cores ... | --worst-case ... | --landscape | --certify ...`` (the
algorithms in runtime/lab/{noise,sweep,certify}.py, tables and figures in runtime/reports/noise.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import click
import numpy as np

from runtime.lab import noise
from runtime.lab.cluster import connect
from runtime.lab.sweep import accuracy, landscape, sweep, worst_case
from runtime.reports.noise import markdown_report, plot_report, text_report


def _parse_times(text: str | None) -> list[float]:
    if not text:
        return []
    return [noise.parse_time(t) for t in text.split(",") if t.strip()]


def main_noise(ctx) -> None:
    """The snnrun noise mode (runtime/cli/ dispatches here; options in ``ctx.params``)."""

    from compiler import encoding as enc
    from compiler.cliutil import echo_json, jsonable
    from runtime.cli.common import (
        echo_warnings,
        figure_format,
        parse_list,
        result_warnings,
        run_provenance,
    )

    P = ctx.params
    ds = ctx.dataset
    x = ds.x.reshape(len(ds.x), -1)
    y = np.asarray(ds.y)
    payloads = enc.encode(ctx.encoding, x, ctx.timesteps, seed=ctx.seed)
    samples = 100 if P.get("samples") is None else int(P["samples"])
    pga_steps = 10 if P.get("steps") is None else int(P["steps"])
    if samples < 1:
        raise click.BadParameter(f"must be >= 1, got {samples}", param_hint="--samples")
    seed = int(ctx.seed)
    progress = True   # compiler/progress.py: a bar on a terminal, periodic lines elsewhere
    mm = parse_list(P.get("mismatch"), "--mismatch")
    if any(v < 0 or v > 1 for v in mm):
        raise click.BadParameter(
            f"--mismatch levels are relative (sigma/|w|, 0.3 = 30 %), got "
            f"{','.join(f'{v:g}' for v in mm)}; give 0.3 for 30 %", param_hint="--mismatch")
    from compiler.params import parse_params
    on = parse_params(P.get("mismatch_params") or P.get("mismatch_on"), "--mismatch-params")
    gran = P.get("mismatch_granularity") or "cell"
    domain = P.get("mismatch_domain") or "digital"
    cluster = connect(P.get("ray_address"), progress=not ctx.as_json)
    if "leak" in on and (P.get("worst_case") or P.get("certify")):
        from compiler.errors import SimulationError
        raise SimulationError("--worst-case and --certify cover weights, bias and threshold, "
                              "not the leak", "drop leak from --mismatch-params for them")
    kw = dict(workers=ctx.workers, batch=ctx.batch, progress=progress,
              engine=P.get("engine") or "auto", device=P.get("device") or "cpu")
    timing = {}
    t0 = time.perf_counter()
    clean = accuracy(ctx.image, payloads, y, workers=ctx.workers, batch=ctx.batch)
    res = {"data": getattr(ds, "name", None) or P.get("data"), "n_test": int(len(y)),
           "timesteps": ctx.timesteps, "encoding": ctx.encoding, "seed": seed,
           "samples": samples, "clean_accuracy": clean,
           "classes": int(ctx.image.meta["output"]["neurons"]), "sweep": [], "options": {},
           "mismatch": {"granularity": gran, "params": list(on), "domain": domain},
           "preset": P.get("preset")}
    jobs = [("mismatch", parse_list(P.get("mismatch"), "--mismatch"),
             f"{domain}, per {gran}, on {'+'.join(on)}"),
            ("pcm", _parse_times(P.get("pcm_time")),
             "no GDC" if P.get("no_gdc") else "with GDC"),
            ("bitflip", parse_list(P.get("bitflip"), "--bitflip"),
             "crossbar + registers" if P.get("bitflip_registers") else "crossbar"),
            ("stuck-at", parse_list(P.get("stuck_at"), "--stuck-at"), "half at 0, half at 1"),
            ("dead-cores", parse_list(P.get("dead_cores"), "--dead-cores"), "")]
    for kind, levels, opts in jobs:
        if not levels:
            continue
        if kind == "dead-cores" and any(v != int(v) for v in levels):
            raise click.BadParameter("--dead-cores takes whole numbers of cores")
        t = time.perf_counter()
        res["sweep"] += sweep(ctx.image, payloads, y, kind, levels, samples, seed, domain=domain,
                              params=on, granularity=gran, gdc=not P.get("no_gdc"),
                              registers=bool(P.get("bitflip_registers")), cluster=cluster,
                              **kw)
        res["options"][kind] = opts
        timing[kind] = time.perf_counter() - t
    wc_levels = parse_list(P.get("worst_case"), "--worst-case")
    if wc_levels:
        t = time.perf_counter()
        from runtime.lab.twin import Twin
        tw = Twin(ctx.image, surrogate=P.get("surrogate") or "atan")
        wc_on = on
        rand = sweep(ctx.image, payloads, y, "mismatch", wc_levels, samples, seed,
                     domain="analog", params=wc_on, granularity=gran, cluster=cluster,
                     **kw)
        res["worst_case"] = []
        for z, rr in zip(wc_levels, rand):
            w = worst_case(ctx.image, payloads, y, z, steps=pga_steps,
                           seed=seed, twin=tw, workers=ctx.workers, progress=progress,
                           params=wc_on, granularity=gran,
                           project=P.get("worst_case_projection", True) is not False)
            w["random"] = {k: rr[k] for k in ("mean", "std", "min", "max", "n")}
            w["hurts_more"] = bool(w["accuracy"] <= rr["mean"])
            res["worst_case"].append(w)
        timing["worst-case"] = time.perf_counter() - t
    if P.get("landscape"):
        t = time.perf_counter()
        res["landscape"] = landscape(ctx.image, payloads, y, seed=seed, workers=ctx.workers,
                                     progress=progress)
        timing["landscape"] = time.perf_counter() - t
    cz = parse_list(P.get("certify"), "--certify")
    if cz:
        from runtime.lab.certify import certify
        t = time.perf_counter()
        res["certify"] = certify(ctx.image, payloads, y, cz, params=on, granularity=gran,
                                 arithmetic="float" if domain == "analog" else "digital")
        timing["certify"] = time.perf_counter() - t
    timing["total"] = time.perf_counter() - t0
    res["timing"] = timing
    if cluster is not None:
        res["ray"] = cluster.info()
    res["warnings"] = result_warnings(ctx, clean)
    res["provenance"] = run_provenance(ctx)
    res["image"] = ctx.image_path
    if ctx.report_dir:
        import json
        d = Path(ctx.report_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "robustness.json").write_text(json.dumps(jsonable(res), indent=2))
        (d / "robustness.md").write_text(markdown_report(res))
        files = [str(d / "robustness.json"), str(d / "robustness.md")]
        if ctx.plots:
            files += plot_report(d, res, fmt=figure_format(ctx))
        res["files"] = files
    if ctx.as_json:
        echo_json(res)
    else:
        click.echo(text_report(res))
        echo_warnings(res["warnings"])
        if res.get("files"):
            click.echo(f"\nreport written to {Path(res['files'][0]).parent}/")
