"""Who made a commit: ADAPTVC_AUTHOR, else git's user.name/user.email as seen from the adapter's folder (the
repository's own config beats the global one, as in git), else user@host."""

from __future__ import annotations

import subprocess

from adaptvc import Repository

from .light import write_adapter


def git(folder, *args: str, env: dict[str, str]) -> None:
    subprocess.run(["git", "-C", str(folder), *args], check=True, env=env, capture_output=True)


def test_author_comes_from_git_config_repository_level_first(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Global Person\n\temail = global@example.org\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("ADAPTVC_AUTHOR", raising=False)
    for var in ("GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_COUNT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    env = dict(__import__("os").environ)

    plain = write_adapter(tmp_path / "plain", seed=1)
    assert Repository.init(plain).commit("v1").author == "Global Person <global@example.org>"

    work = write_adapter(tmp_path / "code" / "adapter", seed=2)
    git(tmp_path / "code", "init", "-q", env=env)
    git(tmp_path / "code", "config", "user.name", "Ada Lovelace", env=env)
    git(tmp_path / "code", "config", "user.email", "ada@example.org", env=env)
    assert Repository.init(work).commit("v1").author == "Ada Lovelace <ada@example.org>"

    monkeypatch.setenv("ADAPTVC_AUTHOR", "CI bot")
    write_adapter(work, seed=3)
    assert Repository(work).commit("v2").author == "CI bot"


def test_without_any_git_identity_the_author_is_user_at_host(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("ADAPTVC_AUTHOR", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    work = write_adapter(tmp_path / "w", seed=1)
    author = Repository.init(work).commit("v1").author
    assert "@" in author and "<" not in author


def test_a_commit_outside_any_git_repository_does_not_load_gitpython(tmp_path):
    """Provenance looks for a .git entry before importing GitPython: a commit in a plain folder stays light;
    inside a git work tree the code's commit is still recorded."""
    import sys

    code = ("import sys; from adaptvc import Repository; r = Repository.init(sys.argv[1]); r.commit('v1'); "
            "print('git' in sys.modules, (r.log()[0].provenance or {}).get('git_commit') is not None)")
    plain = write_adapter(tmp_path / "plain", seed=1)
    out = subprocess.run([sys.executable, "-c", code, str(plain)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr

    code_repo = tmp_path / "code"
    env = {**__import__("os").environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b",
           "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@b"}
    subprocess.run(["git", "init", "-q", str(code_repo)], check=True)
    (code_repo / "train.py").write_text("print('train')\n")
    git(code_repo, "add", "train.py", env=env)
    git(code_repo, "commit", "-qm", "code", env=env)
    inside = write_adapter(code_repo / "runs" / "adapter", seed=1)
    out = subprocess.run([sys.executable, "-c", code, str(inside)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"], out.stdout + out.stderr
