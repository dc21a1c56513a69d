"""LoRA (Hu et al. 2022) through peft for every backbone, with adapters saved in diffusers' LoRA format.

One path for every family: ``peft.inject_adapter_in_model`` on the backbone's denoising network (the UNet or
transformer of a diffusers pipeline, ``net`` for digits), targets from ``backbone.lora_target_modules``. It is
what diffusers' ``add_adapter`` does for the UNet and FLUX, and it also works for PixArt and DiT, whose models
have no ``add_adapter`` (ENVIRONMENT.md). Only the LoRA matrices are trainable afterwards.

The reference model of Diffusion-DPO is the same network with its adapters switched off
(:func:`adapters_disabled`): no second copy in memory.

Files: ``<dir>/pytorch_lora_weights.safetensors`` holds the PEFT state dict with the keys prefixed by the
network's pipeline attribute (``unet.``, ``transformer.``; ``net.`` for digits) and the LoRA config as the
``lora_adapter_metadata`` JSON in the safetensors header: exactly what ``StableDiffusionPipeline.save_lora_weights``
and the FLUX / SDXL loaders write, so a plain diffusers pipeline reads it with ``pipe.load_lora_weights(dir)``
(where the pipeline supports LoRA: SD, SDXL, FLUX, SD3), and :func:`load_lora_adapter` reads it back into a
backbone, merged into the weights or not.

Adapters written by other tools load the same way, the format detected from the folder's contents
(:func:`find_lora_adapter`): diffusers' format as the pipelines' ``save_lora_weights`` write it (with or without
the config in the header; without it, ranks and alpha are inferred as diffusers' loaders infer them) or a model's
``save_lora_adapter`` (keys without prefix), and peft's format (``adapter_config.json`` +
``adapter_model.safetensors``) as ``PeftModel.save_pretrained`` writes it for a peft-wrapped UNet / transformer
(e.g. Flow-GRPO's SD3.5 LoRAs). Only the denoiser's LoRA is loaded (text-encoder LoRA in a file is skipped, with a
warning).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lightning_search.backbones.base import Backbone
from lightning_search.errors import CheckpointError, ConfigurationError

ADAPTER_FILE = "pytorch_lora_weights.safetensors"
METADATA_KEY = "lora_adapter_metadata"  # diffusers.loaders.lora_base.LORA_ADAPTER_METADATA_KEY
ADAPTER_NAME = "default"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (peft's ``LoraConfig``).

    Args:
        rank: r, the rank of the update ``B @ A``.
        alpha: ``lora_alpha``; the update is scaled by alpha / rank (None: alpha = rank, scale 1).
        dropout: ``lora_dropout`` on the adapter's input.
        init: ``init_lora_weights``: True (Kaiming A, zero B), ``"gaussian"`` (as diffusers' training scripts),
            or any of peft's initialisations (``"pissa"``, ``"olora"``, ...). B = 0 leaves the model unchanged.
        target_modules: module names (suffixes) to adapt; None: the backbone's ``lora_target_modules``.
    """

    rank: int = 4
    alpha: float | None = None
    dropout: float = 0.0
    init: bool | str = "gaussian"
    target_modules: list[str] | None = None

    def metadata(self, backbone: Backbone) -> dict[str, Any]:
        """The ``LoraConfig`` kwargs, JSON-serialisable (what diffusers stores and rebuilds the config from)."""
        targets = list(self.target_modules or backbone.lora_target_modules)
        if not targets:
            raise ConfigurationError(
                f"{type(backbone).__name__} names no lora_target_modules; set lora.target_modules in the config"
            )
        if self.rank < 1:
            raise ConfigurationError(f"LoRA rank must be >= 1, got {self.rank}")
        return {
            "r": int(self.rank),
            "lora_alpha": float(self.alpha if self.alpha is not None else self.rank),
            "lora_dropout": float(self.dropout),
            "init_lora_weights": self.init,
            "target_modules": targets,
            "use_dora": False,
        }


def as_lora_settings(value: LoraSettings | dict | None) -> LoraSettings | None:
    """A :class:`LoraSettings` from itself, a dict of its fields, or None."""
    if value is None or isinstance(value, LoraSettings):
        return value
    return LoraSettings(**value)


