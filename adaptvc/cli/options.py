"""Options and argument types shared by the commands.

Every text argument goes through :data:`TEXT`: undecodable bytes in argv (which Python turns into lone
surrogates) are refused in one line before they reach a ref name, a message or a file, and paths go through
``click.Path``, which keeps them as the operating system gave them.
"""

from __future__ import annotations

import re
from typing import Any

import click

from ..parsing import text_ok


class Utf8Text(click.ParamType):
    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                self.fail("is not valid UTF-8 text", param, ctx)
        if isinstance(value, str) and not text_ok(value):
            what = f"'{param.human_readable_name}'" if param is not None else "an argument"
            raise click.ClickException(f"{what} is not valid UTF-8 text")
        return value


TEXT = Utf8Text()

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        m = _DURATION.match(str(value).strip())
        if not m:
            self.fail(f"{value!r} is not a duration like 30m, 1h, 2d or 0", param, ctx)
        return float(m.group(1)) * _UNITS[m.group(2)]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
