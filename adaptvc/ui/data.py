"""What the UI's JSON endpoints return, built from the same values and functions as the CLI's ``--json``.

Each function takes an open :class:`~adaptvc.repository.Repository` and ids the server has already resolved
(revisions reach this module only through ``Repository.resolve``), and returns plain JSON data. Commits are
``Commit.to_json()`` (``log --json``), a version is ``Version.to_json()`` (``show --json``), a comparison is
``Diff.to_dict()`` (``diff --json``), the work tree is ``Status.to_dict()`` (``status --json``); the heat map
groups the diff's values exactly as ``diff --plot`` does (``adaptvc.tensors.plot``). The page only draws.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AdaptvcError
from ..objects import Commit
from ..ops import graph
from ..ops.graph_layout import layout
from ..peft_layout import CONFIG_NAME

if TYPE_CHECKING:
    from ..repository import Repository
    from ..tensors.diff import Diff

#: the history page shows at most this many commits by default (``?max=`` up to MAX_HISTORY)
DEFAULT_HISTORY = 1000
MAX_HISTORY = 20000
#: a run view compares at most this many versions (so this many - 1 diffs)
MAX_RUN = 50
DEFAULT_RUN = 20

#: the transformers class a PEFT ``task_type`` is loaded with (``AutoModel`` otherwise)
_AUTO_CLASS = {
    "CAUSAL_LM": "AutoModelForCausalLM",
    "SEQ_CLS": "AutoModelForSequenceClassification",
    "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
    "TOKEN_CLS": "AutoModelForTokenClassification",
    "QUESTION_ANS": "AutoModelForQuestionAnswering",
}


def _number(x: Any) -> int | float | None:
    """``x`` when it is a finite int or float (not a bool), else None."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return x if math.isfinite(x) else None


# -- history ------------------------------------------------------------------------------------------------
def history(repo: Repository, max_count: int = DEFAULT_HISTORY) -> dict[str, Any]:
    """Every commit reachable from HEAD, a branch, a tag or a remote-tracking branch (newest first, at most
    ``max_count``), the graph's lanes (:func:`adaptvc.ops.graph_layout.layout`), the ref labels, and one
    series per recorded metric."""
    starts = []
    head = repo.head()
    if head is not None:
        starts.append(head)
    starts += [*repo.branches().values(), *repo.tags().values(), *repo.refs.list("refs/remotes/").values()]
    commits = list(graph.walk(repo.store, dict.fromkeys(starts), max_count + 1))
    truncated = len(commits) > max_count
    commits = commits[:max_count]
    g = layout((c.id, c.parents) for c in commits)
    by_id = {c.id: c for c in commits}
    return {
        "repository": repo.work_tree.name,
        "head": head,
        "branch": repo.current_branch(),
        "truncated": truncated,
        "commits": [by_id[r.id].to_json() for r in g.rows],  # the graph's order: children above parents
        "graph": g.to_json(),
        "decorations": {oid: labels for oid, labels in repo.decorations().items() if oid in by_id},
        "metrics": metric_series([by_id[r.id] for r in g.rows]),
    }


def metric_series(commits: Sequence[Commit]) -> dict[str, Any]:
    """One series per metric in the commits' ``metadata["metrics"]``: a point per commit that recorded a
    finite number for it, oldest first, with the commit's parents (the chart joins a point to its parents'
    points, so a branch is its own line). ``x`` is the commit's ``metadata["step"]`` when every point has
    one, else its position in the history (0 = oldest commit shown)."""
    oldest_first = list(reversed(commits))
    series: dict[str, list[dict[str, Any]]] = {}
    for order, c in enumerate(oldest_first):
        metrics = c.metadata.get("metrics")
        if not isinstance(metrics, dict):
            continue
        step = _number(c.metadata.get("step"))
        for name, value in metrics.items():
            y = _number(value)
            if y is not None:
                series.setdefault(str(name), []).append({"id": c.id, "parents": list(c.parents), "order": order,
                                                         "step": step, "y": y})
    out = {}
    for name, points in sorted(series.items()):
        by_step = all(p["step"] is not None for p in points)
        for p in points:
            p["x"] = p["step"] if by_step else p["order"]
        out[name] = {"x": "step" if by_step else "version", "points": points}
    return out


# -- one version --------------------------------------------------------------------------------------------
def version(repo: Repository, oid: str) -> dict[str, Any]:
    """``show --json`` of commit ``oid`` (a full id), with its ref labels, its adapter configs and the
    snippets that load it."""
    v = repo.show(oid)
    configs = {f.path: repo.config_at(v.snapshot, f.path) for f in v.snapshot.files
               if f.path.rpartition("/")[2] == CONFIG_NAME}
    main_config = configs.get(CONFIG_NAME) or next(iter(configs.values()), {})
    return {
        "version": v.to_json(),
        "local_path": v.commit.base.local_path,
        "labels": repo.decorations().get(oid, []),
        "configs": configs,
        "snippets": load_snippets(repo.work_tree, v.commit, main_config),
    }


