"""The tools compared, behind one interface: init a store, commit a version, check an old one out, size."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

TIME = shutil.which("time") or "/usr/bin/time"


@dataclass
class Run:
    seconds: float
    peak_kb: int
    code: int


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> Run:
    """Run a command; wall time and peak RSS (GNU time's %M) of the process."""
    with tempfile.NamedTemporaryFile(suffix=".time") as t:
        start = time.perf_counter()
        res = subprocess.run([TIME, "-f", "%M", "-o", t.name, *cmd], cwd=cwd, env=env, capture_output=True,
                             text=True)
        seconds = time.perf_counter() - start
        try:
            peak = int(Path(t.name).read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            peak = 0
    if res.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return Run(seconds, peak, res.returncode)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


class Tool:
    name = "tool"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"

    def available(self) -> bool:
        return True

    def init(self) -> None: ...

    def commit(self, version: Path, message: str) -> Run: ...

    def checkout(self, rev: int, out: Path) -> Run: ...

    def store_bytes(self) -> int: ...


class Adaptvc(Tool):
    name = "adaptvc"
    cli: ClassVar[list[str]] = [sys.executable, "-m", "adaptvc"]

    def init(self) -> None:
        run([*self.cli, "init", str(self.work)])
        self.versions = 0

    def commit(self, version: Path, message: str) -> Run:
        r = run([*self.cli, "-C", str(self.work), "commit", "-q", "-m", message, "--from", str(version)])
        self.versions += 1
        return r

    def checkout(self, rev: int, out: Path) -> Run:
        return run([*self.cli, "-C", str(self.work), "checkout", "-q", f"HEAD~{self.versions - rev}", "-o",
                    str(out)])

    def store_bytes(self) -> int:
        return tree_bytes(self.work / ".adaptvc" / "objects")


def _git_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@e",
            "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@e"}


class GitLfs(Tool):
    name = "git-lfs"

    def available(self) -> bool:
        return shutil.which("git-lfs") is not None

    def init(self) -> None:
        self.work.mkdir(parents=True)
        self.env = _git_env(self.root)
        for cmd in (["git", "init", "-q"], ["git", "lfs", "install", "--local"],
                    ["git", "lfs", "track", "*.safetensors"], ["git", "add", ".gitattributes"],
                    ["git", "commit", "-q", "-m", "lfs"]):
            run(cmd, cwd=self.work, env=self.env)
        self.versions = 0

    def commit(self, version: Path, message: str) -> Run:
        start = time.perf_counter()
        peak = 0
        for f in version.iterdir():
            shutil.copyfile(f, self.work / f.name)  # these tools version the work tree: put the version there
        tag = ["git", "tag", f"v{self.versions + 1}"]
        for cmd in (["git", "add", "-A"], ["git", "commit", "-q", "-m", message], tag):
            peak = max(peak, run(cmd, cwd=self.work, env=self.env).peak_kb)
        self.versions += 1
        return Run(time.perf_counter() - start, peak, 0)

    def checkout(self, rev: int, out: Path) -> Run:
        r = run(["git", "checkout", "-q", f"v{rev}", "--", "."], cwd=self.work, env=self.env)
        run(["git", "checkout", "-q", "HEAD", "--", "."], cwd=self.work, env=self.env)
        return r

    def store_bytes(self) -> int:
        return tree_bytes(self.work / ".git")


class Dvc(Tool):
    name = "dvc"

    def __init__(self, root: Path, dvc: str | None) -> None:
        super().__init__(root)
        self.dvc = dvc

    def available(self) -> bool:
        return self.dvc is not None and Path(self.dvc).exists()

    def init(self) -> None:
        self.work.mkdir(parents=True)
        self.env = {**_git_env(self.root), "DVC_NO_ANALYTICS": "1"}
        run(["git", "init", "-q"], cwd=self.work, env=self.env)
        run([self.dvc, "init", "-q"], cwd=self.work, env=self.env)
        run(["git", "commit", "-q", "-m", "dvc"], cwd=self.work, env=self.env)
        self.versions = 0

    def commit(self, version: Path, message: str) -> Run:
        start = time.perf_counter()
        peak = 0
        for f in version.iterdir():
            shutil.copyfile(f, self.work / f.name)
        for cmd in ([self.dvc, "add", "-q", "adapter_model.safetensors"], ["git", "add", "-A"],
                    ["git", "commit", "-q", "-m", message], ["git", "tag", f"v{self.versions + 1}"]):
            peak = max(peak, run(cmd, cwd=self.work, env=self.env).peak_kb)
        self.versions += 1
        return Run(time.perf_counter() - start, peak, 0)

    def checkout(self, rev: int, out: Path) -> Run:
        start = time.perf_counter()
        run(["git", "checkout", "-q", f"v{rev}", "--", "adapter_model.safetensors.dvc"], cwd=self.work, env=self.env)
        r = run([self.dvc, "checkout", "-q", "adapter_model.safetensors"], cwd=self.work, env=self.env)
        elapsed = time.perf_counter() - start
        run(["git", "checkout", "-q", "HEAD", "--", "adapter_model.safetensors.dvc"], cwd=self.work, env=self.env)
        run([self.dvc, "checkout", "-q", "adapter_model.safetensors"], cwd=self.work, env=self.env)
        return Run(elapsed, r.peak_kb, 0)

    def store_bytes(self) -> int:
        return tree_bytes(self.work / ".dvc" / "cache")
