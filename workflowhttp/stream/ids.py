"""Request ids: the one a client sent, when it may be trusted, else one generated here.

Owns the ``X-Request-ID`` header's name, which client ids are trusted, and the generated
ids: a random prefix drawn once per process (when the stream starts) and a counter,
``"<8 hex digits>-<counter in hex>"``, formatted a block at a time.

:class:`_RequestIds` is a base of :class:`~workflowhttp.stream.Stream`: the request path
(``Stream.begin``) takes the next id from ``_ids`` itself, and an empty ``_ids`` is how it
notices that the stream has not started in this process (:meth:`_RequestIds._make_ids`
starts it). Imports nothing of the stream's other modules.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..events import HttpEvent

_ID_BLOCK = 256  # request ids made at once, by the request that finds none ready
# The last two hex digits of the ids of a block, in the order pop() takes them.
_ID_ENDINGS = tuple(f"{low:02x}" for low in reversed(range(_ID_BLOCK)))
_HEADER = "X-Request-ID"
# SECURITY: a client's request id is echoed in a header and logged: only a short token.
_TRUSTABLE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class _RequestIds:
    """The request ids of a stream: those ready to hand out, and how the next are made."""

    if TYPE_CHECKING:  # provided by the stream's shards
        _started: bool

        def start(self) -> None: ...

    def __init__(self) -> None:
        self._ids: list[str] = []  # request ids ready to hand out; pop() takes the next
        self._id_blocks: Iterator[int] = itertools.count(1)
        self._id_prefix = ""

    def _draw_ids(self) -> None:
        """Draw this process's prefix and count the blocks from 1 again (the stream starts)."""
        self._id_prefix = f"{os.urandom(4).hex()}-"
        self._id_blocks = itertools.count(1)
        self._ids = []

    def _trusted_id(self, event: HttpEvent) -> str:
        """Return the id the client sent, or the next one when it sent none we trust."""
        given = event.environ.get("HTTP_X_REQUEST_ID")
        if given and _TRUSTABLE_ID.fullmatch(given):
            if not self._started:
                self.start()
            return given  # type: ignore[no-any-return]
        try:
            return self._ids.pop()
        except IndexError:
            return self._make_ids()

    def _make_ids(self) -> str:
        """Make the next block of request ids (starting the stream if needed): return one,
        keep the others ready.

        PERF: a block is the ids of one range of 256 counter values, made by one C-level
        loop that appends each of the 256 possible last two hex digits to the prefix and the
        block number (no formatting per id), so an id costs a request about one
        ``list.pop()``. The request that finds none ready makes them: objects a request
        touches are best made on its own thread (made on a shard's, they cost it cache
        misses). Every block is a distinct range of the counter, so ids stay unique when two
        threads make blocks at once.
        """
        if not self._started:
            self.start()
        block = list(map(f"{self._id_prefix}{next(self._id_blocks):x}".__add__, _ID_ENDINGS))
        request_id = block.pop()
        self._ids[:0] = block  # behind the ones still ready, which pop() takes first
        return request_id
