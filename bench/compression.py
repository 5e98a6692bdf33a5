"""``python -m bench.compression``: the codecs of ``gc --aggressive`` side by side — size and speed.

Two sets of versions:

- synthetic: N fully changed versions of a profile of :mod:`bench.adapters` (independent normal draws: nothing
  to gain from the parent version, so this measures the per-version codec alone);
- real: consecutive checkpoints of a LoRA trained with AdamW in bf16 (:mod:`bench.train_lora`, trained once and
  cached), taken every 10 steps and every 100 steps.

For each codec: the stored size as a share of the raw tensor bytes (a tensor whose container does not pay is
counted raw, as the store keeps it), compression and decompression speed in MB of raw bytes per second on one
core (a delta's decompression includes decoding its chain of bases, as a checkout does). Also: decoding one
synthetic version on both cores against a durable ``dd`` of the same bytes (what checkout from a compressed
store is compared with).

``--quick`` uses 3 versions of a 4-layer profile and a short training run (about two minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from adaptvc.hashing import hash_bytes
from adaptvc.storage import compression as avz

from .adapters import PROFILES, _values
from .train_lora import Setup, train

Tensors = dict[str, bytes]


# -- the codecs ----------------------------------------------------------------------------------------------
@dataclass
class Codec:
    """Encode a tensor (given its parent version's tensor of the same name, for codecs that use it) into
    stored bytes (None: stored raw); decode through a lookup of stored objects, as a store would."""

    name: str
    encode: Callable[[bytes, str, bytes | None, str | None], bytes | None]
    decode: Callable[[str, bytes, Callable[[str], bytes | None], Callable[[str], bytes]], bytes]
    delta: bool = False
    max_chain: int = 0


def _zstd_plain(data: bytes, dtype: str, base: bytes | None, base_id: str | None) -> bytes | None:
    import zstandard

    out = zstandard.ZstdCompressor(level=1).compress(data)
    return out if len(out) <= avz.WORTHWHILE * len(data) else None


def _zstd_plain_decode(oid, stored, lookup, raw) -> bytes:
    import zstandard

    return zstandard.ZstdDecompressor().decompress(stored)


def _avz1(data: bytes, dtype: str, base: bytes | None, base_id: str | None) -> bytes | None:
    """Today's encoder (container 1): bf16 split into exponent / sign+mantissa, zstd level 1 on each."""
    import zstandard

    k = avz.ELEMENT_SIZE.get(dtype, 1)
    if k == 1 or len(data) % k:
        codec, groups = 1, [data]
    elif dtype == "BF16":
        codec, groups = avz.BF16_CODEC, avz._encode(avz.SPLIT7, data)[1]
    else:
        codec, groups = k, avz._encode(k, data)[1]
    z = zstandard.ZstdCompressor(level=1)
    parts = [avz.MAGIC, struct.pack("<BQ", codec, len(data)), struct.pack("<B", len(groups))]
    for g in groups:
        packed = z.compress(g)
        parts += [struct.pack("<BQ", 1, len(packed)), packed] if len(packed) < 0.98 * len(g) else \
            [struct.pack("<BQ", 0, len(g)), g]
    out = b"".join(parts)
    return out if len(out) <= avz.WORTHWHILE * len(data) else None


def _avz2(transform: int | None):
    def encode(data: bytes, dtype: str, base: bytes | None, base_id: str | None) -> bytes | None:
        if transform is None:
            return avz.compress(data, dtype, base, base_id)
        params, groups = avz._encode(transform, data)
        out = avz._container(transform, len(data), params, groups, None)
        return out if len(out) <= avz.WORTHWHILE * len(data) else None

    return encode


def _avz2_decode(oid, stored, lookup, raw, max_chain: int = avz.MAX_CHAIN) -> bytes:
    return b"".join(avz.iter_chain(oid, stored, lookup, lambda o: [raw(o)], max_depth=max(max_chain, avz.MAX_CHAIN)))


def _xor_encode(data: bytes, dtype: str, base: bytes | None, base_id: str | None) -> bytes | None:
    """XOR against the parent's tensor (before the exponent split), kept only when smaller than on its own."""
    own = avz.compress(data, dtype)
    if base is None or len(base) != len(data) or dtype not in ("BF16", "F16"):
        return own
    x = (np.frombuffer(data, "<u2") ^ np.frombuffer(base, "<u2")).tobytes()
    params, groups = avz._encode(avz.SPLIT7, x)
    inner = avz._container(avz.SPLIT7, len(x), params, groups, None)
    if own is not None and len(own) <= len(inner) + 16:
        return own
    out = b"XOR1" + bytes.fromhex(base_id) + inner
    return out if len(out) <= avz.WORTHWHILE * len(data) else None


def _xor_decode(oid, stored, lookup, raw) -> bytes:
    if stored[:4] != b"XOR1":
        return avz.decompress(stored)
    base_id = stored[4:20].hex()
    base_stored = lookup(base_id)
    base = raw(base_id) if base_stored is None else _xor_decode(base_id, base_stored, lookup, raw)
    x = np.frombuffer(avz.decompress(stored[20:]), "<u2")
    return (x ^ np.frombuffer(base, "<u2")).tobytes()


def _zipnn():
    try:
        from zipnn import ZipNN
    except ImportError:
        return None
    from importlib.metadata import version

    z = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1)

    def encode(data: bytes, dtype: str, base: bytes | None, base_id: str | None) -> bytes | None:
        out = bytes(z.compress(data))
        return out if len(out) <= avz.WORTHWHILE * len(data) else None

    def decode(oid, stored, lookup, raw) -> bytes:
        return bytes(z.decompress(stored))

    return Codec(f"ZipNN {version('zipnn')} (bf16, Huffman, 1 thread)", encode, decode)


