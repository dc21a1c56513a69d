"""Preference pairs for Diffusion-DPO and SFT: the Pick-a-Pic v2 schema, or pairs labelled by a verifier.

The schema (Kirstain et al. 2023, ``yuvalkirstain/pickapic_v2``): one row per pair with ``caption`` (the
condition: a prompt, or a class id for class-conditional models), ``jpg_0`` and ``jpg_1`` (encoded image bytes,
any format PIL reads, or a ``datasets.Image`` column) and ``label_0`` (1: image 0 preferred, 0: image 1
preferred, 0.5: a tie). Ties are dropped, as in Wallace et al. 2023; so are pairs without a label and pairs whose
images are missing or cannot be decoded, and the counts are logged. Column names can be mapped for other sets.

Batches: ``{"image_w": (B, C, H, W) in [0, 1], "image_l": (B, C, H, W) in [0, 1], "condition": [B conditions]}``
(the preferred image first), what :class:`~lightning_search.objectives.DiffusionDPO` and
:class:`~lightning_search.objectives.PreferredSFT` read.

AI-feedback pairs (the paper's "AI feedback" variant, and Table 3's fine-tuned-then-searched model on digits):
:func:`ai_feedback_pairs` samples K images per condition from a model with distinct seeded noises, scores them
with any verifier and keeps the best against the worst; the result is saved in the same schema (PNG bytes,
plus ``score_0`` / ``score_1`` and the noise seeds), so it is a reusable data set like any other.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightning_search.errors import CheckpointError, ConfigurationError
from lightning_search.verifiers.base import Verifier

DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")  # written by save_to_disk


# -- reading ------------------------------------------------------------------------------------------------


def load_preference_dataset(source: str, split: str = "train"):
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder, parquet file(s) / a folder of them, a folder
    ``datasets.load_dataset`` reads, or a hub id (never with remote code)."""
    import datasets

    path = Path(source).expanduser()
    try:
        if path.is_dir() and any((path / m).is_file() for m in DISK_MARKERS):
            data = datasets.load_from_disk(str(path))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise ConfigurationError(f"{source!r} has splits {sorted(data)}, not {split!r}; set split")
                data = data[split]
            return data
        if path.is_dir() and any(path.rglob("*.parquet")):
            files = sorted(str(p) for p in path.rglob("*.parquet"))
            return datasets.load_dataset("parquet", data_files=files, split="train")
        if source.endswith(".parquet"):
            if "*" not in source and not path.is_file():
                raise CheckpointError(f"preference data {source!r} not found")
            return datasets.load_dataset("parquet", data_files=str(path) if path.is_file() else source, split="train")
        if path.exists():
            return datasets.load_dataset(str(path), split=split)
        if source.startswith((".", "/", "~")) or source.count("/") > 1:
            raise CheckpointError(
                f"preference data {source!r} not found: make it with ai_feedback (AI-feedback pairs) or point "
                "to a save_to_disk folder, parquet files or a hub id"
            )
        return datasets.load_dataset(source, split=split)
    except (FileNotFoundError, ConnectionError, OSError, ValueError) as err:
        if isinstance(err, (CheckpointError, ConfigurationError)):
            raise
        raise CheckpointError(
            f"could not load the preference data {source!r} ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            "Without network access (HF_HUB_OFFLINE=1) a hub data set cannot be fetched: download it once, e.g. "
            f"`huggingface-cli download {source} --repo-type dataset --local-dir /data/<name>`, and pass the folder"
        ) from err


def decode_image(value: Any, mode: str = "RGB", resolution: int | None = None) -> torch.Tensor | None:
    """Encoded bytes, a ``datasets.Image`` dict ({bytes, path}), a PIL image or a file path -> (C, H, W) in
    [0, 1]; None when the image is missing or cannot be decoded. ``resolution``: resize the short side and
    centre-crop to a square (the Diffusion-DPO training transform, without the random flip)."""
    try:
        if value is None:
            return None
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            if not value:
                return None
            image = Image.open(io.BytesIO(value))
        elif isinstance(value, (str, Path)):
            image = Image.open(value)
        elif isinstance(value, Image.Image):
            image = value
        else:
            return None
        image = image.convert(mode)
        if resolution is not None:
            w, h = image.size
            scale = resolution / min(w, h)
            image = image.resize((max(resolution, round(w * scale)), max(resolution, round(h * scale))), Image.BICUBIC)
            w, h = image.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
        array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        channels = len(image.getbands())
        return array.view(image.size[1], image.size[0], channels).permute(2, 0, 1).float() / 255
    except (OSError, ValueError, SyntaxError):  # PIL's UnidentifiedImageError is an OSError
        return None


