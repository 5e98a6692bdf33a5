"""Commands that read history: log, show, reflog (and reflog expire)."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import click

from ...objects import Commit
from ..context import CliError, State, pass_state
from ..options import TEXT, json_option
from ..render import (
    commit_text,
    decoration,
    echo_json,
    human_bytes,
    short,
    style,
    table,
)
from ..render import (
    oneline as oneline_text,
)

#: metadata keys a merge or a revert records; shown as their own lines rather than as "Meta:"
_HISTORY_KEYS = ("merge", "revert")


def _history_line(commit: Commit) -> str | None:
    """One line saying what a merge or a revert combined (its metadata is printed in full by --json)."""
    for key in _HISTORY_KEYS:
        info = commit.metadata.get(key)
        if not isinstance(info, dict):
            continue
        counts = info.get("counts") if isinstance(info.get("counts"), dict) else {}
        parts = [f"{v} {k}" for k, v in counts.items() if v]
        combined = info.get("combined") if isinstance(info.get("combined"), dict) else {}
        residuals = [d.get("residual") for d in combined.values() if isinstance(d, dict)]
        worst = max((r for r in residuals if isinstance(r, (int, float))), default=None)
        extra = []
        for name in ("weights", "density", "seed", "rank"):
            if info.get(name) is not None:
                extra.append(f"{name} {info[name]}")
        if combined:
            extra.append("exact" if worst == 0 else f"max residual {worst:.3g}" if worst is not None else "")
        what = f"base {short(info.get('base'))}" if key == "merge" else f"reverts {short(info.get('commit'))}"
        text = f"{what}, strategy {info.get('strategy')}; {', '.join(parts) or 'nothing changed'}"
        return text + (f" ({', '.join(e for e in extra if e)})" if any(extra) else "")
    return None


def _commit_text(commit: Commit, labels: list[str]) -> str:
    history = _history_line(commit)
    if history is None:
        return commit_text(commit, labels)
    meta = {k: v for k, v in commit.metadata.items() if k not in _HISTORY_KEYS}
    shown = replace(commit, metadata=meta)
    shown.__dict__["id"] = commit.id  # the id is the stored commit's, not that of the copy
    lines = commit_text(shown, labels).split("\n")
    at = lines.index("") if "" in lines else len(lines)
    label = "Merged: " if "merge" in commit.metadata else "Revert: "
    return "\n".join([*lines[:at], label + history, *lines[at:]])


def _starts(repo: Any, rev: str | None, all_refs: bool) -> list[str]:
    if not all_refs:
        if rev is None:
            head = repo.head()
            return [head] if head else []
        return [repo.resolve(rev)]
    if rev is not None:
        raise click.UsageError("give either REV or --all")
    from ...ops.reachability import live_roots

    return list(live_roots(repo.refs))


def _graph_blocks(layout: Any) -> list[list[str]]:
    """For each row of the layout: its commit line of graph, then the line joining it to the next row (if any)."""
    from ...ops.graph_layout import render_text

    lines = render_text(layout)
    blocks: list[list[str]] = []
    for line in lines:
        if "*" in line or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return blocks


@click.command()
@click.argument("rev", type=TEXT, required=False)
@click.option("-n", "--max-count", type=click.IntRange(min=0), help="Show at most this many commits.")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option("--graph", "draw_graph", is_flag=True, help="Draw the commit graph beside the commits.")
@click.option("--all", "all_refs", is_flag=True, help="Every branch, tag and remote-tracking branch, not only REV.")
@json_option
@pass_state
def log(state: State, rev: str | None, max_count: int | None, oneline: bool, draw_graph: bool, all_refs: bool,
        as_json: bool) -> None:
    """Show the history from REV (default HEAD), newest first."""
    from ...ops.graph import walk

    repo = state.repo
    starts = _starts(repo, rev, all_refs)
    commits = list(walk(repo.store, starts, max_count)) if starts else []
    layout = None
    if draw_graph and commits:
        from ...ops.graph_layout import layout as lay_out

        layout = lay_out((c.id, c.parents) for c in commits)
        by_id = {c.id: c for c in commits}
        commits = [by_id[r.id] for r in layout.rows]
    if as_json:
        items = [c.to_json() for c in commits]
        if layout is not None:
            for item, row in zip(items, layout.rows, strict=True):
                item["graph"] = {"lane": row.lane, "edges": [e.to_json() for e in row.edges]}
        echo_json(items)
        return
    if not commits:
        click.echo("No commits yet; run 'adaptvc commit -m MESSAGE'")
        return
    labels = repo.decorations()
    if layout is not None:
        _print_graph(commits, layout, labels, oneline)
        return
    if oneline:
        click.echo("\n".join(oneline_text(c, labels.get(c.id, [])) for c in commits))
        return
    click.echo("\n\n".join(_commit_text(c, labels.get(c.id, [])) for c in commits))


def _print_graph(commits: list[Commit], layout: Any, labels: dict[str, list[str]], oneline: bool) -> None:
    """Each commit beside its row of the graph; the lines between rows keep the graph going."""
    blocks = _graph_blocks(layout)
    for c, row, block in zip(commits, layout.rows, blocks, strict=True):
        width = 2 * max(row.width, 1)
        head = block[0].ljust(width)
        if oneline:
            click.echo(f"{head}{style(short(c.id), fg='yellow')}{decoration(labels.get(c.id, []))} {c.summary}")
        else:
            through = [" "] * width
            for e in row.edges:
                through[2 * e.from_lane] = "|"
            bar = "".join(through)
            text = _commit_text(c, labels.get(c.id, [])).split("\n")
            click.echo(head + text[0])
            for line in text[1:]:
                click.echo((bar + line).rstrip())
            click.echo(bar.rstrip())
        for line in block[1:]:
            click.echo(line)


def _show_file(state: State, rev: str, path: str) -> None:
    from ...ops.show import file_chunks

    repo = state.repo
    version = repo.show(rev)
    out = sys.stdout.buffer
    for chunk in file_chunks(repo.store, version.snapshot, path, rev):
        out.write(chunk)
    out.flush()


def _show_tensors(state: State, rev: str, names: tuple[str, ...], as_json: bool) -> None:
    from ...ops.show import select_tensors, tensor_stats

    repo = state.repo
    version = repo.show(rev)
    stats = [tensor_stats(repo.store, n, t) for name in names for n, t in select_tensors(version.snapshot, name, rev)]
    if as_json:
        echo_json([s.to_json() for s in stats])
        return

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.6g}"

    for s in stats:
        click.echo(f"tensor {s.name}")
        click.echo(f"  dtype  {s.dtype}\n  shape  {list(s.shape)}\n  size   {human_bytes(s.size)}\n  hash   {s.hash}")
        click.echo(f"  min    {num(s.min)}\n  max    {num(s.max)}\n  mean   {num(s.mean)}\n  std    {num(s.std)}\n"
                   f"  norm   {num(s.norm)}" + (f"\n  non-finite elements {s.nonfinite}" if s.nonfinite else ""))


@click.command()
@click.argument("rev", type=TEXT, default="HEAD")
@click.option("--tensor", "tensors", type=TEXT, multiple=True, metavar="NAME",
              help="Show one tensor: dtype, shape, hash, min/max/mean/std/norm (a glob shows every match).")
@json_option
@pass_state
def show(state: State, rev: str, tensors: tuple[str, ...], as_json: bool) -> None:
    """Show one version: its commit, files and tensors.

    \b
    adaptvc show v1
    adaptvc show v1:adapter_config.json     one file's bytes, as committed
    adaptvc show v1 --tensor NAME           one tensor's numbers
    """
    from ...ops.show import split_rev_path

    spec = split_rev_path(rev)
    if spec is not None:
        if tensors or as_json:
            raise click.UsageError("REV:PATH prints the file's bytes; it takes no --tensor or --json")
        _show_file(state, *spec)
        return
    if tensors:
        _show_tensors(state, rev, tensors, as_json)
        return
    repo = state.repo
    version = repo.show(rev)
    if as_json:
        echo_json(version.to_json())
        return
    click.echo(_commit_text(version.commit, repo.decorations().get(version.commit.id, [])))
    snap = version.snapshot
    click.echo("\nFiles:")
    click.echo(table([[f.path, human_bytes(f.size), short(f.hash, 16)] for f in snap.files],
                     ["path", "size", "hash"], right={1}))
    tensors_all = snap.tensors()
    total = sum(t.size for _, t in tensors_all)
    click.echo(f"\nTensors ({len(tensors_all)}, {human_bytes(total)}):")
    click.echo(table([[name, t.dtype, "×".join(map(str, t.shape)) or "scalar", short(t.blob, 16)]
                      for name, t in tensors_all], ["name", "dtype", "shape", "hash"]))
    combined = next((version.commit.metadata[k].get("combined") for k in _HISTORY_KEYS
                     if isinstance(version.commit.metadata.get(k), dict)), None)
    if isinstance(combined, dict) and combined:
        rows = []
        for name, d in combined.items():
            d = d if isinstance(d, dict) else {}
            residual = d.get("residual")
            rows.append([name, str(d.get("rank", "-")), "yes" if d.get("exact") else "no",
                         f"{residual:.3g}" if isinstance(residual, (int, float)) else "-"])
        click.echo(f"\nCombined ({len(rows)}):")
        click.echo(table(rows, ["unit", "rank", "exact", "residual"], right={1, 3}))


def _full_ref(repo: Any, ref: str) -> str:
    return ref if ref == "HEAD" or ref.startswith("refs/") else (
        f"refs/tags/{ref}" if ref in repo.tags() and ref not in repo.branches() else f"refs/heads/{ref}")


@click.command()
@click.argument("args", type=TEXT, nargs=-1)
@click.option("--expire", "expire_when", type=TEXT, metavar="WHEN",
              help="reflog expire: drop entries older than this (default 90.days.ago).")
@click.option("--expire-unreachable", "unreachable_when", type=TEXT, metavar="WHEN",
              help="reflog expire: drop entries older than this whose commit the ref no longer reaches "
                   "(default 30.days.ago).")
@click.option("--all", "all_refs", is_flag=True, help="reflog expire: every reflog (HEAD, branches, tags, "
                                                      "deleted branches).")
@click.option("-n", "--dry-run", is_flag=True, help="reflog expire: only say what would be dropped.")
@json_option
@pass_state
def reflog(state: State, args: tuple[str, ...], expire_when: str | None, unreachable_when: str | None,
           all_refs: bool, dry_run: bool, as_json: bool) -> None:
    """Show where a ref pointed over time, newest first; `reflog expire` drops old entries.

    \b
    adaptvc reflog [show] [REF]
    adaptvc reflog expire [--expire=WHEN] [--expire-unreachable=WHEN] [--all] [-n] [REF]...
    WHEN: now, never, an age (30d, 2.weeks.ago, 12h) or a date (2026-01-31).
    """
    if args and args[0] == "expire":
        _expire(state, list(args[1:]), expire_when, unreachable_when, all_refs, dry_run, as_json)
        return
    if expire_when is not None or unreachable_when is not None or all_refs or dry_run:
        raise click.UsageError("--expire, --expire-unreachable, --all and --dry-run belong to 'reflog expire'")
    rest = list(args[1:] if args and args[0] == "show" else args)
    if len(rest) > 1:
        raise click.UsageError("reflog shows one ref at a time")
    ref = rest[0] if rest else "HEAD"
    repo = state.repo
    entries = repo.refs.reflog(_full_ref(repo, ref))
    if as_json:
        echo_json([e.to_json() for e in entries])
        return
    for i, e in enumerate(entries):
        t = datetime.fromtimestamp(e.time, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{style(short(e.new), fg='yellow')} {ref}@{{{i}}} {t} {e.message}")


def _expire(state: State, names: list[str], expire_when: str | None, unreachable_when: str | None, all_refs: bool,
            dry_run: bool, as_json: bool) -> None:
    from ...ops.reflog_expire import expire_reflogs, full_ref_name, parse_when

    repo = state.repo
    if not names and not all_refs:
        raise CliError("reflog expire needs --all or the refs whose reflogs to expire (e.g. HEAD main)")
    now = time.time()
    cut = parse_when(expire_when, now) if expire_when is not None else None
    cut_unreachable = parse_when(unreachable_when, now) if unreachable_when is not None else None
    refs = None if all_refs else [full_ref_name(repo.refs, n) for n in names]
    report = expire_reflogs(repo.store, repo.refs, refs, expire=cut, expire_unreachable=cut_unreachable, now=now,
                            dry_run=dry_run)
    if as_json:
        echo_json(report.to_dict())
        return
    verb = "would drop" if dry_run else "dropped"
    for ref, (n, dropped) in report.refs.items():
        if dropped:
            click.echo(f"{ref}: {verb} {dropped} of {n} entries")
    click.echo(f"{verb} {report.dropped} reflog entries" + ("" if dry_run or not report.dropped else
                                                             "; 'adaptvc gc' reclaims what only they kept"))


COMMANDS = [log, show, reflog]
