"""Peak memory of one Diffusion-DPO training step: reference = LoRA adapters disabled, against an SFT-LoRA step
on the same backbone and batch, and against a full fine-tune whose reference is a frozen copy (for contrast).

    python benchmarks/dpo_memory.py [--backbone sd|digits] [--batch 4] [--steps 2]

Method. With CUDA: ``torch.cuda.max_memory_allocated`` over the step (model, reference, optimizer state,
activations, gradients), after ``reset_peak_memory_stats``; the first step is a warm-up (it creates Adam's state)
and the peak of the following ones is reported. On CPU no allocator exposes a peak, so the script *accounts*
for the same terms: bytes of every distinct parameter and buffer storage held by the module and its reference
(the frozen copy counts; the adapter-disabled reference is the same storage and adds nothing), plus gradients,
plus Adam's two moments of the trainable parameters, plus the activations autograd saves for backward during the
step (``torch.autograd.graph.saved_tensors_hooks``, distinct storages), which is the peak of a training step
minus transient workspace.

Two SFT-LoRA baselines: ``sft_lora_same_images`` trains on the 2B images a DPO step sends through the trained
network (winners and losers as a batch of 2B), the like-for-like answer to "what does the reference cost?"
(``ratio_to_sft_lora``); ``sft_lora_winners`` trains on the B winners only, as SFT on preferences does. DPO runs
the model on 2B images with grad and the reference on the same 2B under ``no_grad`` (nothing saved for
backward), so against the winners-only baseline its extra memory is the losers' activations, not the reference
(``ratio_to_sft_winners``, also reported).

Prints a table and writes ``benchmarks/results/dpo_memory.json`` (gitignored).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from lightning_search import DiffusionModule
from lightning_search.objectives import DiffusionDPO, PreferredSFT

RESULTS = Path(__file__).parent / "results"


def make_backbone(name: str):
    if name == "sd":
        from lightning_search.backbones import StableDiffusionBackbone

        return StableDiffusionBackbone("tiny", scheduler="ddim"), ["a red car next to a blue bench"], 3, 32
    from lightning_search.backbones import DigitsBackbone

    return DigitsBackbone("digits-m"), [3], 1, 8


def make_batch(conditions, channels: int, size: int, batch: int, device) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image_w": torch.rand(batch, channels, size, size, generator=g).to(device),
        "image_l": torch.rand(batch, channels, size, size, generator=g).to(device),
        "condition": [conditions[i % len(conditions)] for i in range(batch)],
    }


def storage_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or t.device.type == "meta":
            continue
        key = (t.untyped_storage().data_ptr(), t.device)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def accounted_step(module: DiffusionModule, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """One step on CPU with its memory accounted term by term (see the module docstring)."""
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        return t

    optimizer.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = module.training_step(batch, 0)
    activations = sum(saved.values())
    loss.backward()
    optimizer.step()
    tensors = list(module.parameters()) + list(module.buffers())
    reference = module._frozen_reference
    if reference is not None:
        tensors += list(reference.parameters()) + list(reference.buffers())
    weights = storage_bytes(tensors)
    grads = storage_bytes(p.grad for p in module.parameters() if p.grad is not None)
    state = storage_bytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    return {"weights": weights, "grads": grads, "optimizer": state, "activations": activations,
            "peak": weights + grads + state + activations}  # fmt: skip


def cuda_step(module: DiffusionModule, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    optimizer.zero_grad(set_to_none=True)
    module.training_step(batch, 0).backward()
    optimizer.step()
    torch.cuda.synchronize()
    return {"peak": torch.cuda.max_memory_allocated()}


def measure(variant: str, backbone_name: str, batch_size: int, steps: int, device) -> dict:
    backbone, conditions, channels, size = make_backbone(backbone_name)
    objective = PreferredSFT() if variant.startswith("sft") else DiffusionDPO()
    lora = None if variant == "dpo_full_frozen_copy" else {"rank": 4}
    module = DiffusionModule(backbone, objective=objective, lora=lora).to(device)
    module.log_dict = lambda *a, **k: None  # no trainer attached: logging is not what is measured
    module.train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    batch = make_batch(conditions, channels, size, batch_size, device)
    if variant == "sft_lora_same_images":
        both = torch.cat([batch["image_w"], batch["image_l"]])
        batch = {"image_w": both, "image_l": both, "condition": batch["condition"] * 2}
    step = cuda_step if device.type == "cuda" else accounted_step
    start, results = time.perf_counter(), []
    for _ in range(steps + 1):  # the first step creates Adam's state: warm-up
        results.append(step(module, batch, optimizer))
    peak = max(results[1:], key=lambda r: r["peak"])
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"variant": variant, "trainable_params": trainable, **peak,
            "seconds_per_step": (time.perf_counter() - start) / (steps + 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["sd", "digits"], default="sd")
    parser.add_argument("--batch", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = [measure(v, args.backbone, args.batch, args.steps, device)
            for v in ("sft_lora_same_images", "sft_lora_winners", "dpo_lora_disabled_adapters",
                      "dpo_full_frozen_copy")]  # fmt: skip
    for row in rows:
        row["ratio_to_sft_lora"] = row["peak"] / rows[0]["peak"]
        row["ratio_to_sft_winners"] = row["peak"] / rows[1]["peak"]
    method = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "accounted bytes (CPU)"
    print(f"backbone {args.backbone}, {args.batch} pairs per step, {device}, method: {method}")
    keys = [k for k in ("weights", "grads", "optimizer", "activations") if k in rows[0]]
    print(
        "| variant | trainable params | "
        + " | ".join(f"{k} MiB" for k in keys)
        + " | peak MiB | / SFT same images | / SFT winners |"
    )
    print("|---|---|" + "---|" * len(keys) + "---|---|---|")
    for r in rows:
        cells = " | ".join(f"{r[k] / 2**20:.2f}" for k in keys)
        print(f"| {r['variant']} | {r['trainable_params']:,} | {cells} | {r['peak'] / 2**20:.2f} | "
              f"{r['ratio_to_sft_lora']:.3f} | {r['ratio_to_sft_winners']:.3f} |")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"dpo_memory_{args.backbone}_{device.type}.json"
    meta = {"backbone": args.backbone, "batch": args.batch, "device": str(device), "method": method,
            "torch": torch.__version__, "machine": platform.machine(),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None}  # fmt: skip
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
