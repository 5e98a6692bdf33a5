"""``adaptvc ui``: a local, read-only web page for a repository's history, versions and comparisons.

The server (:mod:`adaptvc.ui.server`, the standard library's HTTP server) answers JSON endpoints built by
:mod:`adaptvc.ui.data` from the same functions as the CLI's ``--json``, and serves one page script and one
style sheet shipped in ``adaptvc/ui/static`` (no CDN, no network). Diffs are computed once, in the
background, and cached by pair of ids (:mod:`adaptvc.ui.jobs`).

>>> from adaptvc.ui import make_server                        # doctest: +SKIP
>>> server = make_server("runs/support-bot", port=0)          # doctest: +SKIP
>>> print(server.url); server.serve_forever()                 # doctest: +SKIP
"""

from __future__ import annotations

from .server import DEFAULT_PORT, UiServer, make_server

__all__ = ["DEFAULT_PORT", "UiServer", "make_server"]
