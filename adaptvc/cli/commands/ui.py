"""``adaptvc ui``: serve a read-only web page for the repository here (history, versions, comparisons)."""

from __future__ import annotations

import errno
import threading

import click

from ..context import CliError, State, pass_state
from ..options import TEXT


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=7007, show_default=True,
              help="Port to listen on (0: any free port).")
@click.option("--host", type=TEXT, default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but a loopback address serves other machines: every request "
                   "then needs the token printed in the URL.")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a web browser, when there is one.")
@pass_state
def ui(state: State, port: int, host: str, open_browser: bool) -> None:
    """Serve a read-only web page for this repository: the commit graph and metrics, each version's files,
    tensors and config, and interactive comparisons (until Ctrl-C).

    \b
    adaptvc ui                  http://127.0.0.1:7007
    adaptvc ui --port 0 --open  any free port; opens a browser
    adaptvc ui --host 0.0.0.0   other machines too, with a token in the URL
    """
    from ...ui.server import is_loopback, make_server

    work_tree = state.repo.work_tree  # not a repository: that error, before any socket
    try:
        server = make_server(work_tree, host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is in use; choose another with --port (0: any free port)") \
                from None
        raise CliError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None
    click.echo(f"adaptvc ui: serving {work_tree} (read-only) at {server.url}")
    if not is_loopback(host):
        if host in ("0.0.0.0", "::"):
            import socket

            click.echo(f"  from other machines: {server.url_for(socket.gethostname())}")
        click.echo("  every request needs this token; anyone who has the URL can read the repository")
    click.echo("Press Ctrl-C to stop.")
    if open_browser:
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
        server.jobs.close()


COMMANDS = [ui]
