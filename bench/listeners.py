"""Listener hooks under gunicorn: what a ``before`` listener costs a request, and delivery.

``python -m bench.listeners [--quick] [--json PATH]`` (issue 13's bar: a request matching one
``before`` listener keeps ≥ 0.6x the unhooked requests/s with SQLite, ≥ 0.5x with Redis).

1. **Load.** Three gunicorn servers (sync workers, ``bench.listener_targets``): the same app
   ``PUT /data/{rest:path}`` (reads its body, stores nothing, answers 200 JSON) without hooks,
   with hooks on SQLite (a temporary file, WAL) and with hooks on Redis (a redis-server the
   bench starts on a free port; the row is skipped with a note without ``redis-server`` or
   the ``redis`` package). One ``before`` listener on ``/data`` delivers every PUT to an
   external receiver (gunicorn, one ``gthread`` worker, answering 200 and counting), so the
   deliveries run during the load as in production. Each round runs ``wrk -t1 -c<N>`` once
   per server, the order rotating every round; the ratio to plain is the median of the
   per-round ratios. The price of the durable enqueue, in µs of a worker per request, is
   ``(1/hooked - 1/plain) x workers``; it is also timed in process (``storage.enqueue`` of one
   entry, best and median of many). After each hooked run the bench reads the queue's length
   (copies not yet delivered: the deliveries lagging), then waits for it to drain before the
   next run, so that no server's backlog is delivered during another's run.
2. **Delivery.** With no load, N copies are queued directly with ``storage.enqueue`` into one
   queue, then into 16 queues; the servers' workers deliver them to the receiver. Copies/s is
   N ÷ the time from the enqueue to the receiver's last delivery (bounded wait); it includes
   the deliverer's poll (0.2 s) before it claims the queues.

Every process (gunicorn masters and their workers, redis-server) is stopped by its PID, also
on errors, KeyboardInterrupt and SIGTERM.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/listeners.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from .listener_targets import APPS, target
from .report import table
from .server import (
    HOST,
    Gunicorn,
    GunicornInfo,
    ServerError,
    find_wrk,
    free_ports,
    gunicorn_info,
    run_wrk,
    running,
    sigterm_as_exit,
)

Progress = Callable[[str], None]

#: The hooked request: its path, and the body wrk sends (about 200 bytes of JSON).
PATH = "/data/orders/17"
BODY = json.dumps(
    {"id": 17, "title": "two books", "lines": [{"sku": f"B-{n:04d}", "qty": n} for n in range(6)]}
)
LUA = (
    'wrk.method = "PUT"\n'
    f"wrk.body = {json.dumps(BODY)}\n"
    'wrk.headers["Content-Type"] = "application/json"\n'
)
#: The bar of issue 13: hooked requests/s ÷ plain requests/s.
BARS = {"sqlite": 0.6, "redis": 0.5}
#: The diagnostic servers (deliverers never started): the request path's price alone.
QUIET = ("sqlite_nodelivery", "redis_nodelivery")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LISTENER_ID = "bench"
LISTENER_QUEUE = "listener-hook-data+bench"
DELIVERY_QUEUES = (1, 16)


@dataclass(frozen=True)
class Config:
    """How long and how hard to drive the servers."""

    rounds: int = 5
    seconds: int = 3  # one wrk run; wrk takes whole seconds
    connections: int = 8
    workers: int = 2
    warmup_seconds: int = 1
    copies: int = 2000  # queued directly, per delivery run
    samples: int = 2000  # in-process enqueue timings per storage
    drain_timeout: float = 60.0  # seconds to wait for a queue to be delivered

    @classmethod
    def quick(cls) -> Config:
        return cls(rounds=2, seconds=1, copies=300, samples=300, drain_timeout=30.0)

    @classmethod
    def smallest(cls) -> Config:
        """One short round and a few copies: for the smoke test, numbers mean nothing."""
        return cls(rounds=1, seconds=1, copies=40, samples=20, drain_timeout=30.0)


@dataclass
class LoadRow:
    """One server's wrk runs (one per round), and what its listener's queue did."""

    rates: list[float | None] = field(default_factory=list)
    requests: list[int] = field(default_factory=list)
    errors: list[int] = field(default_factory=list)
    worker_cpu: list[float] = field(default_factory=list)  # µs per request, the server's workers
    receiver_cpu: list[float] = field(default_factory=list)  # µs per request, the receiver
    left: list[int] = field(default_factory=list)  # copies queued at the end of each run
    drain: list[float] = field(default_factory=list)  # seconds until the queue was empty

    @property
    def median(self) -> float | None:
        values = [rate for rate in self.rates if rate is not None]
        return statistics.median(values) if values else None


@dataclass
class DeliveryRow:
    """N copies queued at once into ``queues`` queues, and how fast they were delivered."""

    storage: str
    queues: int
    copies: int
    delivered: int = 0
    seconds: float | None = None  # from the enqueue to the last delivery
    first: float | None = None  # from the enqueue to the first delivery

    @property
    def rate(self) -> float | None:
        return self.copies / self.seconds if self.seconds else None


@dataclass
class Results:
    config: Config
    load: dict[str, LoadRow] = field(default_factory=dict)
    enqueue_us: dict[str, list[float]] = field(default_factory=dict)  # in process, per call
    delivery: list[DeliveryRow] = field(default_factory=list)
    gunicorn: str | None = None
    wrk: str | None = None
    redis: str | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def ratios(self, name: str) -> list[float]:
        """``name``'s requests/s ÷ plain's, per round both have a result."""
        hooked, plain = self.load.get(name), self.load.get("plain")
        if hooked is None or plain is None:
            return []
        return [
            a / b for a, b in zip(hooked.rates, plain.rates, strict=False) if a is not None and b
        ]

    def price_us(self, name: str) -> list[float]:
        """µs of a worker per hooked request above plain, per round: (1/h - 1/p) x workers."""
        hooked, plain = self.load.get(name), self.load.get("plain")
        if hooked is None or plain is None:
            return []
        workers = self.config.workers
        return [
            (1 / a - 1 / b) * workers * 1e6
            for a, b in zip(hooked.rates, plain.rates, strict=False)
            if a and b
        ]


# -- the processes -------------------------------------------------------------------------


class Receiver(Gunicorn):
    """The listeners' destination: ``bench.listener_targets:receiver`` on one gthread worker."""

    THREADS = 32

    def worker_options(self) -> list[str]:
        return ["--worker-class", "gthread", "--threads", str(self.THREADS), "--workers", "1"]

    def count(self) -> dict[str, Any]:
        status, body = _call(self.port, "GET", "/_count")
        if status != 200:
            raise ServerError(f"the receiver answered {status} to GET /_count")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def reset(self) -> None:
        _call(self.port, "POST", "/_reset")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes ``pids`` used so far (gone ones count 0)."""
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


@contextmanager
def receiver(info: GunicornInfo, logs: Path) -> Iterator[Receiver]:
    server = Receiver(target("receiver"), 1, logs / "receiver.log", info)
    try:
        server.launch(free_ports(1)[0])
        server.wait_ready(time.monotonic() + 30)
        yield server
    finally:
        server.stop()


def find_redis() -> str | None:
    """Why Redis cannot be benched (no redis-server, no redis package), or None."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the redis package is not installed (pip install 'workflowhttp[redis]')"
    return None


