import pytest
import torch
from torch import nn

from freshrank.model import ModelConfig
from freshrank.model.learner import LearnerConfig, OnlineLearner, synthetic_batches
from freshrank.model.sparse_optim import RowWiseAdagrad


def _table() -> nn.Embedding:
    table = nn.Embedding(6, 4, sparse=True)
    with torch.no_grad():
        table.weight.copy_(torch.arange(24, dtype=torch.float32).view(6, 4) / 10)
    return table


def _step(table: nn.Embedding, optimizer: torch.optim.Optimizer, rows: list[int]) -> None:
    optimizer.zero_grad(set_to_none=True)
    table(torch.tensor(rows)).sum().backward()
    optimizer.step()


def test_only_the_rows_in_the_batch_move_in_value_and_in_state() -> None:
    table = _table()
    before = table.weight.detach().clone()
    optimizer = RowWiseAdagrad(table.parameters(), lr=0.1)
    _step(table, optimizer, [1, 3, 3])
    moved = (table.weight.detach() != before).any(dim=1)
    assert moved.tolist() == [False, True, False, True, False, False]
    accumulated = optimizer.state[table.weight]["sum"]
    assert accumulated[[0, 2, 4, 5]].eq(0).all()
    # Row 3 was looked up twice: gradient 2 per coordinate, so sum 4 and a step of lr.
    assert accumulated[3] == pytest.approx(4.0)
    assert torch.allclose(table.weight[3].detach(), before[3] - 0.1)


def test_a_row_steps_by_its_own_evidence_not_the_global_step_count() -> None:
    table = _table()
    optimizer = RowWiseAdagrad(table.parameters(), lr=0.1)
    for _ in range(50):
        _step(table, optimizer, [1])  # a frequent row: its steps shrink as 1/sqrt(n)
    rare_before = table.weight[2].detach().clone()
    frequent_before = table.weight[1].detach().clone()
    _step(table, optimizer, [1, 2])
    rare_step = float((rare_before - table.weight[2].detach()).abs().max())
    frequent_step = float((frequent_before - table.weight[1].detach()).abs().max())
    assert rare_step == pytest.approx(0.1)  # a first look-up steps by the full rate
    assert frequent_step == pytest.approx(0.1 / 51**0.5)


def test_dense_gradients_are_refused() -> None:
    table = nn.Embedding(4, 2)
    optimizer = RowWiseAdagrad(table.parameters())
    table(torch.tensor([1])).sum().backward()
    with pytest.raises(ValueError, match="sparse"):
        optimizer.step()


def test_the_learner_resets_an_evicted_rows_accumulator() -> None:
    model = ModelConfig(architecture="sasrec", num_users=60, num_items=240, dim=8, history_len=5)
    config = LearnerConfig(
        model=model, negatives=20, full_eval_events=4, sparse_optimizer="rowwise-adagrad"
    )
    learner = OnlineLearner(config)
    assert isinstance(learner.sparse_optimizer, RowWiseAdagrad)
    stream = synthetic_batches(32, users=100, items=400, topics=40, events=1_920, seed=11)
    for batch in stream:
        learner.step(batch)
    assert learner.id_stats()["item_evictions"] > 0
    items = learner.model.item_embedding
    assert isinstance(items, nn.Embedding)
    accumulated = learner.sparse_optimizer.state[items.weight]["sum"]
    learner.forget_rows([], [5, 7])
    assert accumulated[[5, 7]].eq(0).all()


def test_an_unknown_sparse_optimizer_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="sparse_optimizer"):
        LearnerConfig(sparse_optimizer="sgd")


def test_a_sparse_adam_checkpoint_resumes_with_fresh_adagrad_rows() -> None:
    model = ModelConfig(architecture="sasrec", num_users=60, num_items=240, dim=8, history_len=5)
    batches = list(synthetic_batches(32, users=50, items=200, topics=20, events=320, seed=11))
    adam = OnlineLearner(LearnerConfig(model=model, negatives=20, sparse_optimizer="adam"))
    for batch in batches[:5]:
        adam.step(batch)
    adagrad = OnlineLearner(
        LearnerConfig(model=model, negatives=20, sparse_optimizer="rowwise-adagrad")
    )
    adagrad.load_state_dict(adam.state_dict())
    for name, tensor in adam.model.state_dict().items():
        assert torch.equal(adagrad.model.state_dict()[name], tensor), name
    assert not adagrad.sparse_optimizer.state  # no Adam moments read as accumulators
    for batch in batches[5:]:
        assert adagrad.step(batch).loss > 0