def codecs(real: bool) -> list[Codec]:
    out = [Codec("zstd -1, no grouping", _zstd_plain, _zstd_plain_decode),
           Codec("AVZ1 today: exponent split, zstd -1 (read by the new decoder)", _avz1, _avz2_decode)]
    z = _zipnn()
    if z is not None:
        out.append(z)
    out += [Codec("AVZ2 byte planes (hi/lo), tuned zstd", _avz2(2), _avz2_decode),
            Codec("AVZ2 exponent split, tuned zstd", _avz2(avz.SPLIT7), _avz2_decode),
            Codec("AVZ2 exponent rank + 4 mantissa bits (new)", _avz2(avz.BF16_SYMBOLS), _avz2_decode)]
    chains = (1, 2, 4, 8) if real else (4,)
    out += [Codec(f"AVZ2 new + difference from parent, chain <= {d}", _avz2(None),
                  lambda oid, stored, lookup, raw, d=d: _avz2_decode(oid, stored, lookup, raw, d), True, d)
            for d in chains]
    out.append(Codec("XOR with parent + exponent split, chain <= 4", _xor_encode, _xor_decode, True, 4))
    return out


# -- measuring -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    codec: str
    raw: int = 0
    stored: int = 0
    compress_s: float = 0.0
    decompress_s: float = 0.0
    round_trip_ok: bool = True
    deltas: int = 0
    tensors: int = 0

    def row(self) -> dict:
        return {"codec": self.codec, "ratio": self.stored / self.raw if self.raw else float("nan"),
                "compress_MBps": self.raw / self.compress_s / 1e6 if self.compress_s else 0.0,
                "decompress_MBps": self.raw / self.decompress_s / 1e6 if self.decompress_s else 0.0,
                "round_trip": self.round_trip_ok, "delta_share": self.deltas / self.tensors if self.tensors else 0}


@dataclass
class Store:
    """The objects a codec stored: id -> stored bytes (None when raw), raw bytes, delta depth."""

    stored: dict[str, bytes | None] = field(default_factory=dict)
    raw: dict[str, bytes] = field(default_factory=dict)
    depth: dict[str, int] = field(default_factory=dict)