class PreferencePairs(Dataset):
    """Rows of a (filtered) preference ``datasets.Dataset`` as {image_w, image_l, condition}; None for a pair
    whose images fail to decode (the collate function drops it). ``decoded`` holds pairs decoded in advance."""

    def __init__(
        self, data, caption_column: str, image_columns: Sequence[str], label_column: str, mode: str, resolution
    ) -> None:
        self.data, self.caption, self.images, self.label = data, caption_column, list(image_columns), label_column
        self.mode, self.resolution = mode, resolution
        self.decoded: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.decoded) if self.decoded is not None else len(self.data)

    def decode_row(self, caption: Any, image_0: Any, image_1: Any, label: float) -> dict[str, Any] | None:
        first = float(label) >= 0.5  # label_0 = 1: image 0 preferred (ties were dropped)
        win, lose = (image_0, image_1) if first else (image_1, image_0)
        image_w = decode_image(win, self.mode, self.resolution)
        image_l = decode_image(lose, self.mode, self.resolution)
        if image_w is None or image_l is None:
            return None
        return {"image_w": image_w, "image_l": image_l, "condition": caption}

    def decode_all(self) -> list[dict[str, Any] | None]:
        """Every pair decoded (None where decoding fails), reading the columns in bulk (fast for small sets)."""
        columns = [self.data[c] for c in (self.caption, *self.images, self.label)]
        return [self.decode_row(*row) for row in zip(*columns)]

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        if self.decoded is not None:
            return self.decoded[i]
        row = self.data[int(i)]
        return self.decode_row(row[self.caption], row[self.images[0]], row[self.images[1]], row[self.label])


