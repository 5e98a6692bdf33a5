"""The model card a Hub repository shows for a version pushed by adaptvc."""

from __future__ import annotations

import re

from ..objects import Commit, Snapshot

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_portable_name(name: str | None) -> bool:
    """A Hub model name (``org/model``), as opposed to a local path that means nothing to a visitor."""
    return bool(name) and bool(_REPO_ID.match(name or "")) and ".." not in (name or "")


def model_card(repo_id: str, commit: Commit, snapshot: Snapshot, history: list[Commit], config: dict) -> str:
    """The Hub model card for a version: YAML front matter the Hub understands, and the version history."""
    peft_type = str(config.get("peft_type") or "lora").lower()
    lines = ["---"]
    base = commit.base.name_or_path
    if is_portable_name(base):  # a local path is never published as base_model
        lines.append(f"base_model: {base}")
    lines += ["library_name: peft", "tags:", "- adaptvc", f"- {peft_type}", "---", "",
              f"# {repo_id.split('/')[-1]}", "",
              f"A PEFT adapter ({peft_type}) versioned with adaptvc, version "
              f"`{commit.id[:12]}`: {commit.summary or '(no message)'}.", "",
              "```python", "from peft import PeftModel",
              f'model = PeftModel.from_pretrained(base_model, "{repo_id}", revision="<tag or commit>")', "```", ""]
    if base:
        at = f" at revision `{commit.base.revision}`" if commit.base.revision else ""
        lines.append(f"Base model: `{base}`{at}.")
        lines.append("")
    lines += ["## Versions", "", "| version | date | message |", "|---|---|---|"]
    for c in history[:50]:
        msg = (c.summary or "").replace("|", "\\|")
        lines.append(f"| `{c.id[:12]}` | {c.timestamp[:19].replace('T', ' ')} | {msg} |")
    tensors = len(snapshot.tensors())
    lines += ["", f"{tensors} tensors in {len(snapshot.files)} files. Clone the whole history with "
              f"`adaptvc clone hf://{repo_id}`.", ""]
    return "\n".join(lines)
