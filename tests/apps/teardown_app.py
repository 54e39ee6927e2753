"""An app with generator providers that write their life to ``$TEARDOWN_JOURNAL``.

``Journal`` is a generator singleton (opened on first use in the worker, closed at
``app.stop()``); ``Cursor`` is request-scoped (torn down once the response has been sent).
``GET /stream`` streams three chunks through the cursor and waits, after the first one, for
the file ``$TEARDOWN_GO`` to exist, so a client can look at the journal mid-body.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TextIO

from workflowhttp import App, Provider, http

GO_DEADLINE = 10.0  # seconds the body waits for $TEARDOWN_GO


class Journal:
    def __init__(self, file: TextIO) -> None:
        self.file = file

    def write(self, line: str) -> None:
        self.file.write(line + "\n")
        self.file.flush()


class Cursor:
    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.open = True


def journal() -> Iterator[Journal]:
    with open(os.environ["TEARDOWN_JOURNAL"], "a", encoding="utf-8") as file:
        opened = Journal(file)
        opened.write(f"singleton setup {os.getpid()}")
        yield opened
        opened.write(f"singleton teardown {os.getpid()}")


def cursor(journal: Journal) -> Iterator[Cursor]:
    opened = Cursor(journal)
    journal.write("request setup")
    yield opened
    opened.open = False
    journal.write("request teardown")


@http.GET("/health")
def health() -> dict[str, int]:
    return {"pid": os.getpid()}


@http.GET("/stream")
def stream(cursor: Cursor) -> Iterator[bytes]:
    def chunks() -> Iterator[bytes]:
        for number in range(3):
            yield f"{number}\n".encode()
            # Asked for the next chunk: the server has written this one to the socket.
            cursor.journal.write(f"chunk {number} sent ({'open' if cursor.open else 'closed'})")
            if number == 0:
                give_up = time.monotonic() + GO_DEADLINE
                while not os.path.exists(os.environ["TEARDOWN_GO"]):
                    if time.monotonic() > give_up:
                        return
                    time.sleep(0.02)
        cursor.journal.write("body done")

    return chunks()


app = App(
    controllers=[health, stream],
    providers=[journal, Provider(Cursor, cursor, scope="request")],
)