@contextmanager
def redis_server(directory: Path) -> Iterator[int]:
    """A redis-server on a free port of 127.0.0.1 (no persistence), stopped by its PID."""
    import redis

    executable = shutil.which("redis-server")
    assert executable is not None
    port = free_ports(1)[0]
    options = ["--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"]
    options += ["--dir", str(directory), "--logfile", str(directory / "redis.log")]
    process = subprocess.Popen(
        [executable, *options],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise ServerError(f"redis-server exited with {process.returncode}")
            try:
                with redis.Redis(host=HOST, port=port, socket_timeout=1) as client:
                    if client.ping():
                        break
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise ServerError("redis-server did not answer PING within 10 s")
            time.sleep(0.05)
        yield port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(5)
        if process.poll() is None:
            process.kill()
            process.wait(5)


def _call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# -- the storages, from the bench process --------------------------------------------------


def open_storage(url: str) -> Any:
    from workflowhttp.hooks.storage import open_storage as open_url

    storage = open_url(url)
    storage.open()
    return storage


def queued(storage: Any, queues: set[str] | None = None) -> int:
    """Copies waiting in ``queues`` (every queue when None)."""
    stats = storage.queue_stats()
    return sum(length for name, (length, _) in stats.items() if queues is None or name in queues)


def wait_drained(storage: Any, queues: set[str] | None, timeout: float) -> float | None:
    """Seconds until ``queues`` are empty, or None when they are not within ``timeout``."""
    started = time.monotonic()
    while queued(storage, queues):
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.05)
    return time.monotonic() - started


