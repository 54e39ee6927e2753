"""Proxy benchmark: nginx proxy_pass, a bare urllib3 WSGI floor, HARP 0.8, workflowhttp's Proxy.

Run ``python -m bench.proxy --setup`` once, then ``python -m bench.proxy`` (about 4 minutes) or
``python -m bench.proxy --quick`` (under a minute); see ``bench/proxy/run.py`` and the section
"Proxy benchmark" of ``bench/README.md``.
"""
