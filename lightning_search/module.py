"""``DiffusionModule``: one LightningModule for training (``fit``) and verifier-guided sampling (``predict``)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch
from lightning import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_search.backbones.base import Backbone
from lightning_search.checkpoints import check_checkpoint_file, load_checkpoint
from lightning_search.errors import CheckpointError, ConfigurationError, UnknownNameError
from lightning_search.factories import plain_callable
from lightning_search.lora import (
    AdapterDisabledReference,
    LoraSettings,
    add_lora,
    as_lora_settings,
    has_lora,
    load_lora_adapter,
    settings_dict,
)
from lightning_search.metrics.flops import backbone_gflops, verifier_gflops
from lightning_search.objectives.base import Objective
from lightning_search.objectives.denoising import DenoisingLoss
from lightning_search.pairs import PairsConfig, best_and_worst
from lightning_search.sampling.sampler import Sampler
from lightning_search.search.base import SearchAlgorithm, SearchContext
from lightning_search.search.config import SearchConfig, build_search
from lightning_search.seeding import run_seed, seeded_step
from lightning_search.verifiers.base import Verifier


class DiffusionModule(LightningModule):
    """A backbone, a training objective and a sampler; search and verifiers are configured for predict.

    Args:
        backbone: the model family (``lightning_search.backbones``).
        objective: the training loss (default: denoising MSE in the backbone's parameterisation).
        sampler: solver, steps, guidance scale used by validation samples and predict.
        optimizer: e.g. ``torch.optim.Adam`` with its arguments (LightningCLI's ``--model.optimizer``); None:
            AdamW with its defaults. (Not AdamW as the signature's default: jsonargparse keeps a default class's
            arguments when a config names another class, so ``Adam`` would silently get AdamW's weight decay.)
        lr_scheduler: optional, stepped every optimizer step.
        init_weights: a Lightning checkpoint (or ``.safetensors``) whose backbone weights are loaded before
            anything else: the starting point of a fine-tune, or the base model under ``lora_path``.
        lora: train LoRA adapters (peft) with these settings; only they are trainable. With an objective that
            needs a reference (DPO), the reference is the same network with its adapters disabled.
        lora_path: load a saved adapter (folder with ``pytorch_lora_weights.safetensors``) onto the backbone.
        merge_lora: fold the loaded adapter into the weights (plain layers, base-model speed) instead of
            keeping it as separate LoRA layers.
        seed: seed of the training draws (times, noises, condition dropout), which with the global step, the
            batch index and the rank fixes each step's draws (``seeding.py``), so that a resumed fit equals an
            uninterrupted one; None: the run's ``seed_everything``.
    """

    def __init__(
        self,
        backbone: Backbone,
        objective: Objective | None = None,
        sampler: Sampler | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_weights: str | None = None,
        lora: LoraSettings | None = None,
        lora_path: str | None = None,
        merge_lora: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["backbone", "objective", "optimizer", "lr_scheduler", "lora"])
        self.seed = self.hparams["seed"] = run_seed(seed)
        lora = as_lora_settings(lora)
        self.hparams["lora"] = settings_dict(lora)  # a plain dict: checkpoints stay weights_only-loadable
        if lora is not None and lora_path is not None:
            raise ConfigurationError("give lora (train a new adapter) or lora_path (load one), not both")
        if init_weights is not None:
            load_backbone_weights(backbone, init_weights)
        self.backbone = backbone
        self.objective = objective if objective is not None else DenoisingLoss()
        self.sampler = sampler if sampler is not None else Sampler()
        self.optimizer = plain_callable(optimizer) or torch.optim.AdamW
        self.lr_scheduler = plain_callable(lr_scheduler)
        self.search_config = SearchConfig()
        self.pairs_config: PairsConfig | None = None  # set: predict makes AI-feedback pairs instead of searching
        # Frozen scorers live outside the module's state: they are not trained and not checkpointed.
        self.verifiers: dict[str, Verifier] = {}
        self._gflops: dict[str, float] | None = None
        # Reference model of objectives that need one (DPO): with LoRA, the adapters switched off; for a full
        # fine-tune, a frozen copy of the starting weights, made once here and kept out of the state dict.
        self.lora_metadata: dict[str, Any] | None = None
        if lora is not None:
            self.lora_metadata = add_lora(backbone, lora)
        elif lora_path is not None:
            self.lora_metadata = load_lora_adapter(backbone, lora_path, merge=merge_lora)
        # a plain attribute, not a submodule: the copy is neither checkpointed nor seen by the optimizer
        self.__dict__["_frozen_reference"] = (
            frozen_copy(backbone) if self.objective.needs_reference and not has_lora(backbone) else None
        )
        # online objectives (GRPO) make rollouts and several optimizer steps per training step
        self.automatic_optimization = not getattr(self.objective, "online", False)

    def reference(self) -> Backbone | AdapterDisabledReference | None:
        """The frozen reference model for the objective (None if it needs none)."""
        if not self.objective.needs_reference:
            return None
        if self._frozen_reference is None:
            return AdapterDisabledReference(self.backbone)
        ref = self._frozen_reference
        if next(ref.parameters()).device != self.device:
            ref.to(self.device)
        return ref

    # -- configuration ----------------------------------------------------------------------------------
    def configure_search(self, search: SearchConfig | None, verifiers: dict[str, Verifier] | None = None) -> None:
        """Set the search algorithm and the verifiers (the search one and held-out evaluation ones)."""
        self.search_config = search or SearchConfig()
        self.verifiers = dict(verifiers or {})
        for verifier in self.verifiers.values():
            verifier.resolve_members(self.verifiers)  # an ensemble may name other verifiers of the run
        name = self.search_config.verifier
        if name is not None and name not in self.verifiers:
            raise UnknownNameError("verifier", name, self.verifiers)
        algorithm = self.search_algorithm()  # fail now, not at the first batch
        budget = self.search_config.budget
        if budget is not None:
            need = algorithm.nfe_per_sample(self.sampler, self.backbone)
            if need > budget:
                raise ConfigurationError(
                    f"search {self.search_config.algorithm!r} as configured needs {need} NFEs per sample "
                    f"({self.sampler.nfe(self.backbone)} per full sample with "
                    f"{self.sampler.solver} x {self.sampler.steps} steps), more than --search.budget {budget}; "
                    "lower num_candidates / iterations / branches or raise the budget"
                )

    def configure_pairs(self, pairs: PairsConfig, verifiers: dict[str, Verifier] | None = None) -> None:
        """Make predict sample AI-feedback pairs (``lightning-search pairs``) with the named verifier."""
        self.verifiers = dict(verifiers or {})
        for verifier in self.verifiers.values():
            verifier.resolve_members(self.verifiers)
        if pairs.verifier is None:
            raise ConfigurationError("pairs need a verifier: set pairs.verifier to a name of the run's verifiers")
        if pairs.verifier not in self.verifiers:
            raise UnknownNameError("verifier", pairs.verifier, self.verifiers)
        self.pairs_config = pairs

    def search_algorithm(self) -> SearchAlgorithm:
        return build_search(self.search_config)

    # -- training -----------------------------------------------------------------------------------------
    @override
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        return self.backbone(x_t, t, cond)

    @override
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if not self.automatic_optimization:
            return self.online_step(batch)  # its rollouts are seeded by (seed, step, rank) themselves
        with seeded_step(self.seed, self.global_step, batch_idx, self.global_rank, self.device) as generator:
            loss, logs = self.objective(self.backbone, batch, self.reference(), generator)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=True, batch_size=len(batch["condition"]))
        return loss

    def online_step(self, batch: dict) -> torch.Tensor:
        """GRPO: rollouts of the batch's conditions with the stochastic sampler, rewards from the run's
        verifiers, then ``objective.updates`` optimizer steps over the rollouts (manual optimization)."""
        from lightning_search.objectives.grpo import RolloutContext

        conditions = list(batch["condition"])
        world = self.trainer.world_size if self._trainer is not None else 1
        # a stable id per condition of this step: the rollouts' noises do not depend on anything else
        ids = batch.get("sample_id")
        if ids is None:
            start = (self.global_step * world + self.global_rank) * len(conditions)
            ids = range(start, start + len(conditions))
        ctx = RolloutContext(
            self.backbone, self.sampler, self.verifiers, self.reference(), self.search_config.seed,
            self.global_step, self.global_rank, world, self.all_gather,
        )  # fmt: skip
        self.backbone.eval()  # rollouts and updates see the same network (no dropout), as they must for ratios
        rollouts = self.objective.rollout(ctx, conditions, [int(i) for i in ids])
        optimizer = self.optimizers()
        sums: dict[str, float] = {}
        last = torch.zeros(())
        for rows in self.objective.minibatches(rollouts, ctx):
            optimizer.zero_grad()
            for k in rollouts.train_steps:
                loss, logs = self.objective.step_loss(ctx, rollouts, rows, k)
                self.manual_backward(loss / len(rollouts.train_steps))
                for name, value in logs.items():
                    sums[name] = sums.get(name, 0.0) + float(value)
                last = loss.detach()
            if self.objective.max_grad_norm:
                self.clip_gradients(
                    optimizer, gradient_clip_val=self.objective.max_grad_norm, gradient_clip_algorithm="norm"
                )
            optimizer.step()
        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()
        count = max(1, len(rollouts.train_steps) * self.objective.updates)
        logs = {**rollouts.logs, **{k: v / count for k, v in sums.items()}}
        self.log_dict({f"train/{k}": float(v) for k, v in logs.items()}, prog_bar=True, batch_size=len(conditions))
        return last

    @override
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        # the same draws at every validation (step -1): validation losses of different steps compare
        with seeded_step(self.seed, -1, batch_idx, self.global_rank, self.device) as generator:
            loss, logs = self.objective(self.backbone, batch, self.reference(), generator)
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=len(batch["condition"]))

    @override
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise ConfigurationError("no trainable parameters: check the LoRA settings or frozen modules")
        optimizer = self.optimizer(params)
        if self.lr_scheduler is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.lr_scheduler(optimizer), "interval": "step"},
        }

    # -- prediction ---------------------------------------------------------------------------------------
    @override
    def on_predict_start(self) -> None:
        self.backbone.eval()
        for verifier in self.verifiers.values():
            verifier.to(self.device).eval()

    def gflops(self, condition: Any) -> dict[str, float]:
        """GFLOPs per NFE of the backbone and per image scored by the search verifier, measured once.

        Held-out evaluation verifiers are not search compute and are neither counted nor called here (a VLM
        grader's FLOPs are not ours to count).
        """
        if self._gflops is None:
            self._gflops = {"backbone": backbone_gflops(self.backbone, condition), "verifier": 0.0}
            verifier = self.verifiers.get(self.search_config.verifier) if self.search_config.verifier else None
            if verifier is not None and any(True for _ in verifier.parameters()):
                latent = torch.zeros(1, *self.backbone.latent_shape, device=self.device)
                image_shape = self.backbone.decode(latent).shape[1:]
                self._gflops["verifier"] = verifier_gflops(verifier, image_shape, condition)
        return self._gflops

    def evaluate(self, images: torch.Tensor, conditions: list[Any]) -> dict[str, torch.Tensor]:
        """Every verifier that can score a final image on its own scores the chosen samples (held-out
        evaluation, the paper's Table 2). Skipped: verifiers needing the trajectory's x0-prediction
        (self-supervised: they score inside search) and rank-based ones (an ensemble's mean rank over a batch
        means nothing; its members are reported instead)."""
        out = {}
        for name, verifier in self.verifiers.items():
            if verifier.x0_time is not None or getattr(verifier, "rank_based", False):
                continue
            out[name] = verifier(images, conditions).cpu()
        return out

    @override
    @torch.no_grad()
    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Search (or plainly sample) for each condition of the batch; score the results with every verifier.
        With :meth:`configure_pairs`: the AI-feedback pairs of the batch instead (``{"pairs": rows}``)."""
        start = time.perf_counter()
        conditions, sample_ids = batch["condition"], batch["sample_id"].tolist()
        if all(batch.get("done", [False])):  # a resumed run's batch whose samples are all in the run folder
            return {"sample_id": sample_ids}
        if self.pairs_config is not None:
            pairs = self.pairs_config
            ctx = SearchContext(self.backbone, self.sampler, self.verifiers[pairs.verifier], pairs.seed)
            return {"pairs": best_and_worst(ctx, conditions, sample_ids, pairs.samples_per_condition)}
        search = self.search_config
        algorithm = self.search_algorithm()
        world_size = self.trainer.world_size if self._trainer is not None else 1
        if search.candidate_sharding and world_size > 1 and not algorithm.supports_candidate_sharding:
            raise ConfigurationError(
                f"--search.candidate_sharding is implemented for random search, not {search.algorithm!r}"
            )
        ctx = SearchContext(
            self.backbone,
            self.sampler,
            self.verifiers.get(search.verifier) if search.verifier else None,
            search.seed,
            decode_batch_size=search.decode_batch_size,
            verifier_batch_size=search.verifier_batch_size,
            shard_candidates=search.candidate_sharding,
            rank=self.global_rank,
            world_size=world_size,
            all_gather=self.all_gather,
        )
        result = algorithm.run(ctx, conditions, sample_ids)
        unscored = 0 if search.verifier is None else int((~torch.isfinite(result.score)).sum())
        if unscored:
            rank_zero_warn(
                f"verifier {search.verifier!r} gave no finite score (NaN) to any candidate of {unscored} of "
                f"{len(sample_ids)} samples (ids {sample_ids[0]}..{sample_ids[-1]}): those samples were not searched "
                "(their first candidate was kept; their score is recorded as null)"
            )
        evaluations = self.evaluate(result.images, conditions)
        flops = self.gflops(conditions[0])
        elapsed = time.perf_counter() - start
        return {
            "sample_id": sample_ids,
            "condition": conditions,
            "images": result.images.float().cpu(),
            "result": result,
            "evaluations": evaluations,
            "gflops": (result.nfe * flops["backbone"]).tolist(),
            "verifier_gflops": (result.verifier_calls * flops["verifier"]).tolist(),
            "wall_time": elapsed / len(sample_ids),
        }


def load_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Backbone weights from a Lightning checkpoint (``backbone.*`` keys of its state dict, read with
    ``weights_only=True``; EMA weights where the checkpoint holds them) or a ``.safetensors`` file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"init_weights {str(path)!r} not found; train the base model first (e.g. `lightning-search fit "
            "--config recipes/digits/fit.yaml`) or point to an existing .ckpt / .safetensors"
        )
    check_checkpoint_file(path, "init_weights")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except SafetensorError as err:
            raise CheckpointError(f"init_weights {str(path)!r} cannot be read ({err}); make it again") from None
    else:
        state = load_checkpoint(path, "init_weights").get("state_dict", {})
    if any(k.startswith("backbone.") for k in state):
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    if any("lora_" in k for k in state):
        raise CheckpointError(
            f"{str(path)!r} holds LoRA layers; start from the base checkpoint and pass the adapter as lora_path"
        )
    own = backbone.state_dict()
    mismatched = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    if mismatched or missing:
        example = (
            f"{mismatched[0]}: {tuple(state[mismatched[0]].shape)} in the file, {tuple(own[mismatched[0]].shape)} here"
            if mismatched
            else f"e.g. {missing[:3]} missing"
        )
        raise CheckpointError(
            f"init_weights {str(path)!r} does not fit {type(backbone).__name__}"
            f"{f' {backbone.size!r}' if isinstance(getattr(backbone, 'size', None), str) else ''}: "
            f"{len(mismatched)} weights of another shape, {len(missing)} missing ({example}); another model size?"
        )
    backbone.load_state_dict(state, strict=False)


def frozen_copy(backbone: Backbone) -> Backbone:
    """A frozen eval-mode copy of the trainable part of ``backbone``: frozen parameters (text encoders, VAE)
    are shared, not copied (deepcopy's memo maps them to themselves)."""
    memo = {id(p): p for p in backbone.parameters() if not p.requires_grad}
    return copy.deepcopy(backbone, memo).requires_grad_(False).eval()
