"""snnrun: run a chip image on a dataset (cycle-level), check it, report it (docs/cli.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import (
    POSITIVE,
    SEED,
    TIMESTEPS,
    FiniteFloat,
    check_output,
    debug_option,
    echo_json,
    nir_options,
    run_cli,
)
from compiler.errors import SnnError
from runtime.cli.common import ENCODINGS, RunContext, check_bit_exact, parse_list  # noqa: F401
from runtime.cli.compare import compare_cmd
from runtime.cli.train import train_cmd
from snnc._version import __version__


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", default="digits", show_default=True,
              help="digits | npz:FILE | mnist:DIR | cifar10:DIR (test split).")
@click.option("--limit", type=POSITIVE, default=None, help="First N samples.")
@click.option("--timesteps", "-T", type=TIMESTEPS, default=None,
              help="Input steps (default: META).")
@click.option("--encoding", type=click.Choice(ENCODINGS), default=None,
              help="Input encoding (default: META).")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Seed for stochastic encodings.")
@click.option("--batch", default=256, show_default=True, type=POSITIVE,
              help="Samples per kernel call.")
@click.option("--workers", type=POSITIVE, default=None, help="Threads (default: all cores).")
@click.option("--check", is_flag=True, help="Check bit-exactness against compiler/reference.py.")
@click.option("--engine", type=click.Choice(["auto", "layer", "tick"]), default="auto",
              show_default=True,
              help="layer: exact time-batched engine; tick: cycle-level (per-tick latency, "
                   "link loads); auto: layer unless per-tick reports are needed.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Device of the layer engine.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--save-predictions", type=click.Path(dir_okay=False), default=None)
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json, report.md (and figures with --plots) to DIR.")
@click.option("--plots", is_flag=True, help="Draw figures into the --report directory.")
@click.option("--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png",
              show_default=True, help="Figure file format for --plots.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output on stderr.")
# --- device non-idealities (docs/robustness.md) ---
@click.option("--mismatch", default=None, help="Relative mismatch levels, e.g. 0.1,0.2,0.3.")
@click.option("--mismatch-domain", type=click.Choice(["analog", "digital"]), default="digital",
              show_default=True, help="Real-valued weights (analog) or re-quantized (digital).")
@click.option("--mismatch-granularity", type=click.Choice(["cell", "parameter"]), default="cell",
              show_default=True,
              help="One draw per crossbar cell, or per trained parameter (Büchel et al.).")
@click.option("--mismatch-params", default=None,
              help="Comma list of weights,bias,threshold,leak (or all) [default: weights,bias].")
@click.option("--mismatch-on", default=None,
              help="Old name of --mismatch-params (weights,thresholds,leak still accepted).")
@click.option("--preset", type=click.Choice(["buechel", "torchattacks", "pdsg"]), default=None,
              help="Reference defaults for options not given (docs/robustness.md, Defaults).")
@click.option("--pcm-time", default=None, help="PCM inference times, e.g. 1s,1h,1d,1y.")
@click.option("--no-gdc", is_flag=True, help="PCM without global drift compensation.")
@click.option("--bitflip", default=None, help="SRAM bit-flip rates, e.g. 1e-5,1e-4,1e-3.")
@click.option("--bitflip-registers", is_flag=True, help="Also flip neuron register bits.")
@click.option("--stuck-at", default=None, help="Stuck-at cell rates (half 0, half 1).")
@click.option("--dead-cores", default=None, help="Numbers of dead cores, e.g. 1,2,4.")
@click.option("--samples", default=100, show_default=True, type=POSITIVE,
              help="Chip instances per level.")
@click.option("--worst-case", default=None, help="Adversarial weight levels zeta (PGA).")
@click.option("--landscape", is_flag=True, help="Weight-loss landscape and flatness.")
@click.option("--certify", default=None, help="IBP certification at weight levels zeta.")
@click.option("--worst-case-projection/--no-worst-case-projection", default=True,
              show_default=True, help="Clip the worst-case search into the box (Büchel: no).")
# --- adversarial inputs (docs/attacks.md) ---
@click.option("--attack", type=click.Choice(["fgsm", "pgd", "sda"]), default=None)
@click.option("--eps", default=None, help="Attack strengths, e.g. 2/255,8/255,16/255.")
@click.option("--surrogate", type=click.Choice(["pdsg", "sigmoid", "atan", "triangle"]),
              default="atan", show_default=True)
@click.option("--source", default=None, help="Float source model for transfer attacks.")
@nir_options
@click.option("--steps", default=10, show_default=True, type=POSITIVE, help="PGD steps.")
@click.option("--alpha", default=None, type=FiniteFloat(positive=True),
              help="PGD step size (default eps/4).")
@click.option("--eot", default=1, show_default=True, type=POSITIVE,
              help="EOT samples for stochastic encodings.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="local",
              metavar="[local|ADDRESS]",
              help="Run the work units (sweep instances, attack chunks) on Ray: 'local' starts a "
                   "local instance, ADDRESS joins a cluster (docs/scale-out.md).")
@click.option("--sda-iters", type=click.IntRange(1, None), default=None,
              help="SDA generation iterations (default 10 x --steps; official code: 500).")
@click.version_option(__version__, "--version", prog_name="snnrun", message="%(prog)s %(version)s")
@debug_option
def main_run(image, data, limit, timesteps, encoding, seed, batch, workers, check, as_json,
             save_predictions, report_dir, plots, debug, **params):
    """Run IMAGE (chip.bin) on DATA with the cycle-level chip runtime.

    With --mismatch/--pcm-time/--bitflip/--stuck-at/--dead-cores/--worst-case/--landscape/
    --certify it evaluates device non-idealities over chip instances; with --attack it attacks
    the deployed network. Otherwise it runs, reports and (--check) verifies bit-exactness.
    `snnrun compare --help`: the seed papers' table forms (encodings x attack strength,
    quantization, algorithm- vs hardware-level attacks). `snnrun train --help`: fine-tune the
    deployed image on chip (FP16 shadow weights, federated learning across chips).
    """
    from compiler import encoding as enc
    from compiler.progress import set_quiet
    from frontends.datasets import check_labels, load_dataset
    from runtime.cli.common import echo_warnings, result_warnings, run_provenance
    from runtime.engines.tick import run_payloads
    from runtime.image import load
    from runtime.reports.run import run_table, write_report

    set_quiet(bool(params.get("quiet")))
    params["data"] = data
    if plots and not report_dir:
        raise click.UsageError("--plots needs --report DIR (figures are written there)")
    check_output(save_predictions, image, option="--save-predictions")
    check_output(report_dir, image, option="--report", folder=True)
    _apply_preset(params)
    img = load(image)
    ds = load_dataset(data, split="test", limit=limit)
    if int(np.prod(ds.x.shape[1:])) != img.n_inputs:
        raise SnnError(f"data '{data}' has inputs of shape {list(ds.x.shape[1:])} but {image} "
                       f"expects {img.meta['input']['shape']}",
                       "run the image on the dataset it was compiled for")
    check_labels(ds.y, int(img.meta["output"]["neurons"]), data, image)
    T = int(img.meta["timesteps"] if timesteps is None else timesteps)
    name = encoding or img.meta["encoding"]
    ctx = RunContext(img, image, ds, T, name, seed, batch, workers, as_json, report_dir, plots,
                     params)
    if params.get("attack"):
        from runtime.cli.attack import main_attack
        main_attack(ctx)
        return
    if _noise_mode(params):
        from runtime.cli.noise import main_noise
        main_noise(ctx)
        return
    payloads = enc.encode(name, ds.x.reshape(len(ds.x), -1), T, seed=seed)
    progress = len(ds.x) * T * max(img.n_neurons, 1) > 5e6
    res = run_payloads(img, payloads, batch=batch, workers=workers, record=check,
                       progress=progress, encoding=name, engine=params.get("engine") or "auto",
                       device=params.get("device") or "cpu", ticks=bool(plots))
    summary = {"accuracy": res.accuracy(ds.y)}
    summary.update(res.summary())
    summary["data"] = data
    summary["warnings"] = result_warnings(ctx, summary["accuracy"], what="accuracy")
    summary["provenance"] = run_provenance(ctx)
    if check:
        ok, first = check_bit_exact(img, payloads, res)
        summary["bit_exact"] = ok
        if first:
            summary["first_divergence"] = first
    if save_predictions:
        np.save(save_predictions, res.predictions)
    if report_dir:
        write_report(report_dir, summary, res, img, plots=plots, fmt=params.get("fmt") or "png")
    if as_json:
        echo_json(summary)
    else:
        click.echo(run_table(summary))
        echo_warnings(summary["warnings"])
        if report_dir:
            click.echo(f"\nreport written to {Path(report_dir)}/")
    if check and not summary["bit_exact"]:
        click.echo(f"snnrun: error: runtime diverges from the reference: "
                   f"{summary['first_divergence']}", err=True)
        sys.exit(4)


def _apply_preset(params: dict) -> None:
    """--preset: the reference values (compiler.params.PRESETS) for every option the user did
    not give on the command line; --mismatch-on is the old name of --mismatch-params."""
    from compiler.params import preset
    cctx = click.get_current_context()
    if params.get("mismatch_on"):
        if params.get("mismatch_params"):
            raise click.UsageError("give --mismatch-params or its old name --mismatch-on, "
                                   "not both")
        params["mismatch_params"] = params["mismatch_on"]
    if not params.get("preset"):
        return
    for k, v in preset(params["preset"]).items():
        src = cctx.get_parameter_source(k)
        if k == "mismatch_params" and cctx.get_parameter_source("mismatch_on") not in (
                None, click.core.ParameterSource.DEFAULT):
            continue
        if src in (None, click.core.ParameterSource.DEFAULT):
            params[k] = v


def _noise_mode(params: dict) -> bool:
    return any(params.get(k) for k in ("mismatch", "pcm_time", "bitflip", "stuck_at",
                                       "dead_cores", "worst_case", "landscape", "certify"))


SUBCOMMANDS: dict = {"compare": compare_cmd, "train": train_cmd}


def main() -> None:
    argv = sys.argv[1:]
    if argv and argv[0] in SUBCOMMANDS:
        cmd = SUBCOMMANDS[argv[0]]
        sys.argv = [sys.argv[0]] + argv[1:]
        run_cli(cmd, f"snnrun {argv[0]}")
    else:
        run_cli(main_run, "snnrun")


if __name__ == "__main__":
    main()
