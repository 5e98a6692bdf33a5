"""The model card a Hub repository shows for a version pushed by adaptvc.

The adapter's own card (PEFT's or the Trainer's ``README.md``, with its YAML front matter) stays the card: its
front matter is parsed and extended with what the Hub needs (``library_name: peft``, ``base_model`` when it is
a portable name, tags) by ``huggingface_hub.ModelCard`` — the maintained parser of the Hub's own format — and
adaptvc appends one section between markers: how to load a version (the base model loaded too), and a table
of versions whose every revision is a real Hub revision (a Hub commit id or a tag), with dates, messages and
recorded metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..objects import Commit, Snapshot

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
BEGIN = "<!-- adaptvc:begin -->"
END = "<!-- adaptvc:end -->"
_REVISION = re.compile(r"^\| `([0-9a-f]{40})` ")
_TAG = re.compile(r"`([^`]+)`")
#: how a PEFT task type's base model is loaded
AUTO_CLASSES = {"CAUSAL_LM": "AutoModelForCausalLM", "SEQ_2_SEQ_LM": "AutoModelForSeq2SeqLM",
                "SEQ_CLS": "AutoModelForSequenceClassification", "TOKEN_CLS": "AutoModelForTokenClassification",
                "QUESTION_ANS": "AutoModelForQuestionAnswering", "FEATURE_EXTRACTION": "AutoModel"}
MAX_ROWS = 50


def is_portable_name(name: str | None) -> bool:
    """A Hub model name (``org/model``), as opposed to a local path that means nothing to a visitor."""
    return bool(name) and bool(_REPO_ID.match(name or "")) and ".." not in (name or "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _metrics(commit: Commit) -> str:
    meta = commit.metadata if isinstance(commit.metadata, dict) else {}
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(metrics.items())
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if isinstance(meta.get("step"), int):
        parts.append(f"step={meta['step']}")
    return ", ".join(parts)


def adaptvc_section(repo_id: str, commit: Commit, snapshot: Snapshot, history: list[Commit], config: dict,
                    hub_ids: Mapping[str, str], tags: Mapping[str, list[str]]) -> str:
    """The section adaptvc owns in the card: loading instructions and the version table."""
    base = commit.base.name_or_path
    portable = is_portable_name(base)
    auto = AUTO_CLASSES.get(str(config.get("task_type") or ""), "AutoModel")
    base_arg = f'"{base}"' if portable else '"<the base model: a Hub name or a local folder>"'
    revision = next(iter(tags.get(commit.id, [])), None) or "<a revision from the table>"
    subfolders = sorted({f.path.rpartition("/")[0] for f in snapshot.files
                         if "/" in f.path and f.path.endswith("adapter_config.json")})
    lines = [BEGIN, "## Versions (adaptvc)", "",
             f"A PEFT adapter ({str(config.get('peft_type') or 'lora').lower()}) versioned with "
             "adaptvc; every revision below (a Hub commit or a tag) loads with plain PEFT (the adaptvc id is "
             "for `adaptvc` commands only):", "",
             "```python", f"from transformers import {auto}", "from peft import PeftModel", "",
             f"base = {auto}.from_pretrained({base_arg})",
             f'model = PeftModel.from_pretrained(base, "{repo_id}", revision="{revision}")']
    for sub in subfolders:
        lines.append(f'# the adapter in sub-folder "{sub}": '
                     f'PeftModel.from_pretrained(base, "{repo_id}", subfolder="{sub}", revision=...)')
    lines += ["```", ""]
    if base:
        at = f" at revision `{commit.base.revision}`" if commit.base.revision else ""
        where = "" if portable else " (a local path on the machine that trained it)"
        lines += [f"Base model: `{base}`{at}{where}.", ""]
    lines += ["| revision | tags | date | message | metrics | adaptvc id |", "|---|---|---|---|---|---|"]
    for c in history[:MAX_ROWS]:
        rev = "this commit" if c.id == commit.id else (f"`{hub_ids[c.id]}`" if c.id in hub_ids else "")
        tag_text = " ".join(f"`{t}`" for t in tags.get(c.id, []))
        lines.append(f"| {rev} | {tag_text} | {c.timestamp[:19].replace('T', ' ')} | {_cell(c.summary)} | "
                     f"{_cell(_metrics(c))} | {c.id[:12]} |")
    lines += ["", f"{len(snapshot.tensors())} tensors in {len(snapshot.files)} files. Clone the whole history "
              f"with `adaptvc clone hf://{repo_id}`.", END, ""]
    return "\n".join(lines)


def model_card(repo_id: str, commit: Commit, snapshot: Snapshot, history: list[Commit], config: dict,
               user_card: str | None = None, hub_ids: Mapping[str, str] | None = None,
               tags: Mapping[str, list[str]] | None = None) -> str:
    """The Hub model card for a version: the user's card (or a short default), its front matter extended
    for the Hub, and adaptvc's section."""
    from huggingface_hub import ModelCard

    text = user_card or f"# {repo_id.split('/')[-1]}\n"
    try:
        card = ModelCard(text)
    except Exception:  # a card whose front matter cannot be parsed: keep its words, start the metadata afresh
        card = ModelCard(f"---\n---\n{text}")
    data: Any = card.data
    peft_type = str(config.get("peft_type") or "lora").lower()
    data.library_name = "peft"
    if is_portable_name(commit.base.name_or_path):
        data.base_model = commit.base.name_or_path
    existing = data.tags if isinstance(data.tags, list) else ([data.tags] if data.tags else [])
    data.tags = [*existing, *(t for t in ("adaptvc", peft_type) if t not in existing)]
    body = card.text
    if BEGIN in body and END in body:  # a card that already carries an adaptvc section (an imported repository)
        head, _, rest = body.partition(BEGIN)
        body = head + rest.partition(END)[2]
    card.text = body.rstrip() + "\n\n" + adaptvc_section(repo_id, commit, snapshot, history, config,
                                                         hub_ids or {}, tags or {})
    return str(card)


def card_revisions(text: str) -> list[str]:
    """Every revision the card's version table names (Hub commit ids and tags), for checking them."""
    section = text.partition(BEGIN)[2].partition(END)[0]
    out: list[str] = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| revision") or line.startswith("|---"):
            continue
        m = _REVISION.match(line)
        if m:
            out.append(m.group(1))
        out += _TAG.findall(line.split("|")[2])
    return out
