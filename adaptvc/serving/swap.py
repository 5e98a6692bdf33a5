"""Swap a live PeftModel's adapter weights for a version's, in place, with PEFT's own hotswap.

The tensors come straight from the store (each blob re-hashed on read); no folder is written and the model
is not reloaded. Everything PEFT's ``hotswap_adapter_from_state_dict`` cannot do correctly is refused
*before* any weight changes, with one line naming the reason:

* the live adapter or the version is not LoRA, or their PEFT types differ (PEFT hotswaps LoRA only);
* their configs differ where PEFT says the result would be wrong (``use_rslora``, ``lora_dropout``,
  ``alpha_pattern``, ``use_dora``); the adapter uses DoRA (PEFT's hotswap cannot reach its magnitude vectors);
  or the version carries whole modules (``modules_to_save``) or tensors that are not LoRA factors;
* the version targets a module the live adapter has no LoRA layer on (hotswap cannot add layers);
* the version's rank is larger than the live tensors (the parameters would have to change shape: pad the
  live adapter first with ``peft.utils.hotswap.prepare_model_for_compiled_hotswap(model, target_rank=N)``);
* the adapter is merged into the base weights;
* the base model does not match the version's base-model pin (unless ``force``).

A smaller rank is zero-padded into the live tensors, and live modules the version does not target are set
to zero (both as PEFT does), so the outputs equal a fresh load of the version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AdaptvcError, NoAdapterError
from ..live import _import_torch_peft, _state_dict_from_store
from ..peft_layout import CONFIG_NAME, WEIGHTS_NAME

if TYPE_CHECKING:
    from ..objects import Commit, Snapshot
    from ..storage.base import ObjectStore


class HotswapRefusedError(AdaptvcError):
    """PEFT's hotswap cannot put this version into this model correctly; nothing was changed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"cannot hot-swap: {reason}; the model was not changed")


@dataclass(frozen=True)
class SwapResult:
    """What a hotswap did: ``tensors`` LoRA tensors replaced in adapter ``adapter_name``; modules whose smaller
    rank was zero-padded (``padded``) and live modules the version does not target, now zero (``zeroed``)."""

    commit: str
    adapter_name: str
    tensors: int
    padded: tuple[str, ...] = ()
    zeroed: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "adapter_name": self.adapter_name, "tensors": self.tensors,
                "padded": list(self.padded), "zeroed": list(self.zeroed)}


def _module_of(key: str) -> str:
    """``base_model.model.….q_proj.lora_A.default.weight`` -> ``base_model.model.….q_proj``."""
    return ".".join(key.split(".")[:-3])


