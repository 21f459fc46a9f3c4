import dataclasses

import torch

from freshrank.model import ModelConfig
from freshrank.model.sasrec import SelfAttentiveSequential

# One view, no kNN term: the model's own score (the tests with views or the term say so).
CONFIG = ModelConfig(
    architecture="sasrec",
    num_users=8,
    num_items=20,
    dim=8,
    history_len=5,
    views=1,
    neighbours=0,
)


def _pair() -> tuple[SelfAttentiveSequential, SelfAttentiveSequential]:
    """The same weights scored with the three newest states and with the newest only."""
    torch.manual_seed(3)
    several = SelfAttentiveSequential(CONFIG, interests=3).eval()
    with torch.no_grad():
        several.user_embedding.weight.normal_(std=0.3)
        several.item_embedding.weight.normal_(std=0.3)
        several.cold_intent.normal_(std=0.3)
    newest = SelfAttentiveSequential(CONFIG, interests=1).eval()
    newest.load_state_dict(several.state_dict())
    return several, newest


def test_several_interests_soft_max_the_newest_states() -> None:
    several, newest = _pair()
    users = torch.tensor([[1], [2], [3]])
    histories = torch.tensor([[4, 0, 0, 0, 0], [0, 0, 0, 0, 0], [4, 5, 6, 7, 0]])
    candidates = torch.arange(1, 20).expand(3, -1)
    with torch.no_grad():
        joined = several(users, histories, candidates)
        single = newest(users, histories, candidates)
        states = several.intents(histories)[:, 0] + several.user_embedding(users)  # [B,3,D]
        per_state = torch.einsum("bcd,bmd->bcm", several.item_embedding(candidates), states)
    # One state present (one item, or none: the cold intent): SASRec's score exactly.
    assert torch.allclose(joined[:2], single[:2], atol=1e-5)
    # Three items: log-sum-exp of the three states' dot products, plus the prior.
    expected = torch.logsumexp(per_state[2], dim=-1) + several.prior(candidates[2]).squeeze(-1)
    assert torch.allclose(joined[2], expected, atol=1e-5)
    assert not torch.allclose(joined[2], single[2], atol=1e-3)
    # The older states change the ranking, not just a constant shift of it.
    assert not torch.equal(joined[2].argsort(), single[2].argsort())


def test_training_scores_match_serving_scores() -> None:
    several, _ = _pair()
    users = torch.tensor([[1], [3]])
    histories = torch.tensor([[4, 5, 6, 0, 0], [0, 0, 0, 0, 0]])
    positives = torch.tensor([7, 8])
    negatives = torch.tensor([9, 10, 11])
    with torch.no_grad():
        trained = several.train_scores(users, histories, positives, negatives)
        candidates = torch.cat([positives.unsqueeze(1), negatives.expand(2, -1)], dim=1)
        served = several(users, histories, candidates)
    assert torch.allclose(trained, served, atol=1e-5)


def _views_and_singles() -> tuple[SelfAttentiveSequential, list[SelfAttentiveSequential]]:
    """A two-view model and, per view, a one-view model holding that view's item table,
    item bias and prior mix with every other weight shared."""
    torch.manual_seed(5)
    double = SelfAttentiveSequential(dataclasses.replace(CONFIG, views=2)).eval()
    with torch.no_grad():
        double.user_embedding.weight.normal_(std=0.3)
        double.item_embedding.weight.normal_(std=0.3)
        double.item_bias.weight.normal_(std=0.3)
        double.prior_weight.normal_(std=0.3)
        double.cold_intent.normal_(std=0.3)
        double.popularity.uniform_(0.0, 5.0)  # type: ignore[operator]
    singles = []
    dim, scales = CONFIG.dim, double.prior_weight.numel() // 2
    for view in range(2):
        single = SelfAttentiveSequential(CONFIG).eval()
        state = dict(double.state_dict())
        state["item_embedding.weight"] = state["item_embedding.weight"][
            :, view * dim : (view + 1) * dim
        ]
        state["item_bias.weight"] = state["item_bias.weight"][:, view : view + 1]
        state["prior_weight"] = state["prior_weight"][view * scales : (view + 1) * scales]
        single.load_state_dict(state)
        singles.append(single)
    return double, singles


def test_views_score_the_mean_of_one_view_models_over_their_own_tables() -> None:
    double, singles = _views_and_singles()
    users = torch.tensor([[1], [2], [3]])
    histories = torch.tensor([[4, 0, 0, 0, 0], [0, 0, 0, 0, 0], [4, 5, 6, 7, 0]])
    candidates = torch.arange(1, 20).expand(3, -1)
    with torch.no_grad():
        scores = double(users, histories, candidates)
        each = [single(users, histories, candidates) for single in singles]
    assert scores.shape == (3, 19)
    torch.testing.assert_close(scores, (each[0] + each[1]) / 2, atol=1e-5, rtol=0)
    # The two views are different models (their own tables), not one model counted twice.
    assert not torch.allclose(each[0], each[1], atol=1e-2)


def test_each_view_trains_on_its_own_softmax_rows() -> None:
    double, singles = _views_and_singles()
    users = torch.tensor([[1], [3]])
    histories = torch.tensor([[4, 5, 6, 0, 0], [0, 0, 0, 0, 0]])
    positives, negatives = torch.tensor([7, 8]), torch.tensor([9, 10, 11])
    with torch.no_grad():
        trained = double.train_scores(users, histories, positives, negatives)
        each = [s.train_scores(users, histories, positives, negatives) for s in singles]
    # View-major rows, each view's [B, 1+S] block exactly that view's own scores.
    torch.testing.assert_close(trained, torch.cat(each), atol=1e-5, rtol=0)
    assert double.train_targets(positives, histories).tolist() == [7, 8, 7, 8]


def test_views_export_to_torchscript_with_the_same_scores() -> None:
    double, _ = _views_and_singles()
    scripted = torch.jit.script(double)
    users = torch.tensor([[1], [2]])
    histories = torch.tensor([[4, 5, 0, 0, 0], [0, 0, 0, 0, 0]])
    candidates = torch.arange(1, 20).expand(2, -1)
    with torch.no_grad():
        torch.testing.assert_close(
            scripted(users, histories, candidates), double(users, histories, candidates)
        )
