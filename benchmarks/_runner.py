"""Shared helpers for the side-by-side benchmarks.

Each ``bench_*.py`` measures ours and a baseline *in the same run*, interleaved, and
prints a markdown table of throughput and ratios. Numbers from different runs or machines
are not comparable; ratios within one table are.

Run one: ``python benchmarks/bench_connection.py``; all: ``python benchmarks/run.py``.
Each starts its own redis-server on a free loopback port (or uses ``REDIS_URL``).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pyramid_transient.testing import RedisServer, RoundTripCounter


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """A real server for the benchmark: ``REDIS_URL`` or one of our own."""
    given = os.environ.get("REDIS_URL")
    if given:
        yield given
        return
    with RedisServer() as server:
        yield server.url


@dataclass
class Result:
    name: str
    ops_per_sec: float
    round_trips: float  # per operation


def measure(fn: Callable[[], object], *, seconds: float = 0.5, repeat: int = 5) -> float:
    """Operations per second of ``fn``: the median of ``repeat`` timed runs."""
    for _ in range(5):  # warm up connections and caches
        fn()
    rates = []
    for _ in range(repeat):
        n = 0
        start = time.perf_counter()
        deadline = start + seconds / repeat
        while True:
            fn()
            n += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        rates.append(n / (now - start))
    return statistics.median(rates)


def round_trips_of(fn: Callable[[], object]) -> float:
    fn()  # connect outside the count
    with RoundTripCounter() as rt:
        fn()
    return float(rt.count)


def compare(
    title: str, cases: dict[str, Callable[[], object]], *, seconds: float = 1.0, rounds: int = 9
) -> str:
    """Measure every case, interleaved over ``rounds`` rounds; return a markdown table.

    The first case is the baseline (ratio 1.00). Interleaving in short slices and taking
    the median of each case keeps the ratios fair on a machine whose load changes while
    the benchmark runs: every case sees the same mix of quiet and busy moments.
    """
    names = list(cases)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(rounds):
        for n in names:
            rates[n].append(measure(cases[n], seconds=seconds / rounds, repeat=1))
    results = [Result(n, statistics.median(rates[n]), round_trips_of(cases[n])) for n in names]
    base = results[0].ops_per_sec
    lines = [
        f"### {title}",
        "",
        "| case | ops/s | ratio to first | round trips/op |",
        "|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.ops_per_sec:,.0f} | {r.ops_per_sec / base:.2f} | {r.round_trips:g} |"
        )
    return "\n".join(lines) + "\n"