def sample_copy(url: str) -> bytes:
    """An encoded copy like the hooked request's (its headers, its body)."""
    from workflowhttp.hooks.delivery import Copy, encode_copy

    headers = [
        ("Host", f"{HOST}:8000"),
        ("User-Agent", "wrk"),
        ("Content-Type", "application/json"),
        ("X-Forwarded-For", HOST),
    ]
    copy = Copy(
        LISTENER_ID,
        "PUT",
        url,
        headers,
        BODY.encode(),
        HOST,
        f"{HOST}:8000",
        [LISTENER_QUEUE],
        30.0,
    )
    return bytes(encode_copy(copy))


def time_enqueue(url: str, data: bytes, samples: int) -> list[float]:
    """µs per ``storage.enqueue([Entry(...)])`` of one copy, ``samples`` times (plus a warm-up)."""
    from workflowhttp.hooks.storage import Entry

    storage = open_storage(url)
    try:
        entry = [Entry("bench-price", data)]
        for _ in range(20):
            storage.enqueue(entry)
        timings = []
        for _ in range(samples):
            started = time.perf_counter_ns()
            storage.enqueue(entry)
            timings.append((time.perf_counter_ns() - started) / 1000)
        return timings
    finally:
        storage.close()


# -- the run -------------------------------------------------------------------------------


def run(config: Config, progress: Progress) -> Results:
    started = time.perf_counter()
    results = Results(config)
    results.wrk = find_wrk()
    if results.wrk is None:
        results.skipped = "wrk is not installed (`apt-get install wrk`)"
        return results
    try:
        info = gunicorn_info()
    except ServerError as ex:
        results.skipped = str(ex)
        return results
    results.gunicorn = info.version
    with sigterm_as_exit(), tempfile.TemporaryDirectory(prefix="wfbench-listeners-") as tmp:
        folder = Path(tmp)
        why_not = find_redis()
        if why_not is not None:
            results.notes.append(f"Redis row skipped: {why_not}")
            _run(results, info, folder, None, progress)
        else:
            (folder / "redis").mkdir()
            with redis_server(folder / "redis") as port:
                results.redis = f"redis-server on 127.0.0.1:{port}"
                _run(results, info, folder, port, progress)
    results.wall_seconds = round(time.perf_counter() - started, 1)
    return results


def _run(
    results: Results, info: GunicornInfo, folder: Path, redis_port: int | None, progress: Progress
) -> None:
    config = results.config
    urls = {
        "sqlite": f"sqlite:///{folder / 'hooks.sqlite3'}",
        "sqlite_nodelivery": f"sqlite:///{folder / 'hooks-nodelivery.sqlite3'}",
    }
    if redis_port is not None:  # database 1 is the in-process timings'
        urls["redis"] = f"redis://{HOST}:{redis_port}/0"
        urls["redis_nodelivery"] = f"redis://{HOST}:{redis_port}/2"
    names = [name for name in APPS if name == "plain" or name in urls]
    script = folder / "put.lua"
    script.write_text(LUA)
    with receiver(info, folder) as sink:
        os.environ["WFBENCH_RECEIVER"] = sink.url("/")
        for name, url in urls.items():
            os.environ[f"WFBENCH_{name.upper()}"] = url
        progress(f"listeners: starting {len(names)} servers with {config.workers} workers")
        with running([target(n) for n in names], config.workers, folder, info) as servers:
            live: dict[str, Gunicorn] = {}
            for name, server in zip(names, servers, strict=True):
                if server.error is not None:
                    results.notes.append(f"{name}: not started, {server.error}")
                elif _prepared(results, name, server, sink):
                    live[name] = server
            storages = {name: open_storage(url) for name, url in urls.items() if name in live}
            try:
                _load(results, live, storages, sink, script, progress)
                wal = folder / "hooks.sqlite3-wal"
                if wal.exists():
                    results.notes.append(
                        f"sqlite: the servers' write-ahead log reached {wal.stat().st_size:,} "
                        "bytes during the load"
                    )
                _enqueue_prices(results, urls, sink, folder, progress)
                delivering = {n: s for n, s in storages.items() if n not in QUIET}
                _delivery(results, delivering, sink, progress)
            finally:
                for storage in storages.values():
                    storage.close()


