"""``snnrun train``: fine-tune a deployed chip image on chip (options and dispatch; the
algorithm is runtime/lab/onchip.py, tables and figures runtime/reports/train.py;
docs/cli.md, docs/chip.md 'On-chip training')."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import numpy as np

from compiler.cliutil import POSITIVE, SEED, TIMESTEPS, debug_option, echo_json
from compiler.errors import SnnError
from runtime.cli.common import ENCODINGS

#: the top-level JSON keys the issue names (a contract), in this order, then extras
JSON_KEYS = ("accuracy_before", "accuracy_after", "epochs", "workers", "rounds", "cost")
COST_KEYS = ("cycles", "energy_uj", "dram_bytes", "fp_cycles", "bp_cycles", "wg_cycles",
             "gpu_dram_bytes_estimate")


def _layers(text: str | None):
    if not text:
        return None
    out = tuple(t.strip() for t in text.split(",") if t.strip())
    if not out:
        raise click.BadParameter("--layers: give a comma list of layer names")
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--data", default="digits", show_default=True,
              help="Training data: its train split trains, its test split measures accuracy "
                   "(digits | npz:FILE | mnist:DIR | cifar10:DIR).")
@click.option("--test-data", default=None, help="Evaluation data (default: --data, test split).")
@click.option("--limit", type=POSITIVE, default=None, help="First N training samples.")
@click.option("--test-limit", type=POSITIVE, default=None, help="First N evaluation samples.")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Tuned chip.bin to write.")
@click.option("--epochs", type=POSITIVE, default=5, show_default=True,
              help="Passes over the data (federated: rounds x --local-epochs).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True, max=1e3), default=0.002,
              show_default=True,
              help="Step size relative to each matrix's largest weight (cosine decay).")
@click.option("--momentum", type=click.FloatRange(0, 1, max_open=True), default=0.9,
              show_default=True)
@click.option("--batch", type=POSITIVE, default=32, show_default=True,
              help="Samples per training step.")
@click.option("--layers", default=None, help="Comma list of layers to train (default: all).")
@click.option("--rounding", type=click.Choice(["nearest", "stochastic"]), default="nearest",
              show_default=True, help="FP16 shadow -> crossbar integer rounding.")
@click.option("--surrogate", type=click.Choice(["triangle", "atan", "sigmoid", "pdsg"]),
              default="triangle", show_default=True)
@click.option("--workers", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Chips (federated workers).")
@click.option("--federated", is_flag=True, help="FedAvg across --workers chips.")
@click.option("--non-iid", is_flag=True, help="Shards by label (two label blocks per chip).")
@click.option("--local-epochs", type=POSITIVE, default=1, show_default=True,
              help="Epochs per round.")
@click.option("--mismatch", type=click.FloatRange(min=0, max=10), default=None,
              help="Train a chip instance with relative mismatch zeta (hardware in the loop).")
@click.option("--mismatch-on", default="weights", show_default=True,
              help="Comma list of weights,thresholds,leak.")
@click.option("--mismatch-domain", type=click.Choice(["digital", "analog"]), default="digital",
              show_default=True)
@click.option("--instance-seed", type=SEED, default=0, show_default=True,
              help="Seed of the chip instance.")
@click.option("--timesteps", "-T", type=TIMESTEPS, default=None,
              help="Input steps (default: META).")
@click.option("--encoding", type=click.Choice(ENCODINGS), default=None)
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seed of shuffling, shards, stochastic rounding and encodings.")
@click.option("--check", is_flag=True,
              help="Verify the written image bit-exact against compiler/reference.py.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--report", "report_dir", type=click.Path(file_okay=False), default=None,
              help="Write report.json and report.md (figures with --plots) to DIR.")
@click.option("--plots", is_flag=True, help="Accuracy-vs-round and cost figures (--report).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--ray", "ray_address", default=None, is_flag=False, flag_value="local",
              metavar="[local|ADDRESS]",
              help="--federated: run each round's chips as Ray work units ('local' or a "
                   "cluster ADDRESS; docs/scale-out.md).")
@debug_option
def train_cmd(image, data, test_data, limit, test_limit, output, epochs, lr, momentum, batch,
              layers, rounding, surrogate, workers, federated, non_iid, local_epochs, mismatch,
              mismatch_on, mismatch_domain, instance_seed, timesteps, encoding, seed, check,
              as_json, report_dir, plots, quiet, ray_address, debug):
    """Fine-tune IMAGE (chip.bin) on chip and write the tuned image to -o.

    Surrogate-gradient BPTT through the bit-exact twin of IMAGE (optionally a mismatch instance
    of it), FP16 shadow weights re-quantised to the crossbar's widths, a per-engine cost model
    (FP/BP/WG cycles, energy, DRAM bytes vs a GPU), and FedAvg across simulated chips with
    --workers K --federated. Accuracy before/after is measured with the cycle-level runtime.
    """
    from compiler import progress
    from compiler.backend import binfmt
    from frontends.datasets import load_dataset
    from runtime.image import load
    from runtime.lab.onchip import OnChipConfig, image_sections, train
    from runtime.reports.train import train_table, write_report

    if plots and not report_dir:
        raise click.UsageError("--plots needs --report DIR")
    if quiet:
        progress.set_quiet(True)
    out_path = Path(output)
    if out_path.resolve() == Path(image).resolve():
        raise SnnError(f"-o {output} would overwrite the image being trained",
                       "write the tuned image to a new file")
    img = load(image)
    tr = load_dataset(data, split="train", limit=limit)
    te = load_dataset(test_data or data, split="test", limit=test_limit)
    for ds, what in ((tr, data), (te, test_data or data)):
        if int(np.prod(ds.x.shape[1:])) != img.n_inputs:
            raise SnnError(f"data '{what}' has inputs of shape {list(ds.x.shape[1:])} but "
                           f"{image} expects {img.meta['input']['shape']}",
                           "train the image on the dataset it was compiled for")
    on = tuple(t.strip() for t in mismatch_on.split(",") if t.strip())
    cfg = OnChipConfig(epochs=epochs, lr=lr, momentum=momentum, batch=batch,
                       layers=_layers(layers), rounding=rounding, surrogate=surrogate,
                       workers=workers, federated=federated, non_iid=non_iid,
                       local_epochs=local_epochs, mismatch=mismatch, mismatch_on=on,
                       mismatch_domain=mismatch_domain, instance_seed=instance_seed, seed=seed,
                       timesteps=timesteps, encoding=encoding)
    cluster = None
    if ray_address is not None:
        if not federated:
            raise click.UsageError("--ray distributes federated workers: add --federated")
        from runtime.lab.cluster import connect
        cluster = connect(ray_address, progress=not as_json)
    tuned, rep = train(img, tr.x, tr.y, te.x, te.y, cfg, progress=True, cluster=cluster)
    if cluster is not None:
        rep["ray"] = cluster.info()
    rep["meta_source"] = tuned.meta["source"]
    binfmt.write(out_path, image_sections(tuned), tuned.spec_digest)
    written = load(out_path)                      # re-read: CRCs, tables, cross-references
    rep["output"] = str(out_path)
    rep["data"] = data
    if check:
        from compiler import encoding as enc
        from runtime.cli.common import check_bit_exact
        from runtime.engines.tick import run_payloads
        p = enc.encode(rep["encoding"], te.x.reshape(len(te.x), -1), rep["timesteps"], seed=seed)
        res = run_payloads(written, p, record=True, encoding=rep["encoding"])
        ok, first = check_bit_exact(written, p, res)
        rep["bit_exact"] = ok
        if first:
            rep["first_divergence"] = first
    ordered = {k: rep[k] for k in JSON_KEYS}
    ordered.update({k: v for k, v in rep.items() if k not in ordered})
    if report_dir:
        write_report(report_dir, ordered, plots=plots)
    if as_json:
        echo_json(ordered)
    else:
        click.echo(train_table(ordered))
        click.echo(f"\ntuned image written to {out_path}")
        if report_dir:
            click.echo(f"report written to {Path(report_dir)}/")
    if check and not rep["bit_exact"]:
        click.echo(f"snnrun train: error: the tuned image diverges from the reference: "
                   f"{rep['first_divergence']}", err=True)
        sys.exit(4)
