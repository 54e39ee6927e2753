"""``python -m bench.proxy``: see :mod:`bench.proxy.run`."""

from __future__ import annotations

from bench.proxy.run import main

raise SystemExit(main())
