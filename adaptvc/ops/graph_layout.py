"""Lay out a commit graph for display: which lane (column) each commit sits in and which lines join the rows.

Pure data in, pure data out — no store, no I/O — so ``log --graph`` and a web page draw the same picture:

>>> g = layout([("c3", ["c2", "b1"]), ("b1", ["c1"]), ("c2", ["c1"]), ("c1", [])])
>>> [(r.id, r.lane) for r in g.rows]
[('c3', 0), ('b1', 1), ('c2', 0), ('c1', 0)]
>>> [(e.from_lane, e.to_lane, e.target) for e in g.rows[0].edges]
[(0, 0, 'c2'), (0, 1, 'b1')]

Input: commits newest first, each with its parents (first parent first). They are put in topological order
first (a child always above its parents, otherwise the order given is kept: a clock that went backwards
cannot make a line point up). Output: one :class:`Row` per commit, top to bottom, with

* ``lane`` — the commit's column (0 = leftmost);
* ``edges`` — the lines from this row down to the next: ``from_lane`` at this row, ``to_lane`` at the next
  row, ``target`` the commit the line leads to (a line passing by keeps its lane; a line reaching its
  commit on the next row bends into that commit's lane);
* ``width`` — how many lanes this row and its lines use.

A parent that is not among the commits (history cut by ``-n``) gets a line that leaves the last row where
it appears and never arrives: draw it as a stub. Lanes are reused from the left when they free up, and a
first parent keeps its child's lane, so a branch's first-parent line is straight.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: a graph wider than this is not drawn lane by lane (tens of thousands of open branches)
MAX_LANES = 1024


@dataclass(frozen=True)
class Edge:
    """A line from (this row, ``from_lane``) to (next row, ``to_lane``) on the way to commit ``target``."""

    from_lane: int
    to_lane: int
    target: str

    def to_json(self) -> dict[str, Any]:
        return {"from": self.from_lane, "to": self.to_lane, "target": self.target}


@dataclass(frozen=True)
class Row:
    id: str
    parents: tuple[str, ...]
    lane: int
    edges: tuple[Edge, ...]
    width: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "parents": list(self.parents), "lane": self.lane,
                "edges": [e.to_json() for e in self.edges], "width": self.width}


@dataclass(frozen=True)
class GraphLayout:
    rows: tuple[Row, ...]

    @property
    def width(self) -> int:
        """Lanes needed to draw the whole graph."""
        return max((r.width for r in self.rows), default=0)

    def to_json(self) -> dict[str, Any]:
        """``{"width": N, "rows": [{"id", "parents", "lane", "edges": [{"from", "to", "target"}], "width"}]}``."""
        return {"width": self.width, "rows": [r.to_json() for r in self.rows]}


def topological(commits: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, tuple[str, ...]]]:
    """``commits`` with every child before its parents, otherwise in the given order; duplicates dropped."""
    items: dict[str, tuple[str, ...]] = {}
    for oid, parents in commits:
        if oid not in items:
            items[oid] = tuple(parents)
    index = {oid: i for i, oid in enumerate(items)}
    children = {oid: 0 for oid in items}
    for oid, parents in items.items():
        for p in set(parents):
            if p in children and p != oid:
                children[p] += 1
    ready = [index[oid] for oid, n in children.items() if n == 0]
    heapq.heapify(ready)
    order = list(items)
    out: list[tuple[str, tuple[str, ...]]] = []
    while ready:
        oid = order[heapq.heappop(ready)]
        out.append((oid, items[oid]))
        for p in set(items[oid]):
            if p in children and p != oid:
                children[p] -= 1
                if children[p] == 0:
                    heapq.heappush(ready, index[p])
    if len(out) < len(items):  # a cycle (impossible in a hash-linked history): keep the rest as given
        seen = {oid for oid, _ in out}
        out += [(oid, items[oid]) for oid in order if oid not in seen]
    return out


def _free_slot(slots: list[str | None]) -> int:
    for i, s in enumerate(slots):
        if s is None:
            return i
    if len(slots) >= MAX_LANES:
        raise ValueError(f"the graph needs more than {MAX_LANES} lanes")
    slots.append(None)
    return len(slots) - 1


def _lane_of(slots: list[str | None], oid: str) -> int | None:
    for i, s in enumerate(slots):
        if s == oid:
            return i
    return None


def layout(commits: Iterable[tuple[str, Sequence[str]]]) -> GraphLayout:
    """The lanes and lines of ``commits`` (``(id, parents)`` pairs, newest first). See the module docstring."""
    ordered = topological(list(commits))
    slots: list[str | None] = []          # which commit each lane is waiting for
    rows: list[Row] = []
    for i, (oid, parents) in enumerate(ordered):
        lane = _lane_of(slots, oid)
        if lane is None:
            lane = _free_slot(slots)
        for j, s in enumerate(slots):  # every line that waited for this commit ends here
            if s == oid:
                slots[j] = None
        lines: list[tuple[int, int]] = [(j, j) for j, s in enumerate(slots) if s is not None]
        for k, p in enumerate(dict.fromkeys(parents)):
            if k == 0:  # the first parent continues in this lane (lines to it elsewhere join it later)
                at = lane
            else:
                found = _lane_of(slots, p)
                at = found if found is not None else _free_slot(slots)
            slots[at] = p
            lines.append((lane, at))
        # where each line lands on the next row: a line reaching the next commit bends into its lane
        nxt = ordered[i + 1][0] if i + 1 < len(ordered) else None
        land = _lane_of(slots, nxt) if nxt is not None else None
        edges = []
        for frm, at in sorted(set(lines)):
            target = slots[at]
            assert target is not None
            edges.append(Edge(frm, land if target == nxt and land is not None else at, target))
        edges.sort(key=lambda e: (e.from_lane, e.to_lane))
        width = max([lane, *(max(e.from_lane, e.to_lane) for e in edges)]) + 1
        rows.append(Row(oid, parents, lane, tuple(edges), width))
        while slots and slots[-1] is None:
            slots.pop()
    return GraphLayout(tuple(rows))


def render_text(g: GraphLayout, labels: Sequence[str] | None = None) -> list[str]:
    """The graph as text lines, git style: ``*`` for a commit, ``|`` ``/`` ``\\`` for lines; ``labels[i]``
    is printed after row ``i``'s commit. Lines between rows are added only where a line changes lane."""
    out: list[str] = []
    prev_into: set[int] = set()  # lanes that lines from the row above arrive in
    for i, row in enumerate(g.rows):
        width = max(row.width, *(x + 1 for x in prev_into)) if prev_into else row.width
        cells = [" "] * (2 * width)
        for lane in prev_into:
            cells[2 * lane] = "|"
        for e in row.edges:  # lines that pass this row keep showing
            if e.from_lane != row.lane:
                cells[2 * e.from_lane] = "|"
        cells[2 * row.lane] = "*"
        label = labels[i] if labels is not None and i < len(labels) else ""
        out.append(("".join(cells).rstrip() + " " + label).rstrip())
        bends = [e for e in row.edges if e.from_lane != e.to_lane]
        if bends:
            w = max(max(e.from_lane, e.to_lane) for e in row.edges) + 1
            conn = [" "] * (2 * w)
            for e in row.edges:
                a, b = e.from_lane, e.to_lane
                if a == b:
                    conn[2 * a] = "|"
                elif b > a:
                    for c in range(2 * a + 1, 2 * b - 1):
                        conn[c] = "-" if conn[c] == " " else conn[c]
                    conn[2 * b - 1] = "\\"
                else:
                    conn[2 * b + 1] = "/"
                    for c in range(2 * b + 2, 2 * a):
                        conn[c] = "-" if conn[c] == " " else conn[c]
            out.append("".join(conn).rstrip())
        prev_into = {e.to_lane for e in row.edges}
    return out
