"""A bounded soak of the demo app: ``tox -e soak`` (or ``python -m benchmarks.soak``).

The demo of ``development.ini`` (its factory and settings, with ``transient.url`` pointed
at a private ``redis-server`` on a free loopback port and a SQLite file of its own),
served by waitress on loopback, and 8 client threads, each a browser with its own cookies,
going round every page for about 60 s: sessions (a counter and flash messages), the
cached list and detail pages with an edit that invalidates them, the store (a subtree
set, an ``add`` under a tree lock), models (a task added, advanced and deleted) and the
module safe (a set, and the atomic view counter). Every POST carries the CSRF token and
follows its redirect, as a browser does.

It fails (exit status 1) on any request that did not answer 200 after its redirect, on a
connection left open or checked out when the load stops, and on memory that keeps
growing after the warm-up; it prints the figures either way. Not part of the test run.

Options: ``--seconds`` (default 60), ``--threads`` (8), ``--warmup`` (10 s).
"""

from __future__ import annotations

import argparse
import gc
import html
import http.cookiejar
import os
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

#: Largest growth of the process's resident memory from the end of the warm-up to the
#: end of the run, in MiB, and of its open file descriptors.
MAX_RSS_GROWTH_MIB = 8.0
MAX_FD_GROWTH = 4
#: Largest growth of the number of live objects (``gc.get_objects()``) after the warm-up:
#: a leak of Python objects shows there, undisturbed by the allocator's own growth.
MAX_OBJECT_GROWTH = 0.02
SAMPLE_EVERY = 5.0
DEVELOPMENT_INI = os.path.join(os.path.dirname(__file__), os.pardir, "development.ini")


