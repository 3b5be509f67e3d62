"""Shared CLI plumbing for snnc and snnrun: SnnError -> clean message + exit code, --debug."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import traceback
from pathlib import Path

import click
import numpy as np

from compiler.chip import MAX_TIMESTEPS
from compiler.errors import SnnError

# --- option types: every numeric option is range-checked by click (exit 2, naming the option)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)
SEED = click.IntRange(0, 2**32 - 1)
TIMESTEPS = click.IntRange(1, MAX_TIMESTEPS)
CHIPS = click.IntRange(1, 0xFFFF)


class FiniteFloat(click.ParamType):
    """A float that is finite (no nan/inf) and, optionally, strictly positive or in [lo, hi]."""

    name = "float"

    def __init__(self, positive: bool = False, lo: float | None = None,
                 hi: float | None = None):
        self.positive, self.lo, self.hi = positive, lo, hi

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value):
            v = value
        else:
            try:
                v = float(value)
            except (TypeError, ValueError):
                self.fail(f"'{value}' is not a number", param, ctx)
        if not math.isfinite(v):
            self.fail(f"{value} is not a finite number", param, ctx)
        if self.positive and v <= 0:
            self.fail(f"{value} must be > 0", param, ctx)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            self.fail(f"{value} is not in [{self.lo}, {self.hi}]", param, ctx)
        return v


class ShapeType(click.ParamType):
    """'C,H,W' -> a tuple of positive integers."""

    name = "shape"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            dims = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"'{value}' is not a comma-separated list of integers like 1,28,28",
                      param, ctx)
        if not 1 <= len(dims) <= 8 or min(dims) < 1 or max(dims) > 1 << 24:
            self.fail(f"'{value}': expected 1 to 8 dimensions, each in 1..{1 << 24}", param,
                      ctx)
        return dims


def check_output(path, *inputs, option: str = "-o/--output", folder: bool = False) -> None:
    """Refuse an output that is one of the inputs (it would destroy it) or whose folder is
    missing, before any work is done. ``folder``: the output is a directory (created if its
    parent exists)."""
    if path is None:
        return
    out = Path(path)
    for src in inputs:
        if src is None:
            continue
        same = False
        try:
            same = out.exists() and Path(src).exists() and os.path.samefile(out, src)
        except OSError:
            pass
        if same or out.resolve() == Path(src).resolve():
            raise click.BadParameter(f"'{path}' is also an input ({src}); writing it would "
                                     "destroy the input", param_hint=option)
    parent = out.resolve().parent if not folder else out.resolve().parent
    if not parent.is_dir():
        raise click.BadParameter(f"the folder '{parent}' of '{path}' does not exist",
                                 param_hint=option)
    if out.is_dir() and not folder:
        raise click.BadParameter(f"'{path}' is a directory, expected a file path",
                                 param_hint=option)


def run_cli(group: click.Group, prog: str) -> None:
    """Invoke a click group; errors print without traceback unless --debug is in argv."""
    debug = "--debug" in sys.argv
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s")
    try:
        group.main(prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except SnnError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"{prog}: error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - never show a raw traceback to users
        if debug:
            traceback.print_exc()
        click.echo(f"{prog}: internal error: {type(e).__name__}: {e}\n"
                   f"Hint: rerun with --debug for the traceback and report it", err=True)
        sys.exit(3)


def jsonable(o):
    """Plain JSON types (numpy -> Python, non-finite floats -> None)."""
    return _clean(o)


def _clean(o):
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, np.ndarray):
        return _clean(o.tolist())
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def echo_json(obj) -> None:
    click.echo(json.dumps(_clean(obj), indent=2, sort_keys=False))


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in r] for r in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w)  # noqa: E731
                               for i, (c, w) in enumerate(zip(r, widths)))
    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def debug_option(f):
    return click.option("--debug", is_flag=True, help="Show tracebacks on errors.")(f)


NIR_CONVENTIONS = ["nir", "snnc", "snntorch", "snntorch-zero", "norse", "sinabs", "rockpool",
                   "spyx", "spyx-0", "lava"]


def nir_options(f, dt: bool = True):
    """NIR import options (frontends/nir/) for every command that accepts a model file."""
    opts = [
        click.option("--dt", default=None, type=FiniteFloat(positive=True),
                     help="NIR: time step (default: the file's metadata or the convention's)."),
    ] if dt else []
    opts += [
        click.option("--nir-convention", default=None, type=click.Choice(NIR_CONVENTIONS),
                     help="NIR: the framework that wrote the file (reset, spike predicate, dt)."),
        click.option("--cubalif", default="error", show_default=True,
                     type=click.Choice(["error", "lif"]),
                     help="NIR CubaLIF: refuse, or drop the synaptic filter (lossy)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def nir_load_options(path, dt=None, nir_convention=None, cubalif="error") -> dict:
    """load_model keyword arguments for ``path``: the NIR options for a .nir file, else none."""
    from pathlib import Path
    if path is None or Path(str(path)).suffix.lower() != ".nir":
        return {}
    return {"dt": dt, "nir_convention": nir_convention, "cubalif": cubalif or "error"}


def quiet_option(f):
    """-q/--quiet: no progress output (compiler/progress.py set_quiet)."""
    def cb(ctx, param, value):
        from compiler.progress import set_quiet
        if value or ctx.parent is None:     # a subcommand's default must not undo `snnc -q`
            set_quiet(bool(value))
        return value
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True,
                        callback=cb, help="No progress output on stderr.")(f)