def load_snippets(work_tree: Path, commit: Commit, config: dict[str, Any]) -> dict[str, str]:
    """Python that loads this version: with ``adaptvc.load`` (straight from the store, checks the base pin),
    and with plain PEFT from a checked-out folder. Every string is a Python literal made by ``repr``."""
    task = config.get("task_type") if isinstance(config.get("task_type"), str) else None
    auto = _AUTO_CLASS.get(task or "", "AutoModel")
    base = commit.base.name_or_path
    args = repr(base) if base else "'BASE_MODEL'  # the base model this adapter was trained on"
    if base and commit.base.revision:
        args += f", revision={commit.base.revision!r}"
    short = commit.id[:12]
    head = f"from transformers import {auto}\n\nbase = {auto}.from_pretrained({args})\n"
    folder = f"{work_tree.name}-{short}"
    return {
        "adaptvc": (f"import adaptvc\n{head}repository = {str(work_tree)!r}\n"
                    f"model = adaptvc.load(base, repository, rev={commit.id!r})\n"),
        "peft": (f"# adaptvc -C {_shell(str(work_tree))} checkout {short} -o {_shell(folder)}\n"
                 f"from peft import PeftModel\n{head}model = PeftModel.from_pretrained(base, {folder!r})\n"),
    }


def _shell(word: str) -> str:
    return shlex.quote(word)


# -- comparing ----------------------------------------------------------------------------------------------
def heatmap(diff: Diff) -> dict[str, Any]:
    """The cells of ``diff --plot``: :func:`adaptvc.tensors.plot.plot_values` grouped by
    ``_layer_and_kind`` into module kinds (rows, sorted) × layers (columns, no-layer first), each cell with
    the module (or tensor) it shows, its value (``null``: not comparable), and the tensors below it.
    ``vmax`` is the colour scale's top, as in the picture."""
    from ..tensors.plot import _layer_and_kind, plot_values

    label, values = plot_values(diff)
    cells: dict[tuple[str, int | None], tuple[str, float | None]] = {}
    for name, value in values.items():
        layer, kind = _layer_and_kind(name)
        cells[(kind, layer)] = (name, value if value is None or math.isfinite(value) else None)
    kinds = sorted({k for k, _ in cells})
    layers = sorted({i for _, i in cells}, key=lambda i: -1 if i is None else i)
    modules = {m.name for m in diff.modules}
    below: dict[str, list[str]] = {}
    for t in diff.tensors:  # a module's tensors: its name followed by '.'; a tensor cell shows itself
        prefix = t.name
        while prefix and prefix not in modules:
            prefix = prefix.rpartition(".")[0]
        below.setdefault(prefix or t.name, []).append(t.name)
    return {
        "label": label,
        "kinds": kinds,
        "layers": layers,
        "cells": [{"kind": kind, "layer": layer, "row": kinds.index(kind), "col": layers.index(layer),
                   "name": name, "value": value, "tensors": below.get(name, [name])}
                  for (kind, layer), (name, value) in cells.items()],
        "vmax": _top([v for _, v in cells.values()]),
        "changed": sum(1 for v in values.values() if v),
        "compared": len(values),
    }


# -- across a run -------------------------------------------------------------------------------------------
def run_chain(repo: Repository, tip: str, first: str | None = None, count: int = DEFAULT_RUN) -> list[Commit]:
    """The versions of a run, oldest first: ``tip`` and its first-parent ancestors, back to ``first``
    (included) or ``count`` versions in all. Raises when ``first`` is not on that line within MAX_RUN."""
    limit = MAX_RUN if first is not None else max(2, min(count, MAX_RUN))
    chain: list[Commit] = []
    oid: str | None = tip
    while oid is not None and len(chain) < limit:
        c = repo.store.read_commit(oid)
        chain.append(c)
        if oid == first:
            break
        oid = c.parents[0] if c.parents else None
    if first is not None and chain[-1].id != first:
        raise AdaptvcError(f"{first[:12]} is not among the {MAX_RUN} first-parent ancestors of {tip[:12]}: "
                           "choose a closer 'from' version")
    chain.reverse()
    return chain


def _top(values: Sequence[float | None]) -> float:
    """The top of a colour scale over ``values`` (as ``diff --plot``: the largest finite value, else 1)."""
    finite = [v for v in values if v is not None]
    top = max(finite) if finite else 0.0
    return top if top > 0 else 1.0


def run_grid(chain: Sequence[Commit], heats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The layers × versions view: ``heats[i]`` is :func:`heatmap` of ``chain[i]`` → ``chain[i+1]``. One
    row per (layer, kind) found in any step (by layer, then kind; with the indices of its layer in ``layers``
    and of its kind in ``kinds``), one column per step, each value the step's heat-map cell (``null`` where
    the step has none). ``vmax`` is the top of one colour scale for the whole run, ``step_vmax`` of each
    step's own."""
    keys: dict[tuple[int | None, str], str] = {}
    lookup = []
    for h in heats:
        cells = {(c["layer"], c["kind"]): c for c in h["cells"]}
        lookup.append(cells)
        for (layer, kind), c in cells.items():
            keys.setdefault((layer, kind), c["name"])
    rows = sorted(keys, key=lambda k: (-1 if k[0] is None else k[0], k[1]))
    layers = sorted({k[0] for k in rows}, key=lambda i: -1 if i is None else i)
    kinds = sorted({k[1] for k in rows})
    values = [[(cells.get(k) or {}).get("value") for cells in lookup] for k in rows]
    return {
        "label": heats[0]["label"] if heats else "",
        "versions": [{"id": c.id, "message": c.summary, "timestamp": c.timestamp,
                      "step": _number(c.metadata.get("step"))} for c in chain],
        "steps": [{"a": a.id, "b": b.id} for a, b in pairwise(chain)],
        "layers": layers,
        "kinds": kinds,
        "rows": [{"layer": layer, "kind": kind, "name": keys[(layer, kind)], "layer_index": layers.index(layer),
                  "kind_index": kinds.index(kind)} for layer, kind in rows],
        "values": values,
        "vmax": _top([v for row in values for v in row]),
        "step_vmax": [_top([row[i] for row in values]) for i in range(len(heats))],
    }