def _prepared(results: Results, name: str, server: Gunicorn, sink: Receiver) -> bool:
    """Check the server answers the PUT; register (and check) the listener of a hooked one."""
    status, body = _call(server.port, "PUT", PATH, BODY.encode())
    if status != 200:
        results.notes.append(f"{name}: PUT {PATH} answered {status} {body[:200]!r}; skipped")
        return False
    if name == "plain":
        return True
    quiet = name in QUIET
    listener = {"destination": sink.url("/sink"), "methods": ["PUT"]}
    resource = f"/data/_hooks/listeners/http/{LISTENER_ID}"
    status, body = _call(server.port, "PUT", resource, json.dumps(listener).encode())
    if status != 200:
        results.notes.append(f"{name}: the listener's registration answered {status} {body!r}")
        return False
    time.sleep(0.5)  # the other worker loads it within its poll (0.2 s) or pub/sub
    sink.reset()
    for _ in range(4):  # both workers, most likely
        _call(server.port, "PUT", PATH, BODY.encode())
    if quiet:
        return True  # nothing is delivered; the queue's length is checked by _load
    deadline = time.monotonic() + 10
    while sink.count()["count"] < 4:
        if time.monotonic() > deadline:
            results.notes.append(f"{name}: the listener's copies did not arrive; skipped")
            return False
        time.sleep(0.05)
    return True


def _load(
    results: Results,
    live: dict[str, Gunicorn],
    storages: dict[str, Any],
    sink: Receiver,
    script: Path,
    progress: Progress,
) -> None:
    config, wrk = results.config, results.wrk
    assert wrk is not None
    queue = {LISTENER_QUEUE}
    progress(f"listeners: warming up ({config.warmup_seconds} s per server)")
    for name, server in list(live.items()):
        done = run_wrk(wrk, server.url(PATH), config.connections, config.warmup_seconds, script)
        if name in QUIET:
            if queued(storages[name], queue) < done.requests:
                results.notes.append(f"{name}: its requests queued no copies; skipped")
                del live[name]
        elif name in storages:
            wait_drained(storages[name], queue, config.drain_timeout)
    receiver_pids = sink.worker_pids()
    names = list(live)
    if not names:
        return
    for index in range(config.rounds):
        progress(f"listeners: round {index + 1}/{config.rounds}")
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            row = results.load.setdefault(name, LoadRow())
            workers = live[name].worker_pids()
            cpu = cpu_seconds(workers), cpu_seconds(receiver_pids)
            try:
                done = run_wrk(
                    wrk, live[name].url(PATH), config.connections, config.seconds, script
                )
            except ServerError as ex:
                results.notes.append(f"{name}, round {index + 1}: {ex}")
                row.rates.append(None)
                continue
            row.rates.append(done.requests_per_second)
            row.requests.append(done.requests)
            row.errors.append(done.errors)
            if done.errors:
                results.notes.append(
                    f"{name}, round {index + 1}: wrk counted {done.errors} errors "
                    f"(socket {done.socket_errors}, non-2xx {done.non_2xx})"
                )
            storage = storages.get(name)
            if storage is not None and name not in QUIET:
                row.left.append(queued(storage, queue))
                drained = wait_drained(storage, queue, config.drain_timeout)
                if drained is None:
                    results.notes.append(
                        f"{name}, round {index + 1}: the queue was not delivered within "
                        f"{config.drain_timeout:.0f} s"
                    )
                row.drain.append(drained if drained is not None else config.drain_timeout)
            # CPU over the run and the drain that followed: every copy's delivery included.
            if done.requests:
                used = cpu_seconds(workers) - cpu[0], cpu_seconds(receiver_pids) - cpu[1]
                row.worker_cpu.append(used[0] / done.requests * 1e6)
                row.receiver_cpu.append(used[1] / done.requests * 1e6)


