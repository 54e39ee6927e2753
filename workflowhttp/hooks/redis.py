"""Hooks on Redis (the ``redis`` extra): one registry shared by every machine.

Layout, under a key prefix (default ``workflowhttp:hooks:``):

* ``<prefix>hook:<kind>:<id>:<resource>``: a record's JSON, with a key TTL when the hook
  expires (Redis sweeps it);
* ``<prefix>index``: a sorted set of those keys scored by expiry (``+inf`` for never), so a
  full reload reads the live keys with one range query and one ``MGET``, never a ``SCAN``;
* ``<prefix>changes``: the pub/sub channel a write announces itself on. Every worker listens
  and reloads within milliseconds; a full reload every ``reload_interval`` heals a message
  missed while a connection was down;
* ``<prefix>queue:<name>``: a listener's queue, a list of copies (``RPUSH`` at the tail, the
  head read with ``LINDEX 0``). A copy is a msgpack array ``[not_before, enqueued_at,
  expires_at, id, data]``; ``id`` is 12 random bytes, so two copies with the same content
  are still told apart by :meth:`RedisStorage.remove`;
* ``<prefix>queues``: a set of the names of the queues that hold copies, the candidates of
  :meth:`RedisStorage.claim` (a name leaves it when its consumer releases it empty);
* ``<prefix>lease:<name>``: the owner of a queue's lease, a string with a ``PX`` expiry: it
  lapses on its own when a consumer dies.

Every read-then-write of the queues is one Lua script (atomic on the server). Times are the
enqueuing machine's ``time.time()``, as with SQLite; across machines they are only as close as
their clocks (NTP), which matters for ``not_before`` and expiry, never for the leases (those
are Redis's own key expiries).
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Any

import msgspec
import redis
from redis.exceptions import RedisError

from .storage import Entry, QueueItem, Record, StorageUnavailable

__all__ = ["RedisStorage"]


class _Stored(msgspec.Struct, array_like=True):
    kind: str
    resource: str
    id: str
    spec: msgspec.Raw
    expires_at: float | None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


class _Item(msgspec.Struct, array_like=True):
    """A queued copy as stored. ``not_before`` comes first, always a float64, so that the
    enqueue script reads it at a fixed offset (bytes 3-10) without decoding the copy: Redis's
    Lua ``cmsgpack`` cannot decode msgpack's ``bin`` type anyway."""

    not_before: float
    enqueued_at: float
    expires_at: float | None
    id: bytes
    data: bytes


_encode_item = msgspec.msgpack.Encoder().encode
_decode_item = msgspec.msgpack.Decoder(_Item).decode

# KEYS: the set of queue names, then each entry's list. ARGV: now, then per entry its name,
# its encoded copy and "1" when it coalesces. All or none: every key's type is checked before
# the first write (a script is atomic, but a command failing half-way keeps the writes before
# it).
_ENQUEUE = """
local now = tonumber(ARGV[1])
for i = 1, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= (i == 1 and 'set' or 'list') then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind)
  end
end
local added = 0
for i = 2, #KEYS do
  local name, item, coalesce = ARGV[3 * i - 4], ARGV[3 * i - 3], ARGV[3 * i - 2]
  local pending = false
  if coalesce == '1' then
    local tail = redis.call('LINDEX', KEYS[i], -1)
    if tail and #tail >= 10 and string.byte(tail, 1) == 0x95 and string.byte(tail, 2) == 0xcb then
      pending = struct.unpack('>d', tail, 3) > now
    end
  end
  if not pending then
    redis.call('RPUSH', KEYS[i], item)
    redis.call('SADD', KEYS[1], name)
    added = added + 1
  end
end
return added
"""

# KEYS: the set of queue names. ARGV: owner, lease (ms), limit, the lease keys' prefix.
# SET NX is what makes one owner per queue; a random sample first spreads the workers over
# the queues, then every name is tried when the sample had too few free ones.
# PERF: a claim that finds every queue leased tries each name (one SET NX per queue).
_CLAIM = """
local owner, lease, limit, prefix = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local claimed, tried = {}, {}
local function take(names)
  for _, name in ipairs(names) do
    if #claimed >= limit then return end
    if not tried[name] then
      tried[name] = true
      if redis.call('SET', prefix .. name, owner, 'NX', 'PX', lease) then
        claimed[#claimed + 1] = name
      end
    end
  end
end
take(redis.call('SRANDMEMBER', KEYS[1], limit))
if #claimed < limit and redis.call('SCARD', KEYS[1]) > limit then
  take(redis.call('SMEMBERS', KEYS[1]))
end
return claimed
"""