def rss_mib() -> float:
    """This process's resident memory (Linux ``/proc``; the peak elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


@dataclass
class Stats:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    samples: list[tuple[float, float, int, int, int, int]] = field(default_factory=list)

    def record(self, page: str, seconds: float, error: str | None) -> None:
        with self.lock:
            self.requests[page] += 1
            self.latencies.setdefault(page, []).append(seconds)
            if error is not None:
                self.errors[f"{page}: {error}"] += 1


class Browser:
    """One visitor: its own cookies, following redirects, as a browser would."""

    _CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
    _TASK = re.compile(r'<td>task (\d+)\.\d+</td>.*?name="pk" value="([^"]+)"', re.DOTALL)

    def __init__(self, base: str, stats: Stats, number: int) -> None:
        self.base = base
        self.stats = stats
        self.number = number
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )
        self.csrf = ""

    def request(self, page: str, path: str, form: dict[str, Any] | None = None) -> str:
        data = None
        if form is not None:
            data = urllib.parse.urlencode({**form, "csrf_token": self.csrf}).encode()
        started = time.perf_counter()
        error: str | None = None
        body = ""
        try:
            with self.opener.open(self.base + path, data=data, timeout=10) as answer:
                body = answer.read().decode("utf-8")
                if answer.status != 200:
                    error = f"status {answer.status}"
        except urllib.error.HTTPError as exc:
            error = f"status {exc.code}"
        except OSError as exc:
            error = type(exc).__name__
        self.stats.record(page, time.perf_counter() - started, error)
        found = self._CSRF.search(body)
        if found:
            self.csrf = html.unescape(found.group(1))
        return body

    def round(self, i: int) -> None:
        n = self.number
        self.request("sessions", "/sessions")
        self.request("sessions", "/sessions/increment", {})
        self.request("sessions", "/sessions/flash", {"text": f"soak {i}", "kind": "info"})
        self.request("cache", "/cache")
        item = 1 + i % 3
        self.request("cache", f"/cache/{item}")
        if i % 4 == n % 4:  # an edit: the commit invalidates the list and the row
            self.request("cache", f"/cache/{item}", {"name": f"Item {i}", "price": i % 100})
        self.request("store", "/store")
        self.request(
            "store",
            "/store",
            {"action": "set", "path": f"t{n}.k{i % 20}", "value": f'{{"i": {i}, "n": [1, 2]}}'},
        )
        self.request("store", "/store", {"action": "add", "path": f"count{n}.hits"})
        page = self.request("models", "/models", {"action": "add", "title": f"task {n}.{i}"})
        mine = [pk for owner, pk in self._TASK.findall(page) if int(owner) == n]
        if mine:
            pk = html.unescape(mine[i % len(mine)])
            self.request("models", "/models", {"action": "advance", "pk": pk})
            if len(mine) > 10:
                self.request("models", "/models", {"action": "delete", "pk": pk})
        self.request("safe", "/safe")
        self.request("safe", "/safe/set", {"key": f"t{n}-{i % 20}", "value": f"v{i}"})


def load_demo(url: str, prefix: str, database: str) -> Any:
    from paste.deploy.loadwsgi import APP, loadcontext

    context = loadcontext(APP, f"config:{os.path.abspath(DEVELOPMENT_INI)}")
    context.local_conf.update(
        {"transient.url": url, "transient.key_prefix": prefix, "sqlalchemy.url": database}
    )
    return context.create()


def connected(client: redis.Redis) -> int:
    """Connections the server holds, the monitor's own excepted."""
    return int(client.info("clients")["connected_clients"]) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--warmup", type=float, default=10.0)
    args = parser.parse_args(argv)

    import logging

    import waitress.server
    import waitress.wasyncore

    from pyramid_transient.connection import get_manager
    from pyramid_transient.testing import RedisServer

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s [%(name)s] %(message)s")
    # waitress warns of every request that waits for a thread: 8 browsers on 8 threads
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    stats = Stats()
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        from pyramid_transient.safe import THROWAWAY_SERVERS

        THROWAWAY_SERVERS.add(("127.0.0.1", server.port))  # it persists nothing, on purpose
        app = load_demo(server.url, f"soak{uuid.uuid4().hex[:6]}", f"sqlite:///{tmp}/demo.db")
        manager = get_manager(app.registry)
        channels: dict[int, Any] = {}
        http_server = waitress.server.create_server(
            app, map=channels, host="127.0.0.1", port=0, threads=args.threads
        )
        serving = threading.Thread(target=http_server.run, daemon=True)
        serving.start()
        base = f"http://127.0.0.1:{http_server.effective_port}"  # type: ignore[union-attr]
        monitor = redis.Redis(host="127.0.0.1", port=server.port)
        baseline = connected(monitor)
        stop = threading.Event()

        def visit(number: int) -> None:
            browser = Browser(base, stats, number)
            i = 0
            while not stop.is_set():
                browser.round(i)
                i += 1

        started = time.monotonic()
        clients = [
            threading.Thread(target=visit, args=(n,), daemon=True) for n in range(args.threads)
        ]
        for thread in clients:
            thread.start()
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(min(SAMPLE_EVERY, max(0.0, args.seconds - elapsed)))
            with stats.lock:
                done = sum(stats.requests.values())
            stats.samples.append(
                (
                    time.monotonic() - started,
                    rss_mib(),
                    open_fds(),
                    connected(monitor),
                    done,
                    len(gc.get_objects()),  # live objects the collector tracks
                )
            )
        stop.set()
        for thread in clients:
            thread.join(30)
        ran = time.monotonic() - started
        idle = connected(monitor)  # the pools' idle connections: none checked out
        checked_out = sum(
            len(getattr(manager.get(name).connection_pool, "_in_use_connections", ()))
            for name in manager.names
        )
        # Closed from the server's own loop (its trigger runs the call there), which then
        # ends: closing its sockets from this thread would pull them from under select().
        http_server.task_dispatcher.shutdown()
        http_server.trigger.pull_trigger(lambda: waitress.wasyncore.close_all(channels))
        serving.join(10)
        manager.close()
        time.sleep(0.2)
        after_close = connected(monitor)
        monitor.close()

    total = sum(stats.requests.values())
    errors = sum(stats.errors.values())
    warm = [s for s in stats.samples if s[0] >= args.warmup] or stats.samples[-1:]
    rss_growth = warm[-1][1] - warm[0][1]
    fd_growth = warm[-1][2] - warm[0][2]
    object_growth = warm[-1][5] / warm[0][5] - 1
    peak_connections = max(s[3] for s in stats.samples)
    latencies = sorted(t for times in stats.latencies.values() for t in times)
    print(f"soak: {args.threads} browsers on the demo for {ran:.1f} s ({args.warmup:g} s warm-up)")
    print(f"  requests        {total} ({total / ran:.0f}/s), errors {errors}")
    for page, count in sorted(stats.requests.items()):
        times = sorted(stats.latencies[page])
        print(
            f"    {page:10} {count:7}  p50 {statistics.median(times) * 1000:6.1f} ms"
            f"  p99 {times[int(len(times) * 0.99) - 1] * 1000:6.1f} ms"
        )
    if latencies:
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        print(
            f"  latency         p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
            f"max {latencies[-1] * 1000:.0f} ms"
        )
    print("  samples         t (s), RSS (MiB), open fds, Redis connections, requests, objects")
    for t, rss, fds, conns, done, objects in stats.samples:
        print(f"    {t:6.1f} {rss:8.1f} {fds:5} {conns:5} {done:8} {objects:9}")
    print(
        f"  after warm-up   RSS {rss_growth:+.1f} MiB, fds {fd_growth:+d}, "
        f"objects {object_growth:+.1%}"
    )
    print(
        f"  connections     baseline {baseline}, peak {peak_connections}, idle at the end "
        f"{idle}, checked out {checked_out}, after close {after_close}"
    )
    failed = []
    if errors:
        failed.append(f"{errors} requests failed: {dict(stats.errors.most_common(5))}")
    if checked_out or after_close > baseline:
        failed.append(f"connections leaked: {checked_out} checked out, {after_close} left open")
    if rss_growth > MAX_RSS_GROWTH_MIB:
        failed.append(f"memory grew {rss_growth:.1f} MiB after the warm-up")
    if object_growth > MAX_OBJECT_GROWTH:
        failed.append(f"{object_growth:.1%} more live objects after the warm-up")
    if fd_growth > MAX_FD_GROWTH:
        failed.append(f"{fd_growth} more open files after the warm-up")
    for reason in failed:
        print(f"FAILED: {reason}")
    if not failed:
        print("OK: no errors, no leaked connections, memory flat after the warm-up")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
