"""The evaluation protocol: leak-free, negatives without replacement, past items excluded."""

import copy

import numpy as np
import numpy.typing as npt
import pytest

from freshrank.core.codec import EventType, InteractionEvent
from freshrank.model import ModelConfig
from freshrank.model.baselines import PopularityLearner
from freshrank.model.learner import (
    LearnerConfig,
    OnlineLearner,
    PrequentialLearner,
    synthetic_batches,
)

Rows = npt.NDArray[np.int64]
Scores = npt.NDArray[np.float32]

STREAM = {"users": 60, "items": 300, "topics": 20, "events": 4096, "seed": 13}


def _config(architecture: str = "sasrec") -> LearnerConfig:
    model = ModelConfig(
        architecture=architecture, num_users=128, num_items=512, dim=16, history_len=8
    )
    return LearnerConfig(model=model, negatives=50, full_eval_events=8, seed=2)


def _learner(kind: str) -> PrequentialLearner:
    if kind == "popularity":
        return PopularityLearner(_config())
    return OnlineLearner(_config(kind))


def _event(user: str, item: str, ms: int) -> InteractionEvent:
    return InteractionEvent(
        event_id=f"{user}-{item}-{ms}",
        user_id=user,
        item_id=item,
        type=EventType.VIEW,
        value=1.0,
        timestamp_ms=ms,
    )


@pytest.fixture(scope="module")
def batches() -> list[list[InteractionEvent]]:
    return list(synthetic_batches(128, **STREAM))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["popularity", "mf", "din", "sasrec"])
def test_an_event_is_scored_only_from_the_past(
    kind: str, batches: list[list[InteractionEvent]]
) -> None:
    """What happens later in a batch (or after it) cannot change how an earlier event scored.

    The later half of a batch is rewritten to hammer one already-known item, and its users'
    histories: were popularity counts, ID maps, histories or weights updated before scoring,
    the first half's ranks would move.
    """
    learner = _learner(kind)
    for batch in batches[:12]:
        learner.step(batch)
    batch = batches[12]
    half = len(batch) // 2
    late = batch[half].timestamp_ms
    hammered = [_event(e.user_id, "i0", late + 1 + i) for i, e in enumerate(batch[half:])]
    honest, leaky = copy.deepcopy(learner), copy.deepcopy(learner)
    honest.step(
        batch[:half]
        + [_event(e.user_id, e.item_id, late + 1 + i) for i, e in enumerate(batch[half:])]
    )
    leaky.step(batch[:half] + hammered)
    assert honest.last_ranks[:half].tolist() == leaky.last_ranks[:half].tolist()
    # And the batch was learned only after scoring: scoring it again now differs (models).
    if kind != "popularity":
        again = copy.deepcopy(learner)
        again.step(batch)
        rescored = copy.deepcopy(again)
        rescored.steps = learner.steps  # same negatives as the first scoring
        rescored.evaluate_only(batch)
        assert again.last_ranks.tolist() != rescored.last_ranks.tolist()


def test_negatives_are_distinct_and_never_an_item_the_user_met(
    batches: list[list[InteractionEvent]],
) -> None:
    learner = _learner("mf")
    for batch in batches[:20]:
        learner.step(batch)
    users = learner.users.rows([e.user_id for e in batches[20]])
    items = learner.items.rows([e.item_id for e in batches[20]])
    histories = learner.histories.get(users)
    rng = np.random.default_rng(0)
    negatives, valid = learner._negatives(rng, users, histories, items, learner.items.active_rows())
    assert valid.all()  # 300 items, no user met 250 of them
    for row, user, item in zip(negatives, users, items, strict=True):
        assert len(set(row.tolist())) == len(row)
        assert item not in row
        met = learner.seen.contains(np.full(len(row), user), row)
        assert not met.any()


def test_a_user_who_met_almost_everything_gets_only_the_rest_as_negatives() -> None:
    config = LearnerConfig(
        model=ModelConfig(architecture="mf", num_users=8, num_items=64, dim=4, history_len=4),
        negatives=50,
        full_eval_events=2,
    )
    learner = OnlineLearner(config)
    learner.step([_event("u1", f"i{i}", 1000 + i) for i in range(40)])
    learner.step([_event("u1", "i0", 5000), _event("u2", "i1", 5000)])
    ranks = learner.last_ranks
    assert len(ranks) == 2
    # u1 met all 40 items: no negative left, so the true item ranks first whatever it scores.
    assert ranks[0] == 0


