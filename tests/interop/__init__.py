"""Interop tests: the runner against real third-party OpenAI-compatible servers.

The servers are installed by ``.ci/interop-setup`` into virtualenvs of their own
and started on 127.0.0.1 by the fixtures in ``conftest.py``; their upstream is
the runner's built-in endpoint, so nothing leaves the machine.
"""
