import torch

from freshrank.model import ModelConfig
from freshrank.model.sasrec import SelfAttentiveSequential

CONFIG = ModelConfig(architecture="sasrec", num_users=8, num_items=20, dim=8, history_len=5)


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
        states = several.intents(histories) + several.user_embedding(users)  # [B,3,D]
        per_state = torch.einsum("bcd,bmd->bcm", several.item_embedding(candidates), states)
    # One state present (one item, or none: the cold intent): SASRec's score exactly.
    assert torch.allclose(joined[:2], single[:2], atol=1e-5)
    # Three items: log-sum-exp of the three states' dot products, plus the prior.
    expected = torch.logsumexp(per_state[2], dim=-1) + several.prior(candidates[2])
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
