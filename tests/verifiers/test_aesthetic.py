"""LAION aesthetic predictor: the MLP head's forward written by hand on the normalised CLIP embedding."""

from __future__ import annotations

import pytest
import torch

from lightning_search.errors import CheckpointError
from lightning_search.verifiers import AestheticVerifier
from lightning_search.verifiers.aesthetic import LinearStackMLP, load_head


def _head_by_hand(head: LinearStackMLP, x: torch.Tensor) -> torch.Tensor:
    # Linear layers at indices 0, 2, 4, 6, 7; dropout is identity in eval; no activations (as released)
    for i in (0, 2, 4, 6, 7):
        layer = head.layers[i]
        x = x @ layer.weight.T + layer.bias
    return x.squeeze(-1)


def test_score_is_head_of_normalised_clip_embedding(aesthetic, images32, prompts, clip_normalize):
    with torch.no_grad():
        emb = aesthetic.visual(clip_normalize(images32))
        emb = emb / emb.norm(dim=-1, keepdim=True)
        ref = _head_by_hand(aesthetic.head, emb)
    torch.testing.assert_close(aesthetic(images32, prompts), ref, atol=1e-6, rtol=1e-5)


def test_ignores_the_prompt(aesthetic, images32, prompts):
    torch.testing.assert_close(aesthetic(images32, prompts), aesthetic(images32, ["x"] * 4))


def test_head_loads_from_file_and_folder(tmp_path):
    from safetensors.torch import save_file

    src = LinearStackMLP(16)
    torch.save(src.state_dict(), tmp_path / "aesthetic-model.pth")
    save_file(src.state_dict(), tmp_path / "head.safetensors")
    for source, filename in [
        (str(tmp_path), "aesthetic-model.pth"),
        (str(tmp_path / "head.safetensors"), "ignored"),
    ]:
        dst = LinearStackMLP(16)
        load_head(dst, source, filename)
        assert torch.equal(dst.layers[0].weight, src.layers[0].weight)
    with pytest.raises(CheckpointError, match="does not fit the LinearStackMLP head"):
        load_head(LinearStackMLP(32), str(tmp_path), "aesthetic-model.pth")


def test_missing_weights_raise_checkpoint_error():
    with pytest.raises(CheckpointError, match="ViT-L-14"):
        AestheticVerifier()


def test_real_loading_path_from_local_files(tmp_path, tiny_open_clip_dir, aesthetic, images32, prompts):
    """CLIP from an open_clip folder and the head from a weights-only file, as a user offline would pass them."""
    torch.save(aesthetic.head.state_dict(), tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    loaded = AestheticVerifier(
        clip_model=f"local-dir:{tiny_open_clip_dir}", head=str(tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    )
    torch.testing.assert_close(loaded(images32, prompts), aesthetic(images32, prompts))
