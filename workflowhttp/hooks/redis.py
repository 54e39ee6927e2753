"""Hooks on Redis (the ``redis`` extra): one registry shared by every machine.

Layout, under a key prefix (default ``workflowhttp:hooks:``):

* ``<prefix>hook:<kind>:<id>:<resource>``: a record's JSON, with a key TTL when the hook
  expires (Redis sweeps it);
* ``<prefix>index``: a sorted set of those keys scored by expiry (``+inf`` for never), so a
  full reload reads the live keys with one range query and one ``MGET``, never a ``SCAN``;
* ``<prefix>changes``: the pub/sub channel a write announces itself on. Every worker listens
  and reloads within milliseconds; a full reload every ``reload_interval`` heals a message
  missed while a connection was down.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from typing import Any

import msgspec
import redis
from redis.exceptions import RedisError

from .storage import Record, StorageUnavailable

__all__ = ["RedisStorage"]


class _Stored(msgspec.Struct, array_like=True):
    kind: str
    resource: str
    id: str
    spec: msgspec.Raw
    expires_at: float | None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


class RedisStorage:
    """Hooks in Redis, shared by every worker of every machine.

    Args:
        url: ``redis://host:port/db`` (``rediss://`` for TLS, ``unix:///path``).
        prefix: The prefix of every key and of the channel.
        socket_timeout: Seconds a command may take before the storage counts as down.
    """

    def __init__(
        self, url: str, *, prefix: str = "workflowhttp:hooks:", socket_timeout: float = 2.0
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self._index = f"{prefix}index"
        self._channel = f"{prefix}changes"
        self._client: redis.Redis | None = None
        self._pubsub: redis.client.PubSub | None = None
        self._lock = threading.Lock()
        self._closed = threading.Event()

    # -- connections ----------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.socket_timeout,
                        socket_connect_timeout=self.socket_timeout,
                        health_check_interval=30,
                    )
        return client

    def open(self) -> None:
        # Connections are made on first use, in the worker (never before gunicorn's fork).
        self._closed.clear()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            pubsub, self._pubsub = self._pubsub, None
            client, self._client = self._client, None
        for closable in (pubsub, client):
            if closable is not None:
                with contextlib.suppress(RedisError):
                    closable.close()

    # -- records --------------------------------------------------------------------------

    def _key(self, kind: str, resource: str, id: str) -> str:
        return f"{self.prefix}hook:{kind}:{id}:{resource}"

    def put(self, record: Record) -> None:
        key = self._key(record.kind, record.resource, record.id)
        value = _encode(
            _Stored(
                record.kind, record.resource, record.id, msgspec.Raw(record.spec), record.expires_at
            )
        )
        expires_at = record.expires_at
        try:
            pipe = self._redis().pipeline(transaction=True)
            if expires_at is None:
                pipe.set(key, value)
                pipe.zadd(self._index, {key: math.inf})
            else:
                pipe.set(key, value, pxat=max(1, int(expires_at * 1000)))
                pipe.zadd(self._index, {key: expires_at})
            pipe.publish(self._channel, key)
            pipe.execute()
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def delete(self, kind: str, resource: str, id: str) -> bool:
        key = self._key(kind, resource, id)
        try:
            pipe = self._redis().pipeline(transaction=True)
            pipe.delete(key)
            pipe.zrem(self._index, key)
            pipe.publish(self._channel, key)
            deleted, _, _ = pipe.execute()
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        return bool(deleted)  # an expired key is gone already: nothing was registered

    def records(self) -> list[Record]:
        now = time.time()
        try:
            client = self._redis()
            keys: list[Any] = client.zrangebyscore(self._index, now, "+inf")
            values: list[Any] = client.mget(keys) if keys else []
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        found = []
        for key, value in zip(keys, values, strict=True):
            if value is None:  # expired between the two commands, or not a string
                continue
            try:
                stored = _decode(value)
            except (msgspec.ValidationError, msgspec.DecodeError):
                # A foreign or corrupt value: a record the index cannot compile, which it
                # logs once and skips. Named by its key, so that each corrupt value is a
                # record of its own (one shared name made every reload log them again).
                name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
                found.append(Record("corrupt", name, "", bytes(value), None))
                continue
            found.append(
                Record(
                    stored.kind, stored.resource, stored.id, bytes(stored.spec), stored.expires_at
                )
            )
        return found

    def wait_for_change(self, timeout: float) -> bool:
        if self._closed.is_set():
            return False
        pubsub = self._pubsub
        try:
            if pubsub is None:
                pubsub = self._redis().pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(self._channel)
                self._pubsub = pubsub
                # Anything may have changed while nobody listened: reload now.
                return True
            changed = False
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                message = pubsub.get_message(timeout=max(0.0, left))
                if message is not None and message.get("type") == "message":
                    changed = True
                    timeout = 0.0  # take every message already there, then reload once
                    deadline = time.monotonic()
                elif message is None and time.monotonic() >= deadline:
                    return changed
        except (RedisError, OSError, ValueError) as ex:
            # A dropped subscription is rebuilt on the next call (and that call reloads).
            self._pubsub = None
            try:
                if pubsub is not None:
                    pubsub.close()
            except (RedisError, OSError):
                pass
            if self._closed.is_set():
                return False
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def sweep(self) -> int:
        try:
            return int(self._redis().zremrangebyscore(self._index, "-inf", time.time()))
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def __repr__(self) -> str:
        return f"<RedisStorage {self.url}>"