def test_sasrec_scores_a_cold_user_by_the_popularity_prior_and_a_session_by_its_items(
    batches: list[list[InteractionEvent]],
) -> None:
    import torch

    fresh = OnlineLearner(_config("sasrec")).model.eval()
    learner = OnlineLearner(_config("sasrec"))
    for batch in batches[:16]:
        learner.step(batch)
    model = learner.model.eval()
    candidates = torch.arange(1, 60).unsqueeze(0)
    empty = torch.zeros(1, 8, dtype=torch.long)
    unknown = torch.zeros(1, 1, dtype=torch.long)
    with torch.inference_mode():
        # Untrained, a cold user (no row, no history) scores exactly the popularity prior.
        torch.testing.assert_close(fresh(unknown, empty, candidates), fresh.prior(candidates))  # type: ignore[operator]
        cold = model(unknown, empty, candidates)
        # Trained: the prior plus the intent learned from newcomers' first events.
        # (the views' mean; no kNN term: an unknown user with no history has no neighbours)
        targets = model.per_view(model.item_embedding(candidates))  # type: ignore[operator]
        newcomer = (targets @ model.cold_intent).mean(-1)
        prior = model.prior(candidates)  # type: ignore[operator]
        session = torch.zeros(1, 8, dtype=torch.long)
        session[0, :2] = torch.tensor([3, 4])
        warm = model(unknown, session, candidates)
    torch.testing.assert_close(cold, prior + newcomer)
    assert float(model.cold_intent.detach().abs().sum()) > 0  # type: ignore[operator]
    assert not torch.allclose(warm, cold)  # the session's items move an unknown user away


def test_sasrec_prior_decays_each_time_scale_at_its_own_half_life() -> None:
    import torch

    from freshrank.model.sasrec import PRIOR_SCALES

    model = OnlineLearner(_config("sasrec")).model
    model.observe_items(torch.tensor([5, 5, 7]), 1.0)
    model.observe_items(torch.tensor([7]), 0.5)  # one base half-life passed
    counts = model.popularity  # type: ignore[attr-defined]
    assert counts.shape == (len(PRIOR_SCALES), 512)
    for scale, row in zip(PRIOR_SCALES, counts, strict=True):
        factor = 0.5 ** (1.0 / scale)
        assert float(row[5]) == pytest.approx(2 * factor)
        assert float(row[7]) == pytest.approx(factor + 1)
    assert float(counts[:, 0].abs().sum()) == 0.0  # the unknown row never gains popularity


class _Recorder(PrequentialLearner):
    """Records the histories it is asked to score with and to learn from."""

    def __init__(self, config: LearnerConfig) -> None:
        super().__init__(config)
        self.scored: list[Rows] = []
        self.learned: list[Rows] = []

    def score(self, user_rows: Rows, history_rows: Rows, candidate_rows: Rows) -> Scores:
        self.scored.append(history_rows.copy())
        return np.zeros(candidate_rows.shape, dtype=np.float32)

    def learn(self, user_rows: Rows, item_rows: Rows, history_rows: Rows) -> None:
        self.learned.append(history_rows.copy())
        return None


def test_simultaneous_events_are_history_for_learning_but_never_for_scoring() -> None:
    """Same-timestamp events of a user: none scores from another; learning, after scoring,
    reads them in stream order (the same-day co-purchase signal)."""
    learner = _Recorder(_config())
    learner.step([_event("u", "a", 1), *(_event("v", item, 1) for item in "bcd")])  # all known
    learner.scored.clear()
    learner.step([_event("u", "b", 5), _event("u", "c", 5), _event("u", "d", 9)])
    rows = {item: int(learner.items.rows([item])[0]) for item in "abcd"}
    scored, learned = learner.scored[0], learner.learned[-1]
    assert [list(h[h != 0]) for h in scored] == [
        [rows["a"]],
        [rows["a"]],  # c is simultaneous with b: not its history when scored
        [rows["c"], rows["b"], rows["a"]],
    ]
    assert [list(h[h != 0]) for h in learned] == [
        [rows["a"]],
        [rows["b"], rows["a"]],  # learning reads b before c, in stream order
        [rows["c"], rows["b"], rows["a"]],
    ]
