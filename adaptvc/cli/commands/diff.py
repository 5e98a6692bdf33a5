"""``adaptvc diff``: what changed between two versions, as a table, per-tensor lines, JSON or a picture."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from ...errors import AdaptvcError, NoWorkTreeError
from ...peft_layout import short_module_name
from ..context import State, pass_state
from ..options import TEXT, json_option
from ..paths import PathFromC
from ..progress import BarProgress
from ..render import echo_json, short, style, table

if TYPE_CHECKING:  # diff and plot load numpy/matplotlib: imported when the command runs
    from ...tensors.diff import Diff, ModuleDiff, TensorDiff

WIDTH = 80


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    if x != 0 and (abs(x) >= 1e4 or abs(x) < 1e-3):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def _fit(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _label(x: str) -> str:
    return x if x == "worktree" else short(x)


def _by_change(items: list, key: Callable[[Any], float | None]) -> list:
    return sorted(items, key=lambda m: (key(m) is None, -(key(m) or 0.0)))


def _module_table(modules: list[ModuleDiff], top: int) -> str:
    rows = []
    shown = _by_change(modules, lambda m: m.delta_w_rel_change)
    shown = shown[:top] if top else shown
    for m in shown:
        rows.append([_fit(short_module_name(m.name), 36), f"{m.rank_a}→{m.rank_b}", _num(m.delta_w_norm_a),
                     _num(m.delta_w_norm_b), _num(m.delta_w_rel_change), _num(m.delta_w_cosine, 2)])
    out = table(rows, ["module", "rank", "‖ΔW_a‖", "‖ΔW_b‖", "rel Δ", "cos"], right={2, 3, 4, 5})
    if top and len(modules) > top:
        out += f"\n… {len(modules) - top} more modules (-n 0 shows all, --json everything)"
    return out


def _tensor_table(tensors: list[TensorDiff], top: int) -> str:
    changed = _by_change([t for t in tensors if t.status != "unchanged"], lambda t: t.rel_delta)
    shown = changed[:top] if top else changed
    rows = [[_fit(short_module_name(t.name), 44), t.status, _num(t.delta_norm), _num(t.rel_delta),
             _num(t.cosine, 2)] for t in shown]
    out = table(rows, ["tensor", "status", "‖Δ‖", "rel Δ", "cos"], right={2, 3, 4})
    if top and len(changed) > top:
        out += f"\n… {len(changed) - top} more tensors (--stat shows all, --json everything)"
    return out


def _stat_lines(diff: Diff) -> list[str]:
    changed = [t for t in diff.tensors if t.status != "unchanged"]
    if not changed:
        return []
    biggest = max((t.rel_delta or 0.0) for t in changed) or 1.0
    name_width = min(46, max(len(short_module_name(t.name)) for t in changed))
    bar_width = WIDTH - name_width - 28
    lines = []
    for t in changed:
        rel = t.rel_delta
        bar = "█" * max(1, round(bar_width * rel / biggest)) if rel else ""
        colour = {"added": "green", "removed": "red"}.get(t.status, "yellow")
        lines.append(f"{_fit(short_module_name(t.name), name_width).ljust(name_width)} | "
                     f"{style(t.status.ljust(8), fg=colour)} {_num(rel).rjust(8)} {bar}")
    s = diff.summary()["tensors"]
    lines.append(f"{len(changed)} tensors changed: {s['modified']} modified, {s['added']} added, "
                 f"{s['removed']} removed")
    return lines


def _summary_text(diff: Diff) -> list[str]:
    s = diff.summary()
    t = s["tensors"]
    lines = [style(f"diff {_label(diff.a)} → {_label(diff.b)}", bold=True)]
    if diff.config:
        lines.append("config:")
        lines += [f"  {k}: {v[0]!r} → {v[1]!r}" for k, v in diff.config.items()]
    lines.append(f"tensors: {t['modified']} modified, {t['added']} added, {t['removed']} removed, "
                 f"{t['unchanged']} unchanged; ‖Δ‖ total {_num(s['delta_norm_total'])}")
    if diff.modules:
        lines.append(f"LoRA ΔW: {s['modules']['changed']} of {s['modules']['compared']} modules changed; "
                     f"total ‖ΔW_b − ΔW_a‖ {_num(s['delta_w_change_total'])}, "
                     f"relative {_num(s['delta_w_rel_change_total'])}")
    return lines


@click.command()
@click.argument("a", type=TEXT, required=False)
@click.argument("b", type=TEXT, required=False)
@click.option("--stat", is_flag=True, help="One line per changed tensor.")
@click.option("--modules", "modules_only", is_flag=True, help="Only the LoRA module table.")
@click.option("--tensor", "pattern", type=TEXT, metavar="GLOB",
              help="Only tensors whose name matches (anywhere), e.g. 'layers.1[0-5].*q_proj*'.")
@click.option("--plot", "plot_path", type=PathFromC(dir_okay=False), help="Write a PNG picture of the change.")
@click.option("-n", "--top", default=20, show_default=True, type=click.IntRange(min=0),
              help="Rows in the tables (0: all).")
@json_option
@pass_state
def diff(state: State, a: str | None, b: str | None, stat: bool, modules_only: bool, pattern: str | None,
         plot_path: str | None, top: int, as_json: bool) -> None:
    """Show what changed from version A (default HEAD) to version B (default: the work tree).

    \b
    adaptvc diff              HEAD against the work tree
    adaptvc diff v1           v1 against the work tree
    adaptvc diff v1 v2        two versions
    """
    if b is None and not state.repo.has_work_tree:  # git's bare repository: diff needs two revisions there
        raise NoWorkTreeError("name two versions: adaptvc diff A B")
    result = state.repo.diff(a or "HEAD", b, tensors=pattern, progress=BarProgress())
    if pattern and not result.tensors:
        raise AdaptvcError(f"no tensor name matches {pattern!r}")
    if modules_only and not result.modules:
        types = ", ".join(sorted({str(t) for t in result.peft_types.values()})) or "unknown"
        raise AdaptvcError(f"no LoRA modules to compare (peft_type: {types}); "
                           "per-tensor numbers are in 'adaptvc diff --stat'")
    if plot_path:
        from ...tensors.plot import write_plot

        write_plot(result, state.path(plot_path), (a or "HEAD", b or "worktree"))
    if as_json:
        echo_json(result.to_dict())
        return
    if stat:
        lines = _stat_lines(result)
        click.echo("\n".join(lines) if lines else "no tensor changed")
    elif modules_only:
        click.echo(_module_table(result.modules, top))
    else:
        click.echo("\n".join(_summary_text(result)))
        if result.modules:
            click.echo("\n" + _module_table(result.modules, top))
        elif result.changed:
            click.echo("\n" + _tensor_table(result.tensors, top))
    if plot_path:
        click.echo(f"wrote {plot_path}", err=True)


COMMANDS = [diff]
