"""The counted body: a streamed response body that counts the bytes it sends, so that its
request's trail is queued, with them, when the server closes it.

Knows the stream only as something with ``finish()`` (:class:`_Finisher`): it never imports
the stream.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..events import HttpEvent


class _Finisher(Protocol):
    """What a counted body queues its trail with (the stream)."""

    def finish(
        self, event: HttpEvent, status: int, body: Iterable[bytes], sent: int | None = None
    ) -> Iterable[bytes]: ...


class _CountedBody:
    """A streamed body that counts what it sends and queues the trail when closed."""

    __slots__ = ("_body", "_stream", "_event", "_status", "_sent")

    def __init__(self, body: Iterable[bytes], stream: _Finisher, event: HttpEvent, status: int):
        self._body = body
        self._stream = stream
        self._event: HttpEvent | None = event
        self._status = status
        self._sent = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._sent += len(chunk)
            yield chunk

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            event, self._event = self._event, None
            if event is not None:  # not queued already (a body closed twice)
                self._stream.finish(event, self._status, (), self._sent)
