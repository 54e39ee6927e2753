"""An app whose extension writes a line to ``$EXTENSION_LOG`` when it starts and stops."""

from __future__ import annotations

import os

from workflowhttp import App, http
from workflowhttp.extensions import Extension


@http.GET("/health")
def health() -> dict:
    return {"pid": os.getpid()}


class Recorder(Extension):
    def start(self, app: App) -> None:
        self._write("start")

    def stop(self, app: App) -> None:
        self._write("stop")

    def _write(self, what: str) -> None:
        with open(os.environ["EXTENSION_LOG"], "a", encoding="utf-8") as log:
            log.write(f"{what} {os.getpid()}\n")


app = App(controllers=[health], extensions=[Recorder()])