def measure(codec: Codec, versions: Iterator[tuple[Tensors, str]]) -> Result:
    """Encode each version (each tensor against the previous version's tensor of the same name when the codec
    takes deltas and the chain allows), then decode every tensor of it and check it."""
    res = Result(codec.name)
    store = Store()
    previous: dict[str, str] = {}
    for tensors, dtype in versions:
        ids = {}
        for name, data in tensors.items():
            oid = hash_bytes(data)
            ids[name] = oid
            if oid in store.stored:
                continue
            base_id = previous.get(name) if codec.delta else None
            if base_id is not None and store.depth.get(base_id, 0) >= codec.max_chain:
                base_id = None
            base = store.raw[base_id] if base_id is not None else None
            start = time.perf_counter()
            out = codec.encode(data, dtype, base, base_id)
            res.compress_s += time.perf_counter() - start
            store.stored[oid] = out
            store.raw[oid] = data
            named = _base_named(out)
            store.depth[oid] = store.depth.get(named, 0) + 1 if named else 0
            res.deltas += named is not None
            res.tensors += 1
            res.raw += len(data)
            res.stored += len(data) if out is None else len(out)
        for name, oid in ids.items():
            out = store.stored[oid]
            if out is None:
                continue
            start = time.perf_counter()
            got = codec.decode(oid, out, store.stored.__getitem__, store.raw.__getitem__)
            res.decompress_s += time.perf_counter() - start
            res.round_trip_ok &= got == tensors[name]
        previous = ids
        current = set(ids.values())
        for oid in list(store.raw):  # raw bytes are kept for the parent (to encode) and for objects stored raw
            if oid not in current and store.stored[oid] is not None:
                del store.raw[oid]
        if not codec.delta:  # nothing refers to an older version's containers
            for oid in list(store.stored):
                if oid not in current:
                    store.stored[oid] = b""
    return res


def _base_named(out: bytes | None) -> str | None:
    if out is None:
        return None
    if out[:4] == b"XOR1":
        return out[4:20].hex()
    if out[:4] == avz.MAGIC2:
        return avz.base_of(out)
    return None


def synthetic_versions(profile_name: str, count: int, layers: int | None) -> Iterator[tuple[Tensors, str]]:
    """The tensors of ``bench.adapters.write_adapter(profile, seed=i)`` for i < count, one version at a time."""
    profile = PROFILES[profile_name]
    if layers is not None:
        profile = replace(profile, layers=layers)
    for seed in range(count):
        rng = np.random.default_rng(seed)
        yield {name: _values(shape, profile.dtype, rng).tobytes() for name, shape in profile.shapes().items()}, \
            profile.dtype


def checkpoint_versions(folders: list[Path]) -> Iterator[tuple[Tensors, str]]:
    for folder in folders:
        raw = (folder / "adapter_model.safetensors").read_bytes()
        n = struct.unpack_from("<Q", raw)[0]
        header = json.loads(raw[8:8 + n])
        tensors, dtypes = {}, set()
        for name, info in header.items():
            if name == "__metadata__":
                continue
            start, end = info["data_offsets"]
            tensors[name] = raw[8 + n + start:8 + n + end]
            dtypes.add(info["dtype"])
        yield tensors, dtypes.pop() if len(dtypes) == 1 else "BF16"


def parallel_decode_vs_dd(profile_name: str, layers: int | None, scratch: Path) -> dict:
    """Decode one compressed synthetic version on both cores (as checkout does) against a durable ``dd`` of its
    raw bytes to a new file: medians of 3 interleaved rounds."""
    tensors, dtype = next(synthetic_versions(profile_name, 1, layers))
    containers = [(avz.compress(t, dtype), len(t)) for t in tensors.values()]
    raw = scratch / "raw.bin"
    with open(raw, "wb") as f:
        for t in tensors.values():
            f.write(t)
    ratios, decode_s, dd_s = [], [], []
    for r in range(3):
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:
            for _ in pool.map(lambda cn: avz.decompress(cn[0], "x", cn[1]), containers):
                pass
        decode_s.append(time.perf_counter() - start)
        out = scratch / f"dd-{r}.out"
        start = time.perf_counter()
        subprocess.run(["dd", f"if={raw}", f"of={out}", "bs=16M", "conv=fsync", "status=none"], check=True)
        dd_s.append(time.perf_counter() - start)
        out.unlink()
        ratios.append(decode_s[-1] / dd_s[-1])
    raw.unlink()
    mb = sum(len(t) for t in tensors.values()) / 1e6
    return {"MB": mb, "decode_2_cores_s": sorted(decode_s)[1], "dd_s": sorted(dd_s)[1],
            "decode_over_dd": sorted(ratios)[1]}