def denoiser(backbone: Backbone) -> tuple[str, nn.Module]:
    """(key prefix, network) that LoRA adapts: a pipeline backbone's first component (``unet`` or
    ``transformer``: the names diffusers' LoRA loaders use as key prefixes), ``net`` for digits."""
    components = getattr(backbone, "components", ())
    if components:
        return components[0], getattr(backbone, components[0])
    net = getattr(backbone, "net", None)
    if isinstance(net, nn.Module):
        return "net", net
    raise ConfigurationError(
        f"cannot find the denoising network of {type(backbone).__name__} for LoRA (expected a pipeline backbone's "
        "first component or a `net` submodule)"
    )


def lora_layers(module: nn.Module) -> list[nn.Module]:
    """The peft tuner layers inside ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in module.modules() if isinstance(m, BaseTunerLayer)]


def has_lora(backbone: Backbone) -> bool:
    return bool(lora_layers(denoiser(backbone)[1]))


def _freeze_all_but_lora(backbone: Backbone) -> None:
    backbone.requires_grad_(False)
    for name, param in denoiser(backbone)[1].named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)


def add_lora(backbone: Backbone, settings: LoraSettings) -> dict[str, Any]:
    """Inject fresh adapters into the backbone's network in place; freeze everything else.

    -> the LoraConfig kwargs used (saved with the adapter).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if has_lora(backbone):
        raise ConfigurationError("the backbone already has LoRA adapters; give either lora or lora_path, not both")
    metadata = settings.metadata(backbone)
    _, network = denoiser(backbone)
    try:
        inject_adapter_in_model(LoraConfig(**metadata), network, adapter_name=ADAPTER_NAME)
    except ValueError as err:  # peft: "Target modules {...} not found in the base model"
        raise ConfigurationError(
            f"LoRA targets {metadata['target_modules']} do not match {type(backbone).__name__}'s network: {err}"
        ) from err
    _freeze_all_but_lora(backbone)
    return metadata


def lora_parameters(backbone: Backbone) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in denoiser(backbone)[1].named_parameters() if "lora_" in n]


@contextmanager
def adapters_disabled(backbone: Backbone) -> Iterator[Backbone]:
    """Run the backbone with its LoRA adapters switched off (the base model), then switch them back on.

    peft's ``enable_adapters(False)`` also clears ``requires_grad`` of the adapters, and ``enable_adapters(True)``
    sets it again on the active adapter, so a reference pass under ``torch.no_grad`` leaves training unchanged.
    """
    layers = lora_layers(denoiser(backbone)[1])
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield backbone
    finally:
        for layer in layers:
            layer.enable_adapters(True)


class AdapterDisabledReference:
    """The reference model of DPO as the backbone itself with adapters disabled during each call.

    A plain object (not an ``nn.Module``), so nothing is registered or copied: attribute reads (``schedule``,
    ``prediction_type``, ``encode_images``, ...) go to the backbone, calls run under :func:`adapters_disabled`.
    """

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        with adapters_disabled(self.backbone):
            return self.backbone(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backbone, name)


def merge_lora(backbone: Backbone) -> None:
    """Fold every adapter into its base weight (W + scale B A) and put the plain layer back in its place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    _, network = denoiser(backbone)
    tuned = [(name, m) for name, m in network.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in tuned:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        parent = network.get_submodule(parent_name) if parent_name else network
        setattr(parent, child, module.get_base_layer())
    if hasattr(network, "peft_config"):
        del network.peft_config


def lora_state_dict(backbone: Backbone) -> dict[str, torch.Tensor]:
    """The adapters' weights in diffusers' file layout: ``{prefix}.{module}.lora_A.weight`` etc."""
    from peft import get_peft_model_state_dict

    prefix, network = denoiser(backbone)
    if not lora_layers(network):
        raise ConfigurationError("the backbone has no LoRA adapters to save (set `lora:` on the module)")
    state = get_peft_model_state_dict(network, adapter_name=ADAPTER_NAME)
    return {f"{prefix}.{k}": v.detach().contiguous().cpu() for k, v in state.items()}


def save_lora_adapter(backbone: Backbone, directory: str | Path, metadata: dict[str, Any]) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` (weights + config in the header) -> its path."""
    from safetensors.torch import save

    from lightning_search.runs import atomic_write_bytes

    prefix, _ = denoiser(backbone)
    header = {
        "format": "pt",
        METADATA_KEY: json.dumps({f"{prefix}.{k}": v for k, v in metadata.items()}, indent=2, sort_keys=True),
    }
    path = Path(directory) / ADAPTER_FILE
    atomic_write_bytes(path, save(lora_state_dict(backbone), metadata=header))
    return path


