"""The user-kNN memory: what it remembers, whom it finds, how they vote, what it forgets."""

import dataclasses
import math

import pytest
import torch

from freshrank.model import ModelConfig
from freshrank.model.knn import RECENT_USERS, USER_ITEMS, WEIGHT_GRID, UserKnn
from freshrank.model.sasrec import SelfAttentiveSequential


def _random_memory(users: int, items: int, pairs: int, seed: int) -> UserKnn:
    knn = UserKnn(users, items, neighbours=1000)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(4):  # several batches: old entries must give way to new ones
        knn.observe(
            torch.randint(1, users, (pairs,), generator=generator),
            torch.randint(1, items, (pairs,), generator=generator),
        )
    return knn


def _row(table: torch.Tensor, row: int) -> list[int]:
    return [value for value in table[row].tolist() if value]


def test_each_row_keeps_its_newest_distinct_entries_in_stream_order() -> None:
    knn = UserKnn(4, 60, neighbours=5)
    users = torch.tensor([1, 1, 2, 1, 1])
    items = torch.tensor([5, 6, 9, 5, 0])  # item 0 is padding: not remembered
    knn.observe(users, items)
    assert _row(knn.recent_items, 1) == [5, 6]  # 5 again: moved to the front, not repeated
    assert _row(knn.recent_items, 2) == [9]
    assert _row(knn.recent_users, 5) == [1]
    knn.observe(torch.tensor([3] * (USER_ITEMS + 5)), torch.arange(1, USER_ITEMS + 6))
    assert _row(knn.recent_items, 3) == list(range(USER_ITEMS + 5, 5, -1))  # newest first
    assert knn.item_counts.tolist() == [0, 2, 1, USER_ITEMS]
    knn.observe(torch.arange(1, 4).repeat(RECENT_USERS), torch.full((3 * RECENT_USERS,), 7))
    assert _row(knn.recent_users, 7) == [3, 2, 1]


def _reference_votes(
    knn: UserKnn, user: int, history: list[int], candidates: list[int]
) -> list[float]:
    """The documented rule, one user at a time in plain Python."""
    length = len(history)
    overlap: dict[int, float] = {}
    for position, item in enumerate(history):
        if item == 0:
            continue
        for neighbour in _row(knn.recent_users, item):
            overlap[neighbour] = overlap.get(neighbour, 0.0) + 1.0 - position / length
    present = sum(1 for item in history if item)
    similarity = {
        neighbour: value / math.sqrt(present * len(_row(knn.recent_items, neighbour)))
        for neighbour, value in overlap.items()
        if neighbour != user
    }
    votes = []
    for candidate in candidates:
        met_by = [n for n in similarity if candidate in _row(knn.recent_items, n)]
        votes.append(math.log1p(10.0 * sum(similarity[n] for n in met_by)))
    return votes


def test_votes_follow_the_documented_rule() -> None:
    knn = _random_memory(users=30, items=25, pairs=60, seed=1)
    users = torch.tensor([[3], [0], [7]])
    histories = torch.tensor([[4, 9, 4, 0, 0], [2, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
    candidates = torch.arange(0, 25).expand(3, -1)
    term = knn(users, histories, candidates)
    for row in range(3):
        expected = _reference_votes(
            knn, int(users[row]), histories[row].tolist(), candidates[row].tolist()
        )
        torch.testing.assert_close(term[row], torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert float(term[0].sum()) > 0
    assert float(term[2].abs().sum()) == 0


def test_only_the_most_similar_neighbours_vote_and_never_the_user() -> None:
    knn = UserKnn(10, 20, neighbours=1)
    # User 2 shares both history items, user 3 one of them; user 1 is the one asking.
    knn.observe(torch.tensor([2, 2, 2, 3, 3, 1]), torch.tensor([5, 6, 11, 5, 12, 13]))
    term = knn(torch.tensor([[1]]), torch.tensor([[5, 6]]), torch.tensor([[11, 12, 13]]))
    assert float(term[0, 0]) > 0  # the nearest neighbour's item
    assert float(term[0, 1]) == 0  # the second neighbour is beyond neighbours=1
    assert float(term[0, 2]) == 0  # the user's own item: never their own neighbour


def test_forgotten_rows_leave_no_trace() -> None:
    knn = _random_memory(users=12, items=10, pairs=40, seed=2)
    knn.forget("user", [3, 4])
    knn.forget("item", [5])
    assert not _row(knn.recent_items, 3)
    assert not _row(knn.recent_items, 4)
    assert not _row(knn.recent_users, 5)
    assert not torch.isin(knn.recent_users, torch.tensor([3, 4], dtype=torch.int32)).any()
    assert not (knn.recent_items == 5).any()
    counts = (knn.recent_items != 0).sum(1).to(torch.int32)
    assert torch.equal(knn.item_counts, counts)


def test_the_weight_with_the_most_hits_so_far_is_used() -> None:
    knn = UserKnn(2, 2, neighbours=1)
    assert float(knn.weight) == 0.0
    knn.record_hits(torch.tensor([1.0, 3.0, 3.0, 0.0, 0.0, 0.0]))
    assert float(knn.weight) == pytest.approx(WEIGHT_GRID[1])  # a tie: the smaller weight
    knn.record_hits(torch.tensor([0.0, 0.0, 0.0, 0.0, 5.0, 0.0]))
    assert float(knn.weight) == pytest.approx(WEIGHT_GRID[4])


@pytest.mark.parametrize("neighbours", [0, 50])
def test_sasrec_adds_the_weighted_term_and_exports_it(neighbours: int) -> None:
    config = ModelConfig(
        num_users=30, num_items=25, dim=8, history_len=5, neighbours=neighbours, views=1
    )
    torch.manual_seed(0)
    model = SelfAttentiveSequential(config).eval()
    memory = _random_memory(users=30, items=25, pairs=60, seed=3)
    if neighbours:
        model.knn.load_state_dict(memory.state_dict())
        model.knn.record_hits(torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))
    users, histories = torch.tensor([[3], [5]]), torch.tensor([[4, 9, 0, 0, 0], [2, 1, 7, 0, 0]])
    candidates = torch.arange(1, 25).expand(2, -1)
    with torch.no_grad():
        scores = model(users, histories, candidates)
        own = model.model_scores(users, histories, candidates)
        scripted = torch.jit.script(model)(users, histories, candidates)
    expected = own + 0.8 * memory(users, histories, candidates) if neighbours else own
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(scripted, scores)
    assert model.memory() is (model.knn if neighbours else None)
    assert dataclasses.asdict(config)["neighbours"] == neighbours
