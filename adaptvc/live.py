"""Live models: commit a PeftModel without a hand-made folder, and load a version straight into a model.

This is the only module of the core API that needs torch and peft, and it imports them lazily: the store,
the CLI, diff and checkout run without them.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import AdaptvcError, NoAdapterError
from .peft_layout import ADAPTER_PARTS, CONFIG_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from .objects import Commit, Snapshot
    from .storage.base import ObjectStore


class MissingExtraError(AdaptvcError, ImportError):
    def __init__(self, what: str, module: str) -> None:
        super().__init__(f"{what} needs {module}: pip install 'adaptvc[torch]'")


def _import_torch_peft() -> tuple[Any, Any]:
    try:
        import peft
        import torch
    except ImportError as e:
        raise MissingExtraError("working with a live model", e.name or "torch and peft") from None
    return torch, peft


def is_live_model(obj: Any) -> bool:
    """A PEFT model (anything with ``save_pretrained`` and ``peft_config``), as opposed to a folder path."""
    return hasattr(obj, "save_pretrained") and hasattr(obj, "peft_config")


@contextlib.contextmanager
def saved_model(model: Any, tmp_root: Path, adapter_name: str | None = None) -> Iterator[Path]:
    """Save ``model`` with its own ``save_pretrained`` into a temporary folder on the store's file system,
    so that committing it gives exactly the snapshot (and bytes) that save_pretrained + commit would."""
    if not is_live_model(model):
        raise NoAdapterError(repr(type(model).__name__), "not a folder and not a PEFT model")
    tmp_root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="live-", dir=tmp_root))
    try:
        kwargs: dict[str, Any] = {}
        if adapter_name is not None:
            if adapter_name not in model.peft_config:
                raise AdaptvcError(f"the model has no adapter {adapter_name!r}; it has {sorted(model.peft_config)}")
            kwargs["selected_adapters"] = [adapter_name]
        model.save_pretrained(str(folder), **kwargs)  # PEFT puts non-default adapters in sub-folders
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _state_dict_from_store(store: ObjectStore, snapshot: Snapshot, weights_path: str) -> dict[str, Any]:
    """Tensors of one safetensors file of a snapshot, built from the store's verified blobs."""
    torch, _ = _import_torch_peft()
    from .safetensors_format import DTYPES

    dtypes = {name: getattr(torch, d.torch, None) for name, d in DTYPES.items() if d.torch}
    entry = snapshot.file(weights_path)
    if entry is None or entry.layout is None:
        raise NoAdapterError(weights_path, "this version has no such weights file")
    state = {}
    for t in entry.layout.tensors:
        dtype = dtypes.get(t.dtype)
        if dtype is None:
            raise AdaptvcError(f"tensor {t.name}: dtype {t.dtype} cannot be loaded by this torch")
        data = bytearray(store.read(t.blob))  # re-hashed on read; a writable copy torch can own
        tensor = torch.frombuffer(data, dtype=dtype) if data else torch.empty(0, dtype=dtype)
        state[t.name] = tensor.reshape(t.shape)
    return state


def load_into(store: ObjectStore, commit: Commit, snapshot: Snapshot, config_dict: dict[str, Any], model: Any, *,
              adapter_name: str = "default", is_trainable: bool = False, subfolder: str | None = None,
              force: bool = False) -> Any:
    """A PeftModel with this version of the adapter (``config_dict`` is its adapter config), built from the
    store (no folder is written).

    ``model`` is a base model (a new PeftModel is returned) or a PeftModel (the version is added to it as
    ``adapter_name``). Unless ``force``, the base is checked against the version's base-model pin first."""
    _import_torch_peft()
    from peft import PeftConfig, PeftModel
    from peft.utils import set_peft_model_state_dict

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    config_dict = dict(config_dict)
    if not config_dict:
        raise NoAdapterError(f"version {commit.id[:12]}", f"no {prefix + CONFIG_NAME}")
    if not force:
        from .basemodel import pinned_folder, verify_live_base
        from .ops.merge_plan import stored_config

        base = model.get_base_model() if isinstance(model, PeftModel) else model
        first = pinned_folder(snapshot)
        verify_live_base(snapshot, commit.base, base, prefix, config_dict,
                         stored_config(store, snapshot, f"{first}/{CONFIG_NAME}" if first else CONFIG_NAME))
    config_dict.pop("runtime_config", None)
    config = PeftConfig.from_peft_type(**PeftConfig.check_kwargs(**config_dict))
    config.inference_mode = not is_trainable
    if isinstance(model, PeftModel):
        if adapter_name in model.peft_config:
            raise AdaptvcError(f"the model already has an adapter named {adapter_name!r}; choose another adapter_name")
        model.add_adapter(adapter_name, config)
        peft_model = model
    else:
        try:
            from peft.auto import MODEL_TYPE_TO_PEFT_MODEL_MAPPING
        except ImportError:  # older PEFT
            from peft.mapping import MODEL_TYPE_TO_PEFT_MODEL_MAPPING

        cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel)
        peft_model = cls(model, config, adapter_name)
    state = _state_dict_from_store(store, snapshot, prefix + WEIGHTS_NAME)
    result = set_peft_model_state_dict(peft_model, state, adapter_name=adapter_name)
    # VeRA's projections are stored once (base_model.vera_A) and shared by every module's reference to them
    shared = {k.rpartition(".")[2] for k in state if k.count(".") == 1 and k.startswith("base_model.")}
    missing = [k for k in result.missing_keys if adapter_name in k and any(
        p in k for p in (*ADAPTER_PARTS, "magnitude")) and not any(f".{s}." in k for s in shared)]
    if missing:
        raise AdaptvcError(f"{len(missing)} adapter weights did not load (e.g. {missing[0]}); is this the right base?")
    if is_trainable:
        with contextlib.suppress(AttributeError):
            peft_model.set_requires_grad(adapter_name, requires_grad=True)
    else:
        peft_model.eval()
    return peft_model