PEFT_CONFIG_FILE = "adapter_config.json"  # peft.utils.CONFIG_NAME
PEFT_WEIGHTS_FILES = ("adapter_model.safetensors", "adapter_model.bin")  # SAFETENSORS_WEIGHTS_NAME, WEIGHTS_NAME
# key prefixes of diffusers' LoRA files (pipeline components; ``net`` for digits): an adapter without any of them
# was written by a model's own ``save_lora_adapter`` (keys are the network's module names)
_COMPONENT_PREFIXES = ("unet", "transformer", "prior", "text_encoder", "text_encoder_2", "text_encoder_3", "net")
_EXPECTED = (
    f"expected a folder holding {ADAPTER_FILE} (diffusers' save_lora_weights / save_lora_adapter, or SaveLoraAdapter), "
    f"or {PEFT_CONFIG_FILE} + {PEFT_WEIGHTS_FILES[0]} (peft's save_pretrained), or a .safetensors file"
)


def find_lora_adapter(path: str | Path) -> tuple[str, Path]:
    """Detect an adapter's format from what lies at ``path`` -> ("peft", folder) or ("diffusers", file).

    peft: a folder with ``adapter_config.json`` and ``adapter_model.safetensors`` (or ``.bin``), as
    ``PeftModel.save_pretrained`` writes it. diffusers: ``pytorch_lora_weights.safetensors`` in a folder (the
    pipelines' ``save_lora_weights``, a model's ``save_lora_adapter``, ``callbacks.SaveLoraAdapter``), the only
    ``.safetensors`` file of a folder (a custom ``weight_name``), or a ``.safetensors`` file itself.
    """
    path = Path(path).expanduser()
    if path.is_file() and path.name in PEFT_WEIGHTS_FILES and (path.parent / PEFT_CONFIG_FILE).is_file():
        path = path.parent
    if path.is_dir() and (path / PEFT_CONFIG_FILE).is_file():
        if any((path / name).is_file() for name in PEFT_WEIGHTS_FILES):
            return "peft", path
        raise CheckpointError(f"{str(path)!r} holds {PEFT_CONFIG_FILE} but no {' or '.join(PEFT_WEIGHTS_FILES)}")
    if path.is_file() and path.suffix == ".safetensors":
        return "diffusers", path
    if path.is_dir():
        if (path / ADAPTER_FILE).is_file():
            return "diffusers", path / ADAPTER_FILE
        files = sorted(path.glob("*.safetensors"))
        if len(files) == 1:
            return "diffusers", files[0]
    raise CheckpointError(f"no LoRA adapter at {str(path)!r} ({_EXPECTED})")


def _json_ready(config: dict[str, Any]) -> dict[str, Any]:
    """LoraConfig kwargs as plain JSON values (sets as sorted lists, enums as strings), as diffusers stores a
    peft config (``save_lora_adapter``): what :func:`save_lora_adapter` writes into the header again."""
    return json.loads(json.dumps(config, default=sorted))