def collate_pairs(rows: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Stack pairs; pairs that failed to decode (None) are left out."""
    rows = [r for r in rows if r is not None]
    if not rows:
        raise ConfigurationError("a whole batch of preference pairs failed to decode; check the image columns")
    shapes = {tuple(r["image_w"].shape) for r in rows} | {tuple(r["image_l"].shape) for r in rows}
    if len(shapes) > 1:
        raise ConfigurationError(
            f"preference images of different sizes {sorted(shapes)[:3]} cannot be batched; set resolution"
        )
    return {
        "image_w": torch.stack([r["image_w"] for r in rows]),
        "image_l": torch.stack([r["image_l"] for r in rows]),
        "condition": [r["condition"] for r in rows],
    }


# -- AI feedback --------------------------------------------------------------------------------------------


@torch.no_grad()
def ai_feedback_pairs(
    backbone,
    sampler,
    verifier: Verifier,
    conditions: Sequence[Any],
    sample_ids: Sequence[int],
    samples_per_condition: int = 4,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, list]:
    """Sample K images per condition, score them with ``verifier``, keep the best against the worst.

    Noises are seeded by (seed, sample id, candidate) as in search, so the pairs are reproducible. Conditions
    whose K scores are all equal (no preference) give no pair. -> columns in the Pick-a-Pic schema:
    caption, jpg_0 (winner, PNG bytes), jpg_1 (loser), label_0 (= 1.0), score_0, score_1, seed_0, seed_1.
    """
    from lightning_search.reporting.io import image_to_png_bytes
    from lightning_search.search.base import SearchContext

    if samples_per_condition < 2:
        raise ConfigurationError(f"AI feedback needs samples_per_condition >= 2, got {samples_per_condition}")
    ctx = SearchContext(backbone, sampler, verifier, seed)
    columns: dict[str, list] = {k: [] for k in ("caption", "jpg_0", "jpg_1", "label_0", "score_0", "score_1")}
    columns.update(seed_0=[], seed_1=[])
    for start in range(0, len(conditions), batch_size):
        conds, ids = list(conditions[start : start + batch_size]), list(sample_ids[start : start + batch_size])
        seeds = ctx.seeds(ids, 0, samples_per_condition)
        _, images, scores, _ = ctx.sample_and_score(ctx.noise(seeds), seeds, ctx.encode(conds), conds, None)
        best, worst = scores.argmax(dim=1), scores.argmin(dim=1)
        for i, cond in enumerate(conds):
            b, w = int(best[i]), int(worst[i])
            if not scores[i, b] > scores[i, w]:
                continue
            columns["caption"].append(cond)
            columns["jpg_0"].append(image_to_png_bytes(images[i, b]))
            columns["jpg_1"].append(image_to_png_bytes(images[i, w]))
            columns["label_0"].append(1.0)
            columns["score_0"].append(float(scores[i, b]))
            columns["score_1"].append(float(scores[i, w]))
            columns["seed_0"].append(int(seeds[i][b]))
            columns["seed_1"].append(int(seeds[i][w]))
    return columns


def save_pairs(columns: dict[str, list], path: str | Path) -> None:
    """Write pairs as a ``save_to_disk`` folder, or one parquet file if ``path`` ends in ``.parquet``."""
    import datasets

    data = datasets.Dataset.from_dict(columns)
    path = Path(path)
    if path.suffix == ".parquet":
        path.parent.mkdir(parents=True, exist_ok=True)
        data.to_parquet(str(path))
    else:
        data.save_to_disk(str(path))


class AIFeedback:
    """How to make AI-feedback pairs from the model being fine-tuned (see :func:`ai_feedback_pairs`).

    Args:
        verifier: scores the samples (e.g. the digits verifier classifier, or any text-to-image verifier).
        conditions: the conditions (prompts, class ids, dicts); or
        num_classes: class ids 0 .. num_classes - 1 as the conditions.
        repeats: each condition is used this many times (e.g. 200 x 10 digit classes = 2,000 conditions);
            condition i gets sample id i, which seeds its noises.
        samples_per_condition: K, samples drawn per condition (the pair is best against worst of K).
        seed: seed of the noises; keep it apart from the evaluation runs' seed so no evaluated noise is trained on.
        batch_size: conditions sampled together.
    """

    def __init__(
        self,
        verifier: Verifier,
        conditions: list[Any] | None = None,
        num_classes: int | None = None,
        repeats: int = 1,
        samples_per_condition: int = 4,
        seed: int = 1000,
        batch_size: int = 256,
    ) -> None:
        if (conditions is None) == (num_classes is None):
            raise ConfigurationError("AIFeedback needs exactly one of conditions= or num_classes=")
        base = list(conditions) if conditions is not None else list(range(num_classes))
        self.conditions = [c for c in base for _ in range(repeats)]
        self.verifier = verifier
        self.samples_per_condition, self.seed, self.batch_size = samples_per_condition, seed, batch_size

    def make(self, backbone, sampler, device: torch.device) -> dict[str, list]:
        was_training = backbone.training
        backbone.to(device).eval()
        self.verifier.to(device).eval()
        try:
            return ai_feedback_pairs(
                backbone,
                sampler,
                self.verifier,
                self.conditions,
                list(range(len(self.conditions))),
                self.samples_per_condition,
                self.seed,
                self.batch_size,
            )
        finally:
            backbone.train(was_training)


# -- the DataModule -----------------------------------------------------------------------------------------


class PreferenceDataModule(LightningDataModule):
    """Preference pairs for fine-tuning (Diffusion-DPO, SFT on winners).

    Args:
        source: a ``save_to_disk`` folder, parquet file(s) (a file, a glob or a folder of them), a folder
            ``datasets.load_dataset`` reads, or a hub id (e.g. ``yuvalkirstain/pickapic_v2``, downloaded first).
            With ``ai_feedback``, where the pairs are written (``.parquet``: one file) and read back.
        ai_feedback: make the pairs from the model being trained (at ``prepare_data``, once) when ``source``
            does not exist yet; an existing ``source`` is reused.
        split: the split of a hub id or a DatasetDict folder.
        caption_column, image_columns, label_column: the schema's columns (Pick-a-Pic v2 names by default).
        image_mode: PIL mode of the decoded images (``RGB``; ``L`` for grey digits).
        resolution: resize + centre-crop to this square size (None: keep, all images must match).
        batch_size: pairs per batch.
        limit: use at most this many pairs (after filtering).
        validate_images: decode every pair once in ``setup`` so bad pairs are dropped and counted up front
            (for very large sets turn it off: bad pairs are then skipped when batched).
        in_memory: keep the decoded images in memory (small sets such as digits pairs: no decoding per step).
    """

    def __init__(
        self,
        source: str | None = None,
        ai_feedback: AIFeedback | None = None,
        split: str = "train",
        caption_column: str = "caption",
        image_columns: list[str] | None = None,
        label_column: str = "label_0",
        image_mode: str = "RGB",
        resolution: int | None = None,
        batch_size: int = 16,
        limit: int | None = None,
        validate_images: bool = True,
        in_memory: bool = False,
        shuffle: bool = True,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if source is None:
            raise ConfigurationError("PreferenceDataModule needs source (where the pairs are, or will be written)")
        self.save_hyperparameters(ignore=["ai_feedback"])
        self.source, self.ai_feedback = source, ai_feedback
        self.image_columns = list(image_columns or ["jpg_0", "jpg_1"])
        if len(self.image_columns) != 2:
            raise ConfigurationError(f"image_columns names the two images of a pair, got {self.image_columns}")
        self.stats: dict[str, int] = {}
        self.pairs: PreferencePairs | None = None

    # -- AI feedback ---------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Make the AI-feedback pairs once (rank zero), if asked and not already on disk."""
        if self.ai_feedback is None or Path(self.source).exists():
            return
        trainer = self.trainer
        module = None if trainer is None else trainer.lightning_module
        if module is None or not hasattr(module, "backbone"):
            raise ConfigurationError("ai_feedback samples from the model being fit: use it with a DiffusionModule")
        rank_zero_info(f"making AI-feedback pairs into {self.source}")
        columns = self.ai_feedback.make(module.backbone, module.sampler, trainer.strategy.root_device)
        save_pairs(columns, self.source)
        scores = torch.tensor(columns["score_0"]) - torch.tensor(columns["score_1"])
        rank_zero_info(
            f"AI feedback: {len(columns['caption'])} pairs, mean score gap {scores.mean().item():.3f} -> {self.source}"
        )

    # -- reading -------------------------------------------------------------------------------------------
    def required_columns(self) -> list[str]:
        return [self.hparams.caption_column, *self.image_columns, self.hparams.label_column]

    def setup(self, stage: str | None = None) -> None:
        if self.pairs is not None:
            return
        import datasets

        data = load_preference_dataset(self.source, self.hparams.split)
        missing = [c for c in self.required_columns() if c not in data.column_names]
        if missing:
            raise ConfigurationError(
                f"preference data {self.source!r} lacks the column(s) {', '.join(missing)} (it has "
                f"{', '.join(data.column_names)}); expected the Pick-a-Pic v2 schema caption, jpg_0, jpg_1, label_0 "
                "or set caption_column / image_columns / label_column to its names"
            )
        data = data.select_columns(self.required_columns())
        for column in self.image_columns:  # read encoded bytes ourselves, so a broken image is counted, not raised
            if isinstance(data.features[column], datasets.Image):
                data = data.cast_column(column, datasets.Image(decode=False))
        read = len(data)
        labels = data[self.hparams.label_column]
        keep = [i for i, v in enumerate(labels) if v is not None and float(v) in (0.0, 1.0)]
        ties = sum(1 for v in labels if v is not None and float(v) not in (0.0, 1.0))
        unlabelled = read - len(keep) - ties
        data = data.select(keep)
        pairs = PreferencePairs(
            data,
            self.hparams.caption_column,
            self.image_columns,
            self.hparams.label_column,
            self.hparams.image_mode,
            self.hparams.resolution,
        )
        bad = 0
        if self.hparams.validate_images or self.hparams.in_memory:
            decoded = pairs.decode_all()
            good = [i for i, row in enumerate(decoded) if row is not None]
            bad = len(decoded) - len(good)
            pairs.data = data.select(good)
            if self.hparams.in_memory:
                pairs.decoded = [decoded[i] for i in good]
        if self.hparams.limit is not None:
            pairs.data = pairs.data.select(range(min(self.hparams.limit, len(pairs.data))))
            if pairs.decoded is not None:
                pairs.decoded = pairs.decoded[: self.hparams.limit]
        self.stats = {"read": read, "ties": ties, "unlabelled": unlabelled, "bad_images": bad, "kept": len(pairs)}
        rank_zero_info(
            f"preference data {self.source}: {read} pairs read; dropped {ties} ties, {unlabelled} without a label, "
            f"{bad} with missing or undecodable images; {len(pairs)} kept"
        )
        if not len(pairs):
            raise ConfigurationError(f"no usable preference pairs in {self.source!r} ({self.stats})")
        self.pairs = pairs

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.pairs,
            batch_size=self.hparams.batch_size,
            shuffle=self.hparams.shuffle,
            drop_last=len(self.pairs) > self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=collate_pairs,
        )
