"""Helpers that need no torch: adapters written with numpy, the CLI run in-process or as a real process.

Tests that import only this module (not ``tests.helpers``) run in the fast tier (``make test-fast``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-m", "adaptvc"]
PREFIX = "base_model.model.model.layers"


def write_adapter(folder: str | os.PathLike[str], seed: int = 0, layers: int = 2, rank: int = 4, dim: int = 32,
                  dtype: str = "float32", config: dict | None = None) -> Path:
    """A LoRA adapter in PEFT layout (q_proj and v_proj of ``layers`` layers), values from ``seed``."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(layers):
        for m in ("q_proj", "v_proj"):
            p = f"{PREFIX}.{i}.self_attn.{m}"
            data[f"{p}.lora_A.weight"] = rng.standard_normal((rank, dim)).astype(dtype)
            data[f"{p}.lora_B.weight"] = rng.standard_normal((dim, rank)).astype(dtype)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(data, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": ["q_proj", "v_proj"],
           "base_model_name_or_path": "org/tiny", "task_type": "CAUSAL_LM"}
    cfg.update(config or {})
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return folder


def big_adapter(folder: str | os.PathLike[str], seed: int, mbytes: int) -> Path:
    """An adapter of about ``mbytes`` MB (float32), for tests that need writes to take a while."""
    dim = 1024
    rank = max(1, mbytes * (1 << 20) // (2 * 2 * 4 * 2 * dim))
    return write_adapter(folder, seed, layers=2, rank=rank, dim=dim)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


def cli(work: str | os.PathLike[str], *args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``adaptvc -C work ARGS`` in-process (through the same error boundary as the command)."""
    from click.testing import CliRunner

    from adaptvc.cli.main import cli as group

    res = CliRunner().invoke(group, ["-C", str(work), *args], env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return Result(res.exit_code, res.stdout, res.stderr)


def proc(work: str | os.PathLike[str] | None, *args: str | bytes, env: dict[str, str] | None = None,
         timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run ``python -m adaptvc [-C work] ARGS`` as a real process (arguments may be bytes)."""
    cmd: list[str | bytes] = [*CLI, *(["-C", str(work)] if work is not None else []), *args]
    return subprocess.run(cmd, env={**ENV, **(env or {})}, capture_output=True, timeout=timeout, **kw)


def ok(res: Result | subprocess.CompletedProcess) -> Result | subprocess.CompletedProcess:
    code = res.exit_code if isinstance(res, Result) else res.returncode
    assert code == 0, (res.stdout, res.stderr)
    return res


def assert_refused(res: Result | subprocess.CompletedProcess, *needles: str) -> str:
    """One line on stderr starting with ``Error: ``, exit code 1, no traceback; returns the line."""
    if isinstance(res, Result):
        code, err = res.exit_code, res.stderr
    else:
        code = res.returncode
        err = res.stderr.decode("utf-8", "replace") if isinstance(res.stderr, bytes) else res.stderr
    assert "Traceback" not in err, err
    assert code == 1, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def digest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """{relative path: sha256 or 'link -> target' or 'dir'} of everything below ``folder`` (links not followed)."""
    root = Path(folder)
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            if name == "commit-cache":  # a cache of what the store holds, written by any command that reads
                continue
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link -> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def put_raw_object(store_root: str | os.PathLike[str], data: bytes) -> str:
    """Write bytes into a store as a loose object (format 1 layout), bypassing every check."""
    import xxhash

    oid = xxhash.xxh3_128_hexdigest(data)
    p = Path(store_root, "objects", oid[:2], oid[2:])
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return oid


def canonical(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def nested_json(depth: int) -> str:
    return "[" * depth + "]" * depth


#: run the CLI in a fresh interpreter and print, on the last line of stderr, ``exit CODE`` and then the
#: interpreter's peak memory in MB (VmHWM: unlike ru_maxrss it starts afresh at exec, not at fork)
PEAK_RSS_RUNNER = (
    "import sys\nfrom adaptvc.cli.main import main\n"
    "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    print('exit', e.code, file=sys.stderr)\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
    "print(int(hwm) // 1024, file=sys.stderr)\n"
)


def peak_rss(work: str | os.PathLike[str] | None, *args: str, cwd: str | os.PathLike[str] | None = None,
             ) -> tuple[int, int | None, str]:
    """(peak MB, exit code, stderr without the two measurement lines) of ``adaptvc [-C work] ARGS``."""
    cmd = [sys.executable, "-c", PEAK_RSS_RUNNER, *(["-C", str(work)] if work is not None else []), *args]
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=cwd)
    lines = res.stderr.strip().splitlines()
    code = next((int(x.split()[1]) if x.split()[1].isdigit() else None for x in lines if x.startswith("exit ")), 0)
    rest = "\n".join(x for x in lines[:-1] if not x.startswith("exit "))
    return int(lines[-1]), code, rest


def zstd_bomb(megabytes: int = 1500) -> bytes:
    """A zstd frame of a few tens of kilobytes that inflates to ``megabytes`` MB of zeros (no size declared)."""
    import zstandard

    w = zstandard.ZstdCompressor(level=1).compressobj()
    zeros = b"\0" * (1 << 20)
    out = bytearray()
    for _ in range(megabytes):
        out += w.compress(zeros)
    out += w.flush()
    return bytes(out)


def stored_at(store, oid: str) -> tuple[Path, int, int]:
    """(file, offset, length) of an object's stored bytes: a loose file, or a range of a pack."""
    where = store.location_of(oid)
    assert where is not None, f"{oid} is not in the store"
    return where


def corrupt_stored(store, oid: str, position: int = 100, zero: bool = False) -> None:
    """Damage an object where it is stored (one flipped byte, or every byte zeroed), whatever the layout."""
    path, offset, length = stored_at(store, oid)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    if zero:
        data[offset:offset + length] = b"\0" * length
    else:
        data[offset + position % length] ^= 0xFF
    path.write_bytes(bytes(data))


def set_age(store, oid: str, seconds: float) -> None:
    """Make the file holding an object look ``seconds`` old (a pack is aged as a whole)."""
    import time

    path, _, _ = stored_at(store, oid)
    old = time.time() - seconds
    os.utime(path, (old, old))


def age_of(store, oid: str) -> float:
    import time

    path, _, _ = stored_at(store, oid)
    return time.time() - path.stat().st_mtime


def loose_store(work: str | os.PathLike[str]) -> None:
    """Turn a repository that has no commits yet into a format-1 one (one file per object), for tests that
    work on single objects as files."""
    config = Path(work, ".adaptvc", "config.json")
    data = json.loads(config.read_text())
    data["format"] = 1
    config.write_text(json.dumps(data))