# KEYS: the lease. ARGV: owner, lease (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: the lease, the queue's list, the set of names. ARGV: owner, the queue's name.
# The name leaves the set only when nobody holds the lease and the list is empty (an enqueue
# meanwhile, or another owner since a lapse, keeps it).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('LLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[2])
end
return 0
"""


class _Scripts:
    """The queue scripts registered on one client (``EVALSHA``; redis-py loads a script
    again when the server lost it, after a restart)."""

    def __init__(self, client: redis.Redis) -> None:
        self.enqueue = client.register_script(_ENQUEUE)
        self.claim = client.register_script(_CLAIM)
        self.renew = client.register_script(_RENEW)
        self.release = client.register_script(_RELEASE)


def _item(stored: bytes) -> QueueItem:
    try:
        item = _decode_item(stored)
    except (msgspec.ValidationError, msgspec.DecodeError):
        # A foreign or corrupt value at the head would block its queue for good: it reads as
        # a copy that expired long ago, which the consumer drops (and counts).
        return QueueItem(stored, stored, 0.0, 0.0, 0.0)
    return QueueItem(stored, item.data, item.enqueued_at, item.expires_at, item.not_before)


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
        self._queues = f"{prefix}queues"
        self._client: redis.Redis | None = None
        self._scripts: _Scripts | None = None
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
                    if self._closed.is_set():
                        # A thread still at work when the app stopped (the registry's, a
                        # delivery) must not reconnect: nobody would close that connection.
                        raise StorageUnavailable(f"redis {self.url}: the storage is closed")
                    client = self._client = redis.Redis.from_url(
                        self.url,
                        socket_timeout=self.socket_timeout,
                        socket_connect_timeout=self.socket_timeout,
                        health_check_interval=30,
                    )
        return client

    def _script(self) -> tuple[redis.Redis, _Scripts]:
        client = self._redis()
        scripts = self._scripts
        if scripts is None or scripts.enqueue.registered_client is not client:
            with self._lock:
                scripts = self._scripts
                if scripts is None or scripts.enqueue.registered_client is not client:
                    scripts = self._scripts = _Scripts(client)
        return client, scripts

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
                # redis-py's PubSub is not thread-safe and the registry's thread may be inside
                # it, resetting it too: closing it then raises AttributeError or OSError. Its
                # socket is closed either way (by one of the two).
                with contextlib.suppress(RedisError, OSError, AttributeError, ValueError):
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
                with self._lock:
                    closed = self._closed.is_set()
                    if not closed:
                        self._pubsub = pubsub
                if closed:  # close() ran meanwhile, before this PubSub was there to close
                    pubsub.close()
                    return False
                # Anything may have changed while nobody listened: reload now.
                return True
            changed = False
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                message = pubsub.get_message(timeout=max(0.0, left))
                if self._closed.is_set():  # closed meanwhile: this thread closes its PubSub
                    with contextlib.suppress(RedisError, OSError, AttributeError, ValueError):
                        pubsub.close()
                    return False
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

    def maintain(self) -> None:
        """Nothing to do: Redis keeps itself."""

    # -- queues ---------------------------------------------------------------------------

    def _queue(self, name: str) -> str:
        return f"{self.prefix}queue:{name}"

    def _lease(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def enqueue(self, entries: list[Entry]) -> int:
        if not entries:
            return 0
        now = time.time()  # the enqueuing machine's clock (see the module's docstring)
        keys = [self._queues]
        args: list[str | bytes] = [repr(now)]
        for entry in entries:
            item = _Item(float(entry.not_before), now, entry.expires_at, os.urandom(12), entry.data)
            keys.append(self._queue(entry.queue))
            args += (entry.queue, _encode_item(item), "1" if entry.coalesce else "0")
        try:
            client, scripts = self._script()
            return int(scripts.enqueue(keys=keys, args=args, client=client))
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def claim(self, owner: str, lease: float, limit: int) -> list[str]:
        if limit <= 0:
            return []
        args: list[str | int] = [owner, _milliseconds(lease), limit, f"{self.prefix}lease:"]
        try:
            client, scripts = self._script()
            names: list[bytes] = scripts.claim(keys=[self._queues], args=args, client=client)
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        return [name.decode("utf-8", "replace") for name in names]

    def renew(self, queue: str, owner: str, lease: float) -> bool:
        try:
            client, scripts = self._script()
            renewed = scripts.renew(
                keys=[self._lease(queue)], args=[owner, _milliseconds(lease)], client=client
            )
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        # A lease that lapsed is no longer the owner's even when nobody took it: Redis cannot
        # tell that from one taken and released since (SQLite can, and renews it).
        return bool(renewed)

    def release(self, queue: str, owner: str) -> None:
        keys = [self._lease(queue), self._queue(queue), self._queues]
        try:
            client, scripts = self._script()
            scripts.release(keys=keys, args=[owner, queue], client=client)
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def head(self, queue: str) -> QueueItem | None:
        try:
            stored: bytes | None = self._redis().lindex(self._queue(queue), 0)  # type: ignore[assignment]
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        return None if stored is None else _item(stored)

    def remove(self, queue: str, item: QueueItem) -> None:
        # The stored bytes, random id included, name exactly that copy; LREM finds it at the
        # head (where a consumer's copy is) in one step, and does nothing when it is gone.
        try:
            self._redis().lrem(self._queue(queue), 1, item.ref)
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex

    def queue_stats(self) -> dict[str, tuple[int, float]]:
        try:
            client = self._redis()
            names: list[bytes] = sorted(client.smembers(self._queues))  # type: ignore[arg-type]
            pipe = client.pipeline(transaction=True)
            for name in names:
                key = self._queue(name.decode("utf-8", "replace"))
                pipe.llen(key)
                pipe.lindex(key, 0)
            replies = pipe.execute() if names else []
        except RedisError as ex:
            raise StorageUnavailable(f"redis {self.url}: {ex}") from ex
        stats = {}
        for index, name in enumerate(names):
            length, stored = replies[2 * index], replies[2 * index + 1]
            if length and stored is not None:
                # The head is the oldest copy: FIFO (up to the enqueuing machines' clocks).
                stats[name.decode("utf-8", "replace")] = (int(length), _item(stored).enqueued_at)
        return stats

    def __repr__(self) -> str:
        return f"<RedisStorage {self.url}>"


def _milliseconds(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))
