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
