"""What ``gc --aggressive`` compresses, and against what: every reachable tensor blob of a floating-point dtype,
each coded (when that turns out smaller) as the difference from the same tensor in its commit's first parent.

Chains stay short and acyclic by construction: commits are planned parents first, a blob is planned once (at
its first commit), a base is always a blob planned before it, and a blob whose base is already
:data:`~adaptvc.storage.compression.MAX_CHAIN` deltas deep stands on its own. The store may still store any
blob on its own (when the difference does not pay); a chain is then only shorter than planned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..objects import TensorEntry
from ..storage.base import ObjectStore
from ..storage.compression import ELEMENT_SIZE, MAX_CHAIN
from .graph import parents_first

#: element sizes that can be coded as a difference
DELTA_ELEMENT_SIZES = (2, 4)


@dataclass(frozen=True)
class CompressionPlan:
    dtypes: dict[str, str] = field(default_factory=dict)  # blob id -> dtype, for every compressible tensor blob
    bases: dict[str, str] = field(default_factory=dict)  # blob id -> the blob it may be coded against
    depth: dict[str, int] = field(default_factory=dict)  # blob id -> deltas to decode it, as planned

    def to_dict(self) -> dict[str, object]:
        return {"blobs": len(self.dtypes), "deltas": len(self.bases),
                "max_depth": max(self.depth.values(), default=0)}


def plan_compression(store: ObjectStore, reachable: dict[str, str], deltas: bool = True,
                     max_chain: int = MAX_CHAIN) -> CompressionPlan:
    """The plan for the reachable objects ``{id: kind}`` (from :func:`adaptvc.ops.reachability.walk`)."""
    max_chain = min(max_chain, MAX_CHAIN)
    commits = {oid: store.read_commit(oid) for oid, kind in reachable.items() if kind == "commit"}
    snapshots: dict[str, dict[str, TensorEntry]] = {}

    def tensors(snapshot: str) -> dict[str, TensorEntry]:
        if snapshot not in snapshots:
            snapshots[snapshot] = dict(store.read_snapshot(snapshot).tensors())
        return snapshots[snapshot]

    plan = CompressionPlan()
    for oid in parents_first(commits, lambda oid: commits[oid].parents):
        commit = commits[oid]
        parent = next((p for p in commit.parents if p in commits), None)
        before = tensors(commits[parent].snapshot) if parent is not None and deltas else {}
        for name, t in tensors(commit.snapshot).items():
            if t.dtype not in ELEMENT_SIZE:
                continue
            plan.dtypes.setdefault(t.blob, t.dtype)
            if t.blob in plan.depth:
                continue
            p = before.get(name)
            if p is not None and _pairs(p, t) and p.blob in plan.depth and plan.depth[p.blob] < max_chain:
                plan.bases[t.blob] = p.blob
                plan.depth[t.blob] = plan.depth[p.blob] + 1
            else:
                plan.depth[t.blob] = 0
    return plan


def _pairs(parent: TensorEntry, t: TensorEntry) -> bool:
    return (parent.blob != t.blob and parent.dtype == t.dtype and parent.size == t.size
            and ELEMENT_SIZE[t.dtype] in DELTA_ELEMENT_SIZES)