def _read_peft_adapter(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """peft's own readers: ``LoraConfig.from_pretrained`` and ``load_peft_weights`` (safetensors, or torch.load
    with ``weights_only=True``). The keys keep PeftModel's ``base_model.model.`` prefix, which peft's
    ``set_peft_model_state_dict`` removes itself when the network is not a PeftModel."""
    from peft import LoraConfig
    from peft.utils import load_peft_weights

    peft_type = json.loads((folder / PEFT_CONFIG_FILE).read_text()).get("peft_type")
    if str(peft_type).upper() != "LORA":
        raise CheckpointError(f"{str(folder)!r} is a {peft_type} adapter; only LoRA adapters can be loaded")
    config = LoraConfig.from_pretrained(str(folder))
    if config.modules_to_save:
        raise CheckpointError(
            f"{str(folder)!r} also trains whole modules (modules_to_save={sorted(config.modules_to_save)}), which "
            "load_lora_adapter does not restore; load it with peft's PeftModel.from_pretrained instead"
        )
    return load_peft_weights(str(folder), device="cpu"), _json_ready(config.to_dict())


def _read_diffusers_adapter(file: Path, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    packed = json.loads(header[METADATA_KEY]) if header.get(METADATA_KEY) else None
    if any(k.startswith(prefix + ".") for k in tensors):
        ours = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        others = sorted({k.split(".")[0] for k in tensors if not k.startswith(prefix + ".")})
        if others:  # e.g. text-encoder LoRA trained alongside: the framework adapts the denoiser only
            rank_zero_warn(
                f"{str(file)!r}: ignoring the LoRA weights of {', '.join(others)} (only {prefix} is adapted)"
            )
        metadata = packed and {k[len(prefix) + 1 :]: v for k, v in packed.items() if k.startswith(prefix + ".")}
    elif tensors and not any(k.split(".")[0] in _COMPONENT_PREFIXES for k in tensors):
        ours, metadata = tensors, packed  # a model's own save_lora_adapter: no prefix, on keys or config
    else:
        found = sorted({k.split(".")[0] for k in tensors})
        raise CheckpointError(
            f"{str(file)!r} holds no LoRA weights for {prefix!r} (its keys start with {', '.join(found)}): "
            "an adapter of another model family?"
        )
    if any(".lora.down." in k or ".lora_linear_layer." in k for k in ours):
        from diffusers.utils import convert_unet_state_dict_to_peft  # older diffusers layout -> PEFT keys

        ours = convert_unet_state_dict_to_peft(ours)
    return ours, metadata or None


def read_lora_adapter(path: str | Path, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(PEFT state dict of the ``prefix`` network without the prefix, LoraConfig kwargs or None) from an adapter
    in either format (:func:`find_lora_adapter`)."""
    kind, location = find_lora_adapter(path)
    if kind == "peft":
        return _read_peft_adapter(location)
    return _read_diffusers_adapter(location, prefix)


def _infer_metadata(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """LoraConfig kwargs of a file without a config, as diffusers' loaders infer them (``get_peft_kwargs``):
    ranks from lora_B (the most common one, the others as ``rank_pattern``), alpha = rank, every adapted module."""
    from diffusers.utils.peft_utils import get_peft_kwargs

    ranks = {f"^{k}": v.shape[1] for k, v in state.items() if "lora_B" in k and v.ndim > 1}
    if not ranks:
        raise CheckpointError("the adapter holds no lora_B weights: is it a LoRA adapter?")
    return {**get_peft_kwargs(ranks, None, state), "init_lora_weights": False}


def load_lora_adapter(backbone: Backbone, path: str | Path, merge: bool = False) -> dict[str, Any]:
    """Inject the adapter saved at ``path`` into the backbone, optionally merged -> its LoraConfig kwargs.

    ``path``: a folder or file in diffusers' LoRA format or peft's format, detected from its contents
    (:func:`find_lora_adapter`), whichever tool wrote it.
    """
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict

    prefix, network = denoiser(backbone)
    state, metadata = read_lora_adapter(path, prefix)
    metadata = metadata or _infer_metadata(state)
    config = LoraConfig(**{**metadata, "init_lora_weights": False})  # the weights come from the file
    try:
        inject_adapter_in_model(config, network, adapter_name=ADAPTER_NAME)
    except ValueError as err:
        raise CheckpointError(f"the adapter {str(path)!r} does not fit {type(backbone).__name__}: {err}") from err
    try:
        result = set_peft_model_state_dict(network, state, adapter_name=ADAPTER_NAME)
    except RuntimeError as err:  # torch's size mismatch
        raise CheckpointError(
            f"the adapter {str(path)!r} does not match {type(backbone).__name__}'s network (trained on another "
            f"model size?): {str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else err}"
        ) from err
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        raise CheckpointError(
            f"the adapter {str(path)!r} does not match {type(backbone).__name__}'s network: "
            f"{len(missing)} LoRA weights missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]}); was it trained on another model size?"
        )
    if merge:
        merge_lora(backbone)
    else:
        _freeze_all_but_lora(backbone)
    return metadata


def settings_dict(settings: LoraSettings | None) -> dict[str, Any] | None:
    """Plain-dict form (checkpoint hyper-parameters stay loadable with ``weights_only=True``)."""
    return None if settings is None else asdict(settings)