def _enqueue_prices(
    results: Results, urls: dict[str, str], sink: Receiver, folder: Path, progress: Progress
) -> None:
    """Time one-copy enqueues in this process (into a queue nobody delivers)."""
    progress("listeners: timing storage.enqueue in process")
    data = sample_copy(sink.url("/sink/orders/17"))
    for name, url in urls.items():
        if name in QUIET:
            continue
        if name == "sqlite":
            url = f"sqlite:///{folder / 'price.sqlite3'}"  # not the servers' file
        else:
            url = url.rsplit("/", 1)[0] + "/1"  # another database: the servers never see it
        results.enqueue_us[name] = time_enqueue(url, data, results.config.samples)


def _delivery(
    results: Results,
    storages: dict[str, Any],
    sink: Receiver,
    progress: Progress,
) -> None:
    from workflowhttp.hooks.storage import Entry

    config = results.config
    for name, storage in storages.items():
        for count in DELIVERY_QUEUES:
            progress(f"listeners: delivery, {name}, {config.copies} copies into {count} queue(s)")
            row = DeliveryRow(name, count, config.copies)
            results.delivery.append(row)
            queues = [f"bench-{count}-{n:02d}" for n in range(count)]
            entries = [
                Entry(queues[n % count], sample_copy(sink.url(f"/sink/{n}")))
                for n in range(config.copies)
            ]
            sink.reset()
            started = time.monotonic()
            for at in range(0, len(entries), 100):
                storage.enqueue(entries[at : at + 100])
            deadline = started + config.drain_timeout
            while True:
                seen = sink.count()
                if seen["count"] >= config.copies or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            row.delivered = int(seen["count"])
            if row.delivered >= config.copies:
                row.seconds = seen["last"] - started
                row.first = seen["first"] - started
            else:
                results.notes.append(
                    f"delivery {name}, {count} queue(s): {row.delivered} of {config.copies} "
                    f"delivered within {config.drain_timeout:.0f} s"
                )
            # Left-overs (none expected) must not slow the next run down.
            wait_drained(storage, set(queues), config.drain_timeout)


# -- the report ----------------------------------------------------------------------------


def _spread(values: list[float], digits: int = 2, unit: str = "") -> str:
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.{digits}f}{unit}"
    return f"{median:.{digits}f}{unit} ({min(values):.{digits}f} to {max(values):.{digits}f})"


def _us(values: list[float]) -> str:
    return f"{statistics.median(values):.0f} µs" if values else ""


