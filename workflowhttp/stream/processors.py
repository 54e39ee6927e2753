"""Built-in stream processors: a JSON log line per request, and Prometheus metrics.

``LogProcessor`` needs nothing more. ``MetricsProcessor`` and :func:`metrics_endpoint` use the
``prometheus_client`` library (``pip install workflowhttp[prometheus]``). Under gunicorn with
several workers, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the workers
(prometheus_client's multiprocess mode): every worker then writes its samples there and the
endpoint, whichever worker serves it, adds them all up.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any

import msgspec

from ..proxy.events import TransactionEnded
from ..responses import Response
from ..routing import http
from .events import (
    HookDelivered,
    HookQueues,
    HooksChanged,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    StreamEvent,
    Traffic,
)

__all__ = ["LogProcessor", "MetricsProcessor", "metrics_endpoint"]

_encode = msgspec.json.Encoder().encode
# SECURITY: msgspec escapes CR, LF and the other C0 controls of a request's path in the JSON
# line; DEL, the C1 controls (NEL, U+0085, among them) and U+2028/U+2029 it leaves as they are,
# and some readers of logs take those for line breaks: escaped, a line stays one line.
_JSON_ESCAPES = {code: f"\\u{code:04x}" for code in (0x7F, *range(0x80, 0xA0), 0x2028, 0x2029)}


class LogProcessor:
    """Log one JSON line per finished request on the ``workflowhttp.access`` logger.

    The line holds the request id, method, path, route, status, duration in ms, time per
    state in ms, bytes in and out, the client address, and the error of a failed request.
    The library configures no logging: attach a handler to ``workflowhttp.access``.
    """

    events = (RequestStarted, RequestFailed, Traffic, RequestFinished)

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("workflowhttp.access")
        self.level = level
        self._pending: dict[str, dict[str, Any]] = {}

    def process(self, event: StreamEvent) -> None:
        if isinstance(event, RequestStarted):
            self._pending[event.request_id] = {"client": event.client}
        elif isinstance(event, Traffic):
            self._line(event.request_id).update(bytes_in=event.bytes_in, bytes_out=event.bytes_out)
        elif isinstance(event, RequestFailed):
            self._line(event.request_id)["error"] = event.error
        elif isinstance(event, RequestFinished):
            line = self._pending.pop(event.request_id, {})
            record = {
                "request_id": event.request_id,
                "method": event.method,
                "path": event.path,
                "route": event.route,
                "status": event.status,
                "duration_ms": round(event.duration * 1000, 3),
                "states_ms": {k: round(v * 1000, 3) for k, v in event.states.items()},
                **line,
            }
            if self.logger.isEnabledFor(self.level):
                text = _encode(record).decode()
                if not text.isprintable():  # PERF: the usual line is printable as it is
                    text = text.translate(_JSON_ESCAPES)
                self.logger.log(self.level, text)

    def _line(self, request_id: str) -> dict[str, Any]:
        return self._pending.setdefault(request_id, {})

    def shutdown(self) -> None:
        self._pending.clear()


class MetricsProcessor:
    """Count requests and time them, by route and status, and time each state (Prometheus).

    Metrics (in ``registry``, default prometheus_client's global one):
    ``workflowhttp_requests_total{method,route,status}``,
    ``workflowhttp_request_duration_seconds{method,route,status}`` (histogram: a 500 that
    failed fast does not hide among the 200s),
    ``workflowhttp_state_duration_seconds{state}`` (histogram),
    ``workflowhttp_request_failures_total{route}``, and for the proxy
    ``workflowhttp_upstream_requests_total{endpoint,status}`` (every transaction: ``forged``
    is ``"true"`` for one a listener answered) and
    ``workflowhttp_upstream_duration_seconds{endpoint}`` (until the upstream's headers came);
    a hooked request is a transaction of endpoint ``hook:<resource>``, and
    ``workflowhttp_hooks_registered{kind}`` is a gauge of the hooks a worker applies.
    Unmatched requests have route ``""``.

    All shards share the metrics, which prometheus_client makes thread-safe; they are created
    once per registry.
    """

    events = (
        RequestFailed,
        RequestFinished,
        TransactionEnded,
        HooksChanged,
        HookDelivered,
        HookQueues,
    )
    # The metric families of each registry, made once: every shard's processor shares them.
    _families: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
    _families_lock = threading.Lock()

    def __init__(self, registry: Any = None) -> None:
        from prometheus_client import REGISTRY

        registry = registry if registry is not None else REGISTRY
        with self._families_lock:  # shards make their processors at the same moment
            families = self._families.get(registry)
            if families is None:
                families = self._families[registry] = self._make_families(registry)
        self.requests: Any = families[0]
        self.durations: Any = families[1]
        self.states: Any = families[2]
        self.failures: Any = families[3]
        self.upstream_requests: Any = families[4]
        self.upstream_durations: Any = families[5]
        self.hooks: Any = families[6]
        self.deliveries: Any = families[7]
        self.delivery_durations: Any = families[8]
        self.queue_lengths: Any = families[9]
        self._queues: set[str] = set()
        self._failed: set[str] = set()

    @staticmethod
    def _make_families(registry: Any) -> tuple[Any, ...]:
        from prometheus_client import Counter, Gauge, Histogram

        return (
            Counter(
                "workflowhttp_requests_total",
                "Requests answered, by method, route and status.",
                ["method", "route", "status"],
                registry=registry,
            ),
            Histogram(
                "workflowhttp_request_duration_seconds",
                "Time from the start of a request to the end of its body, by method, route "
                "and status.",
                ["method", "route", "status"],
                registry=registry,
            ),
            Histogram(
                "workflowhttp_state_duration_seconds",
                "Time spent in each workflow state.",
                ["state"],
                buckets=(1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.1, 1.0),
                registry=registry,
            ),
            Counter(
                "workflowhttp_request_failures_total",
                "Requests whose answer an exception decided, by route.",
                ["route"],
                registry=registry,
            ),
            Counter(
                "workflowhttp_upstream_requests_total",
                "Proxied transactions, by proxy endpoint, status and whether forged.",
                ["endpoint", "status", "forged"],
                registry=registry,
            ),
            Histogram(
                "workflowhttp_upstream_duration_seconds",
                "Time until the upstream's status and headers arrived, by proxy endpoint.",
                ["endpoint"],
                registry=registry,
            ),
            Gauge(
                "workflowhttp_hooks_registered",
                "Hooks the worker applies, by kind (route).",
                ["kind"],
                registry=registry,
                multiprocess_mode="max",
            ),
            Counter(
                "workflowhttp_hook_deliveries_total",
                "Listener hooks' copies tried, by queue and outcome (delivered, retried, "
                "given_up, expired).",
                ["queue", "outcome"],
                registry=registry,
            ),
            Histogram(
                "workflowhttp_hook_delivery_seconds",
                "Time a delivery of a listener hook's copy took, by queue.",
                ["queue"],
                registry=registry,
            ),
            Gauge(
                "workflowhttp_hook_queue_length",
                "Copies waiting in each listener hook's queue.",
                ["queue"],
                registry=registry,
                multiprocess_mode="mostrecent",
            ),
        )

    def process(self, event: StreamEvent) -> None:
        if isinstance(event, RequestFailed):
            self._failed.add(event.request_id)
        elif isinstance(event, RequestFinished):
            route = event.route or ""
            status = str(event.status)
            self.requests.labels(event.method, route, status).inc()
            self.durations.labels(event.method, route, status).observe(event.duration)
            for state, seconds in event.states.items():
                self.states.labels(state).observe(seconds)
            if event.request_id in self._failed:
                self._failed.discard(event.request_id)
                self.failures.labels(route).inc()
        elif isinstance(event, TransactionEnded):
            forged = "true" if event.forged else "false"
            self.upstream_requests.labels(event.endpoint, str(event.status), forged).inc()
            if event.upstream_seconds is not None:
                self.upstream_durations.labels(event.endpoint).observe(event.upstream_seconds)
        elif isinstance(event, HooksChanged):
            self.hooks.labels(event.kind).set(event.count)
        elif isinstance(event, HookDelivered):
            self.deliveries.labels(event.queue, event.outcome).inc()
            if event.outcome != "expired":
                self.delivery_durations.labels(event.queue).observe(event.seconds)
        elif isinstance(event, HookQueues):
            for queue in self._queues - event.lengths.keys():
                self.queue_lengths.labels(queue).set(0)  # emptied since the last report
            for queue, length in event.lengths.items():
                self.queue_lengths.labels(queue).set(length)
            self._queues = set(event.lengths)

    def shutdown(self) -> None:
        self._failed.clear()


def metrics_endpoint(path: str = "/metrics", registry: Any = None) -> Any:
    """Return a route function serving the metrics in Prometheus' text format.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, it collects every worker's samples from there.
    Add it to the app's controllers: ``App(controllers=[..., metrics_endpoint()])``.
    """
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        generate_latest,
    )
    from prometheus_client.multiprocess import MultiProcessCollector

    def metrics() -> Response:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            collected = CollectorRegistry()
            MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        else:
            collected = registry if registry is not None else REGISTRY
        return Response(generate_latest(collected), content_type=CONTENT_TYPE_LATEST)

    return http.GET(path).name("metrics").description("Prometheus metrics")(metrics)
