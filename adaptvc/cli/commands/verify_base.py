"""``adaptvc verify-base``: is this the base model the adapter was trained on?"""

from __future__ import annotations

import click

from ..context import State, pass_state
from ..options import TEXT
from ..paths import name_or_path
from ..render import echo_json


@click.command("verify-base")
@click.argument("rev", type=TEXT)
@click.argument("base", type=TEXT)
@click.option("--subfolder", type=TEXT, help="Check the sub-folder adapter of this name instead of the top-level one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@pass_state
def verify_base(state: State, rev: str, base: str, subfolder: str | None, as_json: bool) -> None:
    """Check BASE (a model folder, relative to -C's folder, or a Hub name in the local cache) against version
    REV's base pin.

    Every adapter module must exist in the base with the right shape, and the base's fingerprint
    (architecture, targeted weights' names, shapes and sampled values) must match the pinned one.
    """
    from ...basemodel import BaseMismatchError

    repo = state.repo
    pin = repo.read_commit(rev).base
    try:
        detail = repo.verify_base(rev, name_or_path(state, base, pin.revision), subfolder=subfolder)
    except BaseMismatchError as e:  # its default hint is load's --force, which this command has not
        raise BaseMismatchError(e.problems, hint=f"{rev} is pinned to {pin.describe()}; check it against that "
                                                  "base") from None
    if as_json:
        echo_json({"ok": True, "base": base, "pinned": pin.to_dict(), "detail": detail})
    else:
        click.echo(f"ok: {base} matches the base of {rev} ({pin.describe()}): {detail}")


COMMANDS = [verify_base]