def table(rows: list[dict]) -> str:
    lines = ["| codec | stored / raw | compress MB/s | decompress MB/s | deltas | round trip |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['codec']} | {100 * r['ratio']:.1f} % | {r['compress_MBps']:.0f} | "
                     f"{r['decompress_MBps']:.0f} | {100 * r['delta_share']:.0f} % | "
                     f"{'exact' if r['round_trip'] else 'WRONG BYTES'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 small synthetic versions, a short training run")
    ap.add_argument("--versions", type=int, default=10, help="synthetic versions (default 10)")
    ap.add_argument("--profile", default="7b-r64-all-bf16", choices=sorted(PROFILES))
    ap.add_argument("--runs", type=Path, default=Path(tempfile.gettempdir()) / "adaptvc-bench-lora",
                    help="where the trained checkpoints are cached")
    ap.add_argument("--checkpoints", type=Path, action="append", default=[],
                    help="a folder of step-* checkpoints to measure instead of training (repeatable)")
    ap.add_argument("--no-synthetic", action="store_true", help="measure only the real checkpoints")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    layers = 4 if args.quick else None
    count = 3 if args.quick else args.versions
    setup = Setup(steps=60, every=10, layers=2, hidden=512, intermediate=1376, heads=8) if args.quick else Setup()
    results: dict = {"synthetic": {}, "real": {}}
    if not args.no_synthetic:
        print(f"## synthetic: {count} fully changed versions of {args.profile}"
              + (f" ({layers} layers)" if layers else ""))
        rows = []
        for codec in codecs(real=False):
            rows.append(measure(codec, synthetic_versions(args.profile, count, layers)).row())
            print(f"  {rows[-1]['codec']}: {100 * rows[-1]['ratio']:.2f} %", flush=True)
        results["synthetic"] = rows
        print(table(rows), flush=True)
    runs = args.checkpoints or [train(args.runs / ("quick" if args.quick else "full"), setup,
                                      log=lambda m: print("  train:", m, flush=True))[0].parent]
    for run in runs:
        folders = sorted(p for p in run.iterdir() if p.is_dir() and p.name.startswith("step-"))
        about = run / "setup.json"
        described = json.loads(about.read_text()) if about.exists() else {}
        every = int(folders[1].name.split("-")[1]) - int(folders[0].name.split("-")[1]) if len(folders) > 1 else 0
        every_100 = [f for f in folders if int(f.name.split("-")[1]) % 100 == 0] or folders[::5]
        for label, series in ((f"every {every} steps", folders), ("every 100 steps", every_100)):
            print(f"\n## real: {len(series)} checkpoints of {run} saved {label} ({described})")
            rows = [measure(codec, checkpoint_versions(series)).row() for codec in codecs(real=True)]
            results["real"][f"{run.name}, {label}"] = rows
            print(table(rows), flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_SCRATCH")) as scratch:
        results["checkout"] = parallel_decode_vs_dd(args.profile, layers, Path(scratch))
    c = results["checkout"]
    print(f"\n## decoding one version ({c['MB']:.0f} MB) on both cores: {c['decode_2_cores_s']:.2f} s; durable dd "
          f"of it: {c['dd_s']:.2f} s; ratio {c['decode_over_dd']:.2f} (median of 3 interleaved rounds)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
