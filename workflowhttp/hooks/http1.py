"""The deliveries' HTTP/1.1 client: one request on a kept-alive connection, its status back.

PERF: a delivery needs the answer's status and nothing else. ``http.client`` builds it with
a ``putheader`` call per header, two sends, a buffered file per answer and the ``email``
package's header parser: about 240 µs of a worker's CPU per copy, which under load cost more
than the request that queued it. Here a request is one ``sendall`` and the answer's head is
split by hand: about 70 µs, two thirds of it the system calls.

What it reads of an answer, and why that is enough:

* the status line, and ``Connection``, ``Content-Length`` and ``Transfer-Encoding``;
* interim ``1xx`` answers are skipped (at most :data:`MAX_INTERIM`);
* the body is read only when ``Content-Length`` says it is at most :data:`MAX_BODY` bytes
  (``HEAD``, ``204`` and ``304`` have none). A chunked or unbounded body, a longer one, or
  an HTTP/1.0 answer: the connection is closed instead, which ends the body as well as
  reading it would, and the next delivery opens another.

SECURITY: the head is read up to :data:`MAX_HEAD` bytes and split once (linear); numbers go
through :func:`~workflowhttp.numbers.parse_int`; a request line or header that holds a
control character (CR and LF would split the request: smuggling) is refused before anything
is sent; each read waits at most the copy's timeout, and no read starts once twice that has
passed since the request was sent.
"""

from __future__ import annotations

import socket
import ssl
import time

from ..numbers import parse_int

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "MAX_INTERIM",
    "Connection",
    "Refused",
    "Unanswered",
    "encode_request",
    "host_header",
]

#: The most bytes of an answer's head (status line and headers).
MAX_HEAD = 64 * 1024
#: The longest body read to keep the connection (a longer one closes it).
MAX_BODY = 64 * 1024
#: The most interim (``1xx``) answers skipped before the final one.
MAX_INTERIM = 8

_CONTROL = frozenset(chr(code) for code in (*range(0x20), 0x7F))


class Unanswered(OSError):
    """No (readable) answer came: the connection is closed, the delivery may be retried."""


class Refused(ValueError):
    """The request cannot be written as HTTP/1.1 (a control character): never sent."""


def _clean(text: str, what: str) -> str:
    if not _CONTROL.isdisjoint(text):
        raise Refused(f"a control character in the {what}")
    return text


def encode_request(
    method: str, target: str, host: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    """Return the request's bytes: request line, ``Host``, the headers, ``Content-Length``.

    A ``Host`` among ``headers`` is sent instead of ``host`` (as ``http.client`` does); a
    ``Content-Length`` or ``Transfer-Encoding`` among them is dropped: the length sent is
    always the body's (two that disagree would let the destination read a second request).

    Raises:
        Refused: a control character or a space in the method or target, a control
            character in a header, or a character beyond latin-1.
    """
    if " " in method or " " in target:
        raise Refused("a space in the method or target")
    lines = [f"{_clean(method, 'method')} {_clean(target, 'target')} HTTP/1.1"]
    own_host = True
    for name, value in headers:
        if ":" in name or " " in name:
            raise Refused("a colon or space in a header name")
        lower = name.lower()
        if lower in ("content-length", "transfer-encoding"):
            continue
        if lower == "host":
            own_host = False
        lines.append(f"{_clean(name, 'header name')}: {_clean(value, 'header value')}")
    if own_host:
        lines.insert(1, f"Host: {_clean(host, 'host')}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    try:
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    except UnicodeEncodeError:
        raise Refused("a character beyond latin-1") from None
    return head + body


def host_header(scheme: str, host: str, port: int) -> str:
    """The ``Host`` of a request to ``scheme://host:port``: the port only when it is not the
    scheme's own, an IPv6 address in brackets."""
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if scheme == "https" else 80) else f"{name}:{port}"


class Connection:
    """One connection to ``scheme://host:port``, kept open between deliveries."""

    def __init__(self, scheme: str, host: str, port: int) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()

    def connect(self, timeout: float) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                context = ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def exchange(self, request: bytes, timeout: float, *, head: bool = False) -> int:
        """Send ``request`` (from :func:`encode_request`), read the answer; return its status.

        The connection stays open when the answer allows it; else it is closed.

        Raises:
            OSError: the connection failed or timed out (closed).
            Unanswered: the answer was not HTTP/1.x, too long or cut (closed).
        """
        sock = self.sock
        assert sock is not None, "connect() first"
        deadline = time.monotonic() + 2 * timeout
        try:
            sock.settimeout(timeout)
            sock.sendall(request)
            data = bytearray()  # PERF: += on a bytearray is linear however the bytes come
            for _ in range(MAX_INTERIM + 1):
                end = data.find(b"\r\n\r\n")
                while end < 0:
                    if len(data) > MAX_HEAD:
                        raise Unanswered("the answer's head is too long")
                    searched = len(data)
                    self._more(sock, data, deadline)
                    end = data.find(b"\r\n\r\n", max(0, searched - 3))
                if end > MAX_HEAD:
                    raise Unanswered("the answer's head is too long")
                status, keep, length = _head(bytes(data[:end]))
                del data[: end + 4]
                if not 100 <= status < 200 or status == 101:
                    break
            else:
                raise Unanswered("too many interim answers")
            if status == 101:
                keep = False  # switching protocols: the connection is no longer HTTP
            elif head or status in (204, 304):
                length = 0
            if keep and length is not None and length <= MAX_BODY:
                while len(data) < length:
                    self._more(sock, data, deadline)
                keep = len(data) == length  # more than the body: not an answer to trust
            else:
                keep = False
        except BaseException:
            self.close()
            raise
        if not keep:
            self.close()
        return status

    @staticmethod
    def _more(sock: socket.socket, data: bytearray, deadline: float) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError("the answer took too long")
        chunk = sock.recv(65536)
        if not chunk:
            raise Unanswered("the connection closed before the answer ended")
        data += chunk


def _head(block: bytes) -> tuple[int, bool, int | None]:
    """Return an answer head's status, whether it lets the connection stay open, and its
    ``Content-Length`` (None when it has none, or its body is chunked)."""
    text = block.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    version, _, after = status_line.partition(" ")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Unanswered(f"not an HTTP/1.x answer: {status_line[:40]!r}")
    code = after[:3]
    if after[3:4] not in ("", " "):
        raise Unanswered(f"a bad status line: {status_line[:40]!r}")
    try:
        status = parse_int(code, signed=False, max_digits=3)
    except ValueError:
        raise Unanswered(f"a bad status line: {status_line[:40]!r}") from None
    if not 100 <= status <= 999:
        raise Unanswered(f"a bad status: {status}")
    keep = version == "HTTP/1.1"
    lengths: set[str] = set()
    chunked = False
    for line in rest.split("\r\n") if rest else ():
        name, colon, value = line.partition(":")
        if not colon:  # (a folded line, say): what it continues is unknown
            keep = False
            continue
        name = name.lower()
        if name == "content-length":
            lengths.add(value.strip())
        elif name == "transfer-encoding":
            chunked = True
        elif name == "connection" and "close" in value.lower():
            keep = False
    length = None
    if len(lengths) == 1 and not chunked:
        try:
            length = parse_int(lengths.pop(), signed=False)
        except ValueError:
            raise Unanswered("a bad Content-Length") from None
    elif len(lengths) > 1:
        keep = False  # two lengths: which ends the body is unknown
    return status, keep, length
