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
                 progress: bool | None = False):
    """Run ``passes`` on ``graph``. Returns (final graph, history: pass name -> graph).

    ``progress``: a bar over the passes (compiler/progress.py; None: on unless quiet)."""
    from compiler import progress as _progress
    options = dict(options or {})
    names = [p.name for p in passes]
    for n in (dump_after or set()) | ({stop_after} if stop_after else set()):
        if n not in names:
            raise PassError(f"unknown pass '{n}'", f"passes are: {', '.join(names)}")
    history: dict[str, Graph] = {}
    done: list[str] = []
    last = names.index(stop_after) + 1 if stop_after else len(names)
    pb = _progress.bar(last, "compile", unit="pass", enabled=_progress.enabled(progress))
    for p in passes:
        pb.set_postfix_str(p.name)
        t0 = time.perf_counter()
        try:
            graph = p.run(graph, spec, history=history, **options)
            if check:
                verify(graph, p.ensures, spec)
        except IRVerificationError as e:
            pb.close()
            raise PassError(f"pass '{p.name}' broke an invariant (after {done or 'nothing'}): "
                            f"{e.message}", e.hint) from e
        except SnnError:
            pb.close()
            raise
        except Exception as e:  # an internal bug: name the pass, keep the cause
            pb.close()
            raise PassError(f"pass '{p.name}' failed: {type(e).__name__}: {e}",
                            "rerun with --debug for the traceback and report it") from e
        log.info("pass %-16s %.3f s", p.name, time.perf_counter() - t0)
        pb.update(1)
        history[p.name] = graph
        done.append(p.name)
        if dump_after and p.name in dump_after and dump is not None:
            dump(p.name, _dump(graph))
        if stop_after == p.name:
            break
    pb.close()
    return graph, history


def _dump(graph: Graph) -> str:
    return dump(graph)
