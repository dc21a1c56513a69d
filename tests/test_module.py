import pytest
import torch

from lightning_search import DiffusionModule
from lightning_search.backbones import DigitsBackbone
from lightning_search.errors import ConfigurationError, UnknownNameError
from lightning_search.sampling import Sampler
from lightning_search.search import SearchConfig
from tests.sampling.helpers import MeanVerifier


def module(steps=5):
    return DiffusionModule(DigitsBackbone("digits-xs"), sampler=Sampler("heun", steps=steps))


def test_a_budget_below_the_algorithms_cost_is_rejected_with_the_numbers():
    m = module()
    with pytest.raises(ConfigurationError) as info:
        m.configure_search(SearchConfig("random", "v", num_candidates=8, budget=50), {"v": MeanVerifier()})
    message = str(info.value)
    assert "80 NFEs per sample" in message and "budget 50" in message and "10 per full sample" in message
    m.configure_search(SearchConfig("random", "v", num_candidates=5, budget=50), {"v": MeanVerifier()})


def test_unknown_search_verifier_lists_the_run_verifiers():
    with pytest.raises(UnknownNameError, match="a, b"):
        module().configure_search(SearchConfig("random", "c"), {"a": MeanVerifier(), "b": MeanVerifier()})


def test_predict_step_records_nfe_flops_and_evaluations():
    m = module(steps=2).eval()
    m.configure_search(SearchConfig("random", "v", num_candidates=3), {"v": MeanVerifier(), "w": MeanVerifier()})
    out = m.predict_step({"condition": [1, 2], "sample_id": torch.tensor([10, 11])}, 0)
    assert out["result"].nfe.tolist() == [12, 12]  # 3 candidates x 2 Heun steps x 2 NFE
    assert set(out["evaluations"]) == {"v", "w"}
    torch.testing.assert_close(out["evaluations"]["v"], out["result"].score)  # the chosen sample's score
    per_nfe = out["gflops"][0] / 12
    assert per_nfe > 0 and out["gflops"] == pytest.approx([12 * per_nfe] * 2)


def test_a_resumed_batch_done_whole_is_not_computed_and_a_partly_done_one_is_computed_whole():
    m = module(steps=2).eval()
    m.configure_search(SearchConfig("random", "v", num_candidates=2), {"v": MeanVerifier()})
    rows = []
    original = m.backbone.forward
    m.backbone.forward = lambda x, *args, **kwargs: rows.append(x.shape[0]) or original(x, *args, **kwargs)
    batch = {"condition": [1, 2], "sample_id": torch.tensor([10, 11])}
    assert m.predict_step({**batch, "done": [True, True]}, 0) == {"sample_id": [10, 11]} and rows == []
    out = m.predict_step({**batch, "done": [True, False]}, 0)
    assert out["sample_id"] == [10, 11] and rows[:4] == [4] * 4  # 2 Heun steps x 2 NFE, 2 samples x 2 candidates each
