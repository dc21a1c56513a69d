"""Benchmarks of the search machinery on the digits backbone (random weights: timing does not need training).

    python benchmarks/run.py [--only batching,forward_share,ddp] [--threads 1]

(a) batching: random search over 32 candidates evaluated in micro-batches vs one candidate at a time (what
    best-of-N scripts that call a pipeline once per seed do), same NFEs;
(b) forward_share: the share of a random-search run's wall time spent inside backbone and verifier forward
    passes (the rest is the framework: noise generation, bookkeeping, selection);
(c) ddp: predict-with-search throughput (samples/s) of 2 processes vs 1 (Lightning ddp_fork, gloo), one
    thread each, through the real CLI path.
Prints a table and writes benchmarks/results/<name>.json. Ratios are measured in one run on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from lightning_search.backbones import DigitsBackbone
from lightning_search.classifier import DigitsCNN
from lightning_search.sampling import Sampler, noise_seed, seeded_noise
from lightning_search.search import RandomSearch, SearchContext
from lightning_search.verifiers import ClassifierVerifier

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def models(device: str):
    torch.manual_seed(0)
    backbone = DigitsBackbone("digits-m").eval().to(device)
    verifier = ClassifierVerifier(classifier=DigitsCNN()).eval().to(device)
    return backbone, verifier


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bench_batching(device: str, conditions: int = 10, candidates: int = 32, repeats: int = 3) -> dict:
    backbone, verifier = models(device)
    sampler = Sampler("heun", steps=5)
    labels = [i % 10 for i in range(conditions)]
    ids = list(range(conditions))

    def batched() -> None:
        RandomSearch(candidates).run(SearchContext(backbone, sampler, verifier, 0), labels, ids)

    def one_at_a_time() -> None:
        for label, sample_id in zip(labels, ids):
            best = float("-inf")
            for c in range(candidates):
                noise = seeded_noise([noise_seed(0, sample_id, 0, c)], backbone.latent_shape, device)
                x = sampler.sample(backbone, noise, backbone.encode_conditions([label])).x
                score = verifier(backbone.decode(x), [label]).item()
                best = max(best, score)

    timings = {}
    for name, fn in (("batched", batched), ("one_at_a_time", one_at_a_time)):
        fn()  # warm-up
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync(device)
        timings[name] = (time.perf_counter() - start) / repeats
    return {
        "conditions": conditions,
        "candidates": candidates,
        "nfe_per_sample": candidates * sampler.nfe(backbone),
        "seconds_batched": timings["batched"],
        "seconds_one_at_a_time": timings["one_at_a_time"],
        "speedup": timings["one_at_a_time"] / timings["batched"],
    }


@torch.no_grad()
def bench_forward_share(device: str, conditions: int = 200, candidates: int = 16) -> dict:
    backbone, verifier = models(device)
    sampler = Sampler("heun", steps=5, micro_batch_size=1024)
    inside = {"backbone": 0.0, "verifier": 0.0}

    def timed(module: torch.nn.Module, key: str) -> None:
        def pre(*_):
            sync(device)
            module._t0 = time.perf_counter()

        def post(*_):
            sync(device)
            inside[key] += time.perf_counter() - module._t0

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    timed(backbone, "backbone")
    timed(verifier, "verifier")
    labels = [i % 10 for i in range(conditions)]
    ctx = SearchContext(backbone, sampler, verifier, 0)
    RandomSearch(candidates).run(ctx, labels[:10], list(range(10)))  # warm-up
    inside.update(backbone=0.0, verifier=0.0)
    sync(device)
    start = time.perf_counter()
    RandomSearch(candidates).run(ctx, labels, list(range(conditions)))
    sync(device)
    total = time.perf_counter() - start
    return {
        "conditions": conditions,
        "candidates": candidates,
        "seconds_total": total,
        "seconds_backbone": inside["backbone"],
        "seconds_verifier": inside["verifier"],
        "forward_share": (inside["backbone"] + inside["verifier"]) / total,
    }


def bench_ddp(samples_per_class: int = 100, candidates: int = 32) -> dict:
    """Throughput of the real predict path with 1 and 2 CPU processes (ddp_fork), one thread each."""
    import lightning as L

    from lightning_search import DiffusionModule
    from lightning_search.callbacks import PredictionWriter
    from lightning_search.data import DigitsDataModule
    from lightning_search.search import SearchConfig

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for processes in (1, 2):
            backbone, verifier = models("cpu")
            module = DiffusionModule(backbone, sampler=Sampler("heun", steps=5))
            module.configure_search(
                SearchConfig("random", "classifier", num_candidates=candidates), {"classifier": verifier}
            )
            trainer = L.Trainer(
                accelerator="cpu",
                devices=processes,
                strategy="ddp_fork" if processes > 1 else "auto",
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[PredictionWriter(f"{tmp}/p{processes}")],
            )
            data = DigitsDataModule(samples_per_class=samples_per_class, predict_batch_size=50)
            start = time.perf_counter()
            trainer.predict(module, datamodule=data, return_predictions=False)
            seconds = time.perf_counter() - start
            out[f"samples_per_second_{processes}"] = 10 * samples_per_class / seconds
    out["speedup_2_vs_1"] = out["samples_per_second_2"] / out["samples_per_second_1"]
    out.update(samples=10 * samples_per_class, candidates=candidates)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="batching,forward_share,ddp")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    runs = {
        "batching": lambda: bench_batching(args.device),
        "forward_share": lambda: bench_forward_share(args.device),
        "ddp": bench_ddp,
    }
    report = {"machine": machine()}
    for name in args.only.split(","):
        report[name] = runs[name]()
        print(f"\n{name}")
        for key, value in report[name].items():
            print(f"  {key:28s} {value:.4g}" if isinstance(value, float) else f"  {key:28s} {value}")
    (RESULTS / "search.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'search.json'}")


if __name__ == "__main__":
    main()
