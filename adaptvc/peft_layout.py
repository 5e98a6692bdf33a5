"""What an adapter is on disk: PEFT's file names, the files kept beside it, and the one rule that says which
paths a snapshot may name.

The rule (:func:`check_snapshot_path`) is applied to every snapshot, whatever its source (a local folder, a
live model, a folder remote, the Hub, a merge): a snapshot names only what a local commit could have
captured, so no remote can make adaptvc write ``.git/config``, ``train.py`` or a dot-file.
"""

from __future__ import annotations

import re

from .errors import UnsafePathError
from .paths import check_relative_path

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
CARD_NAME = "README.md"
#: Files kept beside an adapter: what PEFT's save_pretrained writes, and a tokenizer saved with it.
COMPANION_FILES = (
    CARD_NAME,
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
    "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
)
#: What transformers' Trainer saves beside the adapter in a checkpoint, to resume training. Kept only on
#: request, as opaque blobs: adaptvc never unpickles them.
TRAINING_STATE_FILES = ("optimizer.pt", "optimizer.bin", "scheduler.pt", "scaler.pt", "rng_state.pth",
                        "trainer_state.json", "training_args.bin")
_RNG_STATE = re.compile(r"rng_state_\d+\.pth")
_ADAPTER_FILES = frozenset((CONFIG_NAME, WEIGHTS_NAME, *COMPANION_FILES))
#: Sub-folders that are never adapters of the folder: the Trainer's checkpoints, hidden folders.
CHECKPOINT_PREFIX = "checkpoint-"

#: Adapter tensor names start with PEFT's wrapper prefix; a module's name ends where an adapter parameter's
#: name begins (``…q_proj.lora_A.weight``).
PEFT_PREFIX = "base_model.model."
ADAPTER_PARTS = ("lora_", "ia3_", "hada_", "lokr_", "oft_", "boft_", "vera_", "fourierft_", "ln_tuning")


#: adapter config keys whose list value PEFT treats as a set (it writes them in set order, which changes
#: from one save to the next): compared as sets, so two saves of one adapter are not a change
SET_VALUED_CONFIG_KEYS = frozenset({"target_modules", "modules_to_save", "exclude_modules", "target_parameters",
                                    "layers_to_transform", "trainable_token_indices"})


def is_training_state(rel: str) -> bool:
    return "/" not in rel and (rel in TRAINING_STATE_FILES or bool(_RNG_STATE.fullmatch(rel)))


def is_adapter_folder_name(name: str) -> bool:
    """Whether a sub-folder of this name can hold one of the adapters (PEFT saves extra adapters there)."""
    return bool(name) and not name.startswith((".", CHECKPOINT_PREFIX)) and not name.endswith((" ", ".")) \
        and "/" not in name and "\\" not in name and not has_unstorable_characters(name)


def has_unstorable_characters(name: str) -> bool:
    """Control characters, or bytes that are not UTF-8 (decoded by Python as lone surrogates): a name a
    snapshot cannot hold."""
    return any(ord(c) < 32 or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in name)


def check_snapshot_path(path: str) -> str:
    """Accept only a path a local commit could have captured: an adapter file or companion at the top or in
    one adapter sub-folder, or a training-state file at the top. Raises :class:`UnsafePathError`."""
    check_relative_path(path)
    parts = path.split("/")
    if len(parts) > 2:
        raise UnsafePathError(path, "an adapter file is at the top or in one adapter sub-folder, never deeper")
    name = parts[-1]
    if len(parts) == 2:
        if not is_adapter_folder_name(parts[0]):
            raise UnsafePathError(path, f"{parts[0]!r} cannot be an adapter sub-folder")
        if name not in _ADAPTER_FILES:
            raise UnsafePathError(path, "not an adapter file")
        return path
    if name not in _ADAPTER_FILES and not is_training_state(name):
        raise UnsafePathError(path, "not an adapter file")
    return path


def is_config_path(path: str) -> bool:
    return path.rpartition("/")[2] == CONFIG_NAME


def adapter_folder(path: str) -> str:
    """The adapter folder a snapshot path belongs to ("" for the top-level adapter)."""
    return path.rpartition("/")[0]


def short_module_name(name: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` -> ``layers.0.self_attn.q_proj``."""
    for prefix in (PEFT_PREFIX, "model."):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name