def hotswap_from_store(peft_model: Any, store: ObjectStore, commit: Commit, snapshot: Snapshot,
                       config_dict: dict[str, Any], *, adapter_name: str = "default", subfolder: str | None = None,
                       force: bool = False) -> SwapResult:
    """Replace adapter ``adapter_name`` of ``peft_model`` with this version (``config_dict`` is its adapter
    config), in place, through ``peft.utils.hotswap.hotswap_adapter_from_state_dict``."""
    torch, _ = _import_torch_peft()
    from operator import attrgetter

    from peft import PeftConfig, PeftModel
    from peft.mapping import PEFT_TYPE_TO_PREFIX_MAPPING
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.hotswap import check_hotswap_configs_compatible, hotswap_adapter_from_state_dict
    from peft.utils.peft_types import PeftType
    from peft.utils.save_and_load import _insert_adapter_name_into_state_dict

    if not isinstance(peft_model, PeftModel):
        raise HotswapRefusedError(f"the model is a {type(peft_model).__name__}, not a PeftModel (load the first "
                                  "version with adaptvc.load or PeftModel.from_pretrained)")
    if adapter_name not in peft_model.peft_config:
        raise HotswapRefusedError(f"the model has no adapter named {adapter_name!r} (it has "
                                  f"{', '.join(sorted(peft_model.peft_config))})")
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    if not config_dict:
        raise NoAdapterError(f"version {commit.id[:12]}", f"no {prefix + CONFIG_NAME}")
    config_dict = {k: v for k, v in config_dict.items() if k != "runtime_config"}
    try:
        new_config = PeftConfig.from_peft_type(**PeftConfig.check_kwargs(**config_dict))
    except Exception as e:  # PEFT raises TypeError/ValueError/KeyError for configs it cannot read
        raise HotswapRefusedError(f"PEFT cannot read the adapter config of {commit.id[:12]} ({e})") from None
    live_config = peft_model.peft_config[adapter_name]
    live_type = getattr(live_config.peft_type, "value", live_config.peft_type)
    new_type = getattr(new_config.peft_type, "value", new_config.peft_type)
    if live_config.peft_type != PeftType.LORA:
        raise HotswapRefusedError(f"the live adapter {adapter_name!r} is {live_type}; PEFT's hotswap supports LoRA "
                                  "only")
    if new_config.peft_type != live_config.peft_type:
        raise HotswapRefusedError(f"version {commit.id[:12]} is an adapter of type {new_type}; the live adapter is "
                                  f"{live_type}")
    try:
        check_hotswap_configs_compatible(live_config, new_config)
    except ValueError as e:
        raise HotswapRefusedError(f"{e} (live adapter vs version {commit.id[:12]})") from None
    if getattr(live_config, "use_dora", False) or getattr(new_config, "use_dora", False):
        raise HotswapRefusedError("the adapter uses DoRA; PEFT's hotswap swaps LoRA A/B weights, not DoRA's "
                                  "magnitude vectors")
    if new_config.modules_to_save:
        raise HotswapRefusedError(f"version {commit.id[:12]} carries whole modules (modules_to_save: "
                                  f"{', '.join(sorted(new_config.modules_to_save))}); PEFT's hotswap swaps LoRA "
                                  "weights only")
    if any(adapter_name in getattr(m, "merged_adapters", []) for m in peft_model.modules()
           if isinstance(m, BaseTunerLayer)):
        raise HotswapRefusedError(f"adapter {adapter_name!r} is merged into the base weights; call "
                                  "model.unmerge_adapter() first")
    if not force:
        from ..basemodel import verify_live_base

        verify_live_base(snapshot, commit.base, peft_model.get_base_model(), prefix)

    parameter_prefix = PEFT_TYPE_TO_PREFIX_MAPPING[new_config.peft_type]
    state = _state_dict_from_store(store, snapshot, prefix + WEIGHTS_NAME)
    foreign = sorted(k for k in state if parameter_prefix not in k)
    if foreign:
        raise HotswapRefusedError(f"version {commit.id[:12]} holds tensors that are not LoRA factors (e.g. "
                                  f"{foreign[0]}); PEFT's hotswap swaps LoRA weights only")
    state = _insert_adapter_name_into_state_dict(state, adapter_name=adapter_name, parameter_prefix=parameter_prefix)
    padded: set[str] = set()
    for key, new in state.items():
        try:
            old = attrgetter(key)(peft_model)
        except AttributeError:
            raise HotswapRefusedError(f"version {commit.id[:12]} targets {_module_of(key) or key}, where the live "
                                      f"adapter {adapter_name!r} has no LoRA layer (hotswap cannot add layers; load "
                                      "the version with adaptvc.load instead)") from None
        if not isinstance(old, torch.Tensor) or old.dim() != new.dim():
            raise HotswapRefusedError(f"{key} of version {commit.id[:12]} does not fit the live parameter")
        if tuple(old.shape) == tuple(new.shape):
            continue
        if all(o >= n for o, n in zip(old.shape, new.shape, strict=True)):
            padded.add(_module_of(key))
            continue
        raise HotswapRefusedError(
            f"version {commit.id[:12]} has a larger rank than the live adapter at {_module_of(key)} "
            f"({list(new.shape)} vs {list(old.shape)}): swapping would change parameter shapes; pad the live "
            "adapter first with peft.utils.hotswap.prepare_model_for_compiled_hotswap(model, target_rank=N)")
    marker = f".{adapter_name}."
    live_keys = {k for k in peft_model.state_dict() if parameter_prefix in k and marker in k}
    zeroed = sorted({_module_of(k) for k in live_keys - set(state)})
    try:
        with torch.no_grad():
            hotswap_adapter_from_state_dict(peft_model, state, adapter_name, new_config, parameter_prefix)
    except (RuntimeError, ValueError, NotImplementedError) as e:  # not expected after the checks above
        raise AdaptvcError(f"PEFT's hotswap failed part-way ({e}); reload the model") from None
    return SwapResult(commit.id, adapter_name, len(state), tuple(sorted(padded)), tuple(zeroed))
