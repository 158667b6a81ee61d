"""``mhc-export diagnose``: the seed-003 width sweep as a table, JSON and a plot."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..core.atomic import atomic_write_text
from ..core.errors import MhcError
from ..core.preflight import STREAMS_HELP, check_memory, check_outputs, check_streams
from ..core.spec import MAX_STREAMS, SINKHORN_ITERS, num_mixes

DEFAULT_WIDTHS = [64, 128, 256, 512, 1024]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--widths", type=int, nargs="+", default=DEFAULT_WIDTHS, metavar="D",
                        help="hidden sizes d to sweep (default: %(default)s)")
    parser.add_argument("--streams", type=int, default=4, metavar="N",
                        help=f"number of streams n, 2..{MAX_STREAMS}: the ops' {STREAMS_HELP} "
                             "less n=1, where the comb is the constant 1 and there is nothing "
                             "to diagnose (default: %(default)s)")
    parser.add_argument("--iters", type=int, default=SINKHORN_ITERS, metavar="K",
                        help="Sinkhorn iterations (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=16, metavar="N",
                        help="random draws of weights and input per width (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="draw a PNG of the scaling and the Sinkhorn error (needs matplotlib)")


def _check(args: argparse.Namespace) -> None:
    # Checked here, before minutes of work, with the flag's name in the message.
    bad = [w for w in args.widths if w < 1]
    if bad:
        raise MhcError(f"--widths must be positive, got {bad}")
    if len(set(args.widths)) != len(args.widths):
        raise MhcError(f"--widths must be distinct, got {args.widths}")
    check_streams(args.streams)
    if args.streams < 2:
        raise MhcError("--streams 1: with one stream the Sinkhorn comb is the constant 1 and "
                       f"the diagnostics measure nothing; use 2..{MAX_STREAMS}")
    if args.iters < 1:
        raise MhcError(f"--iters must be >= 1, got {args.iters}")
    if args.samples < 1:
        raise MhcError(f"--samples must be >= 1, got {args.samples}")
    check_outputs({"--json": args.json, "--plot": args.plot})
    check_memory(sweep_bytes(args.streams, max(args.widths)),
                 f"the sweep at d={max(args.widths)}, n={args.streams}", "lower --widths")
    if args.plot is not None:
        from ..diagnostics.plot import load_pyplot

        load_pyplot()  # fail on a missing matplotlib now, not after the sweep


def sweep_bytes(streams: int, width: int) -> int:
    """Peak memory of one width of the sweep: 5.5x its float32 hc_fn measured (the
    Jacobians of the gates against x), 8x allowed."""
    return 8 * num_mixes(streams) * streams * width * 4


def run(args: argparse.Namespace) -> int:
    _check(args)
    from ..diagnostics import SweepConfig, format_sweep, run_sweep

    cfg = SweepConfig(widths=tuple(args.widths), streams=args.streams, iters=args.iters,
                      samples=args.samples, seed=args.seed)
    start = time.perf_counter()
    res = run_sweep(cfg)
    elapsed = time.perf_counter() - start
    print(format_sweep(res))
    print(f"\n({elapsed:.1f} s)")
    if args.json:
        data = res.to_dict()
        data["elapsed_s"] = elapsed
        atomic_write_text(args.json, json.dumps(data, indent=2, allow_nan=False) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if args.plot:
        from ..diagnostics.plot import plot_sweep

        plot_sweep(res, args.plot)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0
