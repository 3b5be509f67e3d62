"""Pass manager: run passes in order, verify after each, dump/stop on request, wrap errors."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from compiler.chip import ChipSpec
from compiler.errors import IRVerificationError, PassError, SnnError
from compiler.ir.graph import Graph
from compiler.ir.printer import dump
from compiler.ir.verify import verify

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pass:
    name: str                     # CLI name (--dump-after / --stop-after)
    run: Callable[..., Graph]
    ensures: str                  # stage verified after the pass


def run_pipeline(graph: Graph, spec: ChipSpec, passes, options: dict | None = None,
                 dump_after: set[str] | None = None, stop_after: str | None = None,
                 dump: Callable[[str, str], None] | None = None, check: bool = True,
                 progress: Callable[[str, int, int, float, Graph], None] | bool | None = None,
                 release: dict[str, str] | None = None):
    """Run ``passes`` on ``graph``. Returns (final graph, history: pass name -> graph).

    ``progress(name, i, n, seconds, graph)`` is called after each pass (CLI progress lines);
    ``progress=True``: a bar over the passes from compiler/progress.py (the Python API's form:
    a tqdm bar on a terminal, periodic lines elsewhere, silent when quiet).
    ``release``: {history entry: pass}: drop that intermediate graph from the history once the
    pass has run (the float lowered graph of a large network is GiBs; Program recomputes it)."""
    options = dict(options or {})
    names = [p.name for p in passes]
    for n in (dump_after or set()) | ({stop_after} if stop_after else set()):
        if n not in names:
            raise PassError(f"unknown pass '{n}'", f"passes are: {', '.join(names)}")
    history: dict[str, Graph] = {}
    done: list[str] = []
    if check and passes and graph.stage == "imported":
        # the input itself (NaN weights, bad attributes) is refused as the input's fault,
        # before any pass computes with it
        verify(graph, "imported", spec)
    pb = None
    if progress is True:
        from compiler import progress as _progress
        last = names.index(stop_after) + 1 if stop_after else len(names)
        pb = _progress.bar(last, "compile", unit="pass")
        progress = None
    try:
        return _run(graph, spec, passes, options, dump_after, stop_after, dump, check, progress,
                    release, history, done, pb)
    finally:
        if pb is not None:
            pb.close()


def _run(graph, spec, passes, options, dump_after, stop_after, dump, check, progress, release,
         history, done, pb):
    for p in passes:
        if pb is not None:
            pb.set_postfix_str(p.name)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            graph = p.run(graph, spec, history=history, **options)
            if check:
                verify(graph, p.ensures, spec)
        except IRVerificationError as e:
            raise PassError(f"pass '{p.name}' broke an invariant (after {done or 'nothing'}): "
                            f"{e.message}", e.hint) from e
        except SnnError:
            raise
        except Exception as e:  # an internal bug: name the pass, keep the cause
            raise PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}",
                            "rerun with --debug for the traceback and report it") from e
        log.info("pass %-16s %.3f s (cpu %.3f s)", p.name, time.perf_counter() - t0,
                 time.process_time() - c0)
        history[p.name] = graph
        done.append(p.name)
        for k, after in (release or {}).items():
            if after == p.name and k in history:
                history[k] = None
        if callable(progress):
            progress(p.name, len(done), len(passes), time.perf_counter() - t0, graph)
        if pb is not None:
            pb.update(1)
        if dump_after and p.name in dump_after and dump is not None:
            dump(p.name, _dump(graph))
        if stop_after == p.name:
            break
    return graph, history


def _dump(graph: Graph) -> str:
    return dump(graph)