def markdown(results: Results) -> str:
    config = results.config
    lines = [
        f"## Listener hooks under gunicorn: {config.workers} sync workers, "
        f"`wrk -t1 -c{config.connections} -d{config.seconds}s`, {config.rounds} rounds",
        "",
    ]
    if results.skipped:
        return "\n".join([*lines, f"Skipped: {results.skipped}.", ""])
    lines += [
        f"gunicorn {results.gunicorn}, wrk at `{results.wrk}`, "
        f"{results.redis or 'no Redis'}, {results.wall_seconds} s, {os.cpu_count()} CPUs. "
        f"`PUT {PATH}` with a {len(BODY)}-byte JSON body; the hooked servers have one `before` "
        "listener on `/data` delivering to a gunicorn receiver. `ratio` is the median of the "
        "per-round ratios to plain (lowest and highest round in brackets); `price` is "
        "(1/hooked - 1/plain) x workers, µs of a worker per request; `enqueue` is one "
        f"`storage.enqueue([Entry])` timed in process, best / median of {config.samples}; "
        "`left` is the copies still queued when wrk stopped (median, max), `drain` the seconds "
        "until they were delivered (median); `worker CPU` and `receiver CPU` are the CPU time "
        "(user + system) of the server's workers and of the receiver over the run and its "
        "drain, per request (median). The `_nodelivery` rows are a diagnostic: the same "
        "hooks with the deliverers never started (copies stay queued), so their price is the "
        "request path's alone; on a machine whose few cores also run wrk and the receiver, "
        "the difference to the delivering rows is the deliveries' CPU.",
        "",
    ]
    header = ["server", "req/s", "ratio", "bar", "price", "enqueue", "left", "drain"]
    header += ["worker CPU", "receiver CPU"]
    rows = []
    for name in APPS:
        row = results.load.get(name)
        if row is None:
            continue
        median = row.median
        cells = [f"`{name}`", "—" if median is None else f"{median:,.0f}/s"]
        if name == "plain":
            cells += ["1", "", "", "", "", ""]
        else:
            ratios = results.ratios(name)
            bar = BARS.get(name)
            met = bool(ratios) and bar is not None and statistics.median(ratios) >= bar
            verdict = "diagnostic" if bar is None else f"≥ {bar}x {'met' if met else 'MISSED'}"
            timings = results.enqueue_us.get(name, [])
            cells += [
                _spread(ratios, 2, "x"),
                verdict,
                _spread(results.price_us(name), 0, " µs"),
                f"{min(timings):.0f} / {statistics.median(timings):.0f} µs" if timings else "",
                f"{statistics.median(row.left):.0f}, {max(row.left)}" if row.left else "",
                f"{statistics.median(row.drain):.2f} s" if row.drain else "",
            ]
        cells += [_us(row.worker_cpu), _us(row.receiver_cpu)]
        rows.append(cells)
    lines += table(header, "lrrlrrrrrr", rows)
    lines += [
        "",
        f"Delivery: copies queued at once with `storage.enqueue` (batches of 100), delivered by "
        f"the {config.workers} workers of the server with that storage (up to 8 queues at a "
        "time each) to the receiver, no load. `copies/s`: copies ÷ seconds from the enqueue "
        "to the last delivery (the deliverer's 0.2 s poll included); `first`: the first "
        "delivery's delay.",
        "",
    ]
    rows = []
    for item in results.delivery:
        rows.append(
            [
                f"`{item.storage}`",
                str(item.queues),
                f"{item.delivered}/{item.copies}",
                "—" if item.rate is None else f"{item.rate:,.0f}/s",
                "—" if item.first is None else f"{item.first * 1000:.0f} ms",
            ]
        )
    lines += table(["storage", "queues", "delivered", "copies/s", "first"], "lrrrr", rows)
    lines.append("")
    if results.notes:
        lines += ["**Notes**", "", *(f"- {note}" for note in results.notes), ""]
    return "\n".join(lines)


def as_json(results: Results) -> dict[str, Any]:
    config = results.config
    return {
        "config": config.__dict__,
        "gunicorn": results.gunicorn,
        "wrk": results.wrk,
        "redis": results.redis,
        "skipped": results.skipped,
        "load": {
            name: {
                "requests_per_second": row.rates,
                "requests": row.requests,
                "errors": row.errors,
                "worker_cpu_us_per_request": row.worker_cpu,
                "receiver_cpu_us_per_request": row.receiver_cpu,
                "queue_left": row.left,
                "drain_seconds": row.drain,
                "ratio_to_plain": results.ratios(name),
                "price_us": results.price_us(name),
            }
            for name, row in results.load.items()
        },
        "enqueue_us": {
            name: {"best": min(values), "median": statistics.median(values)}
            for name, values in results.enqueue_us.items()
            if values
        },
        "delivery": [item.__dict__ | {"rate": item.rate} for item in results.delivery],
        "notes": results.notes,
        "wall_seconds": results.wall_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.listeners", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 1 s, 300 copies")
    parser.add_argument("--json", type=Path, help="also write every number as JSON")
    options = parser.parse_args(argv)
    config = Config.quick() if options.quick else Config()

    def progress(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    results = run(config, progress)
    print(markdown(results))
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(as_json(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
