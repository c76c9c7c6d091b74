"""Tests for siamkit.siamese: shared weights, scoring, and the learned head."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.testing import assert_close

from siamkit.distances import CosineSimilarity, Distance, EuclideanDistance
from siamkit.encoders import create_encoder
from siamkit.siamese import LearnedHead, SiameseNetwork


def _linear_encoder(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _inputs(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 3, generator=g, dtype=torch.float64),
        torch.randn(n, 3, generator=g, dtype=torch.float64),
    )


# --- shared weights ------------------------------------------------------------------------


def test_model_has_exactly_the_encoder_parameters() -> None:
    """One encoder, not two copies: the parameter objects are the encoder's own."""
    enc = _linear_encoder()
    net = SiameseNetwork(enc)
    assert net.encoder is enc
    assert [id(p) for p in net.parameters()] == [id(p) for p in enc.parameters()]


def test_model_with_head_has_encoder_plus_head_parameters() -> None:
    enc, head = _linear_encoder(), LearnedHead(2).double()
    net = SiameseNetwork(enc, head=head)
    expected = {id(p) for p in enc.parameters()} | {id(p) for p in head.parameters()}
    assert {id(p) for p in net.parameters()} == expected
    assert len(list(net.parameters())) == len(expected)


@pytest.mark.parametrize("use_head", [False, True])
def test_gradients_from_both_inputs_land_on_the_one_encoder(use_head: bool) -> None:
    """The shared encoder's gradient is the sum of what two untied twins would each receive."""
    enc = _linear_encoder()
    head = LearnedHead(2).double() if use_head else None
    net = SiameseNetwork(enc, head=head)
    x1, x2 = _inputs()
    net(x1, x2).sum().backward()

    # Untied twins with identical starting weights, one per input.
    twin1, twin2 = copy.deepcopy(enc), copy.deepcopy(enc)
    for p in [*twin1.parameters(), *twin2.parameters()]:
        p.grad = None
    head2 = copy.deepcopy(head)
    if head2 is not None:
        head2.zero_grad()
    e1, e2 = twin1(x1), twin2(x2)
    score = head2(e1, e2) if head2 is not None else EuclideanDistance().paired(e1, e2)
    score.sum().backward()

    for shared, a, b in zip(enc.parameters(), twin1.parameters(), twin2.parameters(), strict=True):
        assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0  # both branches contribute
        assert_close(shared.grad, a.grad + b.grad)


def test_gradient_from_each_input_alone_reaches_encoder() -> None:
    """Freezing one input's embedding still leaves gradient from the other on the same weights."""
    enc = _linear_encoder()
    net = SiameseNetwork(enc)
    x1, x2 = _inputs()
    target = enc(x2).detach()
    net.distance.paired(net.embed(x1), target).sum().backward()
    g1 = [p.grad.clone() for p in enc.parameters()]
    assert all(g.abs().sum() > 0 for g in g1)
    net.zero_grad()
    net.distance.paired(enc(x1).detach(), net.embed(x2)).sum().backward()
    assert all(p.grad.abs().sum() > 0 for p in enc.parameters())


# --- scoring -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "distance",
    [EuclideanDistance(), EuclideanDistance(squared=True), CosineSimilarity()],
    ids=repr,
)
def test_forward_equals_score_of_embeddings_in_eval(distance: Distance) -> None:
    """With BatchNorm in eval mode, scoring the concatenated batch = scoring each half alone."""
    torch.manual_seed(0)
    enc = create_encoder("conv4", width=4, depth=2, input_size=8)
    net = SiameseNetwork(enc, distance=distance).eval()
    x1, x2 = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        out = net(x1, x2)
        assert out.shape == (3,)
        assert_close(out, net.score_embeddings(net.embed(x1), net.embed(x2)))
        assert_close(out, distance.paired(enc(x1), enc(x2)))


def test_forward_with_head_equals_sigmoid_of_logits_in_eval() -> None:
    torch.manual_seed(0)
    enc = create_encoder("mlp", in_features=3, hidden=(5,), embedding_dim=2)
    net = SiameseNetwork(enc, head=LearnedHead(2)).eval()
    x1, x2 = torch.randn(4, 3), torch.randn(4, 3)
    with torch.no_grad():
        e1, e2 = net.embed(x1), net.embed(x2)
        assert_close(net(x1, x2), net.score_embeddings(e1, e2))
        assert_close(net(x1, x2), torch.sigmoid(net.head.logits(e1, e2)))


def test_forward_runs_encoder_once_on_both_halves() -> None:
    """In training, BatchNorm sees x1 and x2 as one batch: one update of its running stats."""
    torch.manual_seed(0)
    enc = create_encoder("mlp", in_features=3, hidden=(5,), embedding_dim=2, dropout=0.0)
    net = SiameseNetwork(enc).train()
    bn = next(m for m in enc.modules() if isinstance(m, nn.BatchNorm1d))
    out = net(torch.randn(4, 3), torch.randn(4, 3))
    assert out.shape == (4,)
    assert int(bn.num_batches_tracked) == 1


def test_higher_is_closer_follows_distance_or_head() -> None:
    enc = _linear_encoder()
    assert SiameseNetwork(enc).higher_is_closer is False
    assert SiameseNetwork(enc, distance=CosineSimilarity()).higher_is_closer is True
    head = LearnedHead(2)
    assert SiameseNetwork(enc, distance=EuclideanDistance(), head=head).higher_is_closer is True
    assert isinstance(SiameseNetwork(enc).distance, EuclideanDistance)


@pytest.mark.parametrize("use_head", [False, True])
def test_pairwise_scores_match_scores_of_every_pair(use_head: bool) -> None:
    net = SiameseNetwork(_linear_encoder(), head=LearnedHead(2).double() if use_head else None)
    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 2, generator=g, dtype=torch.float64)
    r = torch.randn(5, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        full = net.pairwise_scores(q, r)
        assert full.shape == (3, 5)
        for i in range(3):
            assert_close(full[i], net.score_embeddings(q[i].expand(5, 2), r))


# --- LearnedHead ---------------------------------------------------------------------------


def _head() -> LearnedHead:
    """w = (1, -2), b = 0.5: logit = |dx| - 2 |dy| + 0.5."""
    head = LearnedHead(2).double()
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[1.0, -2.0]]))
        head.linear.bias.fill_(0.5)
    return head


def test_learned_head_known_values() -> None:
    """w.|e1 - e2| + b for |(1,0) - (0,0)| = (1,0) -> 1.5; |(0,0) - (0,1)| = (0,1) -> -1.5;
    |(3,1) - (1,2)| = (2,1) -> 0.5."""
    head = _head()
    e1 = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    e2 = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    expected = torch.tensor([1.5, -1.5, 0.5], dtype=torch.float64)
    assert_close(head.logits(e1, e2), expected)
    assert_close(
        head(e1, e2),
        torch.tensor([1 / (1 + math.exp(-v)) for v in expected.tolist()], dtype=torch.float64),
    )
    assert_close(head.logits(e1, e2), head.logits(e2, e1))  # |e1 - e2| is symmetric
    assert LearnedHead.higher_is_closer is True


@pytest.mark.parametrize("chunk", [1, 2, 256])
def test_pairwise_logits_equal_logits_on_all_pairs(chunk: int) -> None:
    """(Q, R) logits, including when Q is not a multiple of the chunk size."""
    torch.manual_seed(0)
    head = LearnedHead(4).double()
    g = torch.Generator().manual_seed(3)
    q = torch.randn(5, 4, generator=g, dtype=torch.float64)
    r = torch.randn(3, 4, generator=g, dtype=torch.float64)
    full = head.pairwise_logits(q, r, chunk=chunk)
    assert full.shape == (5, 3)
    expected = torch.stack([head.logits(q[i].expand(3, 4), r) for i in range(5)])
    assert_close(full, expected)


def test_pairwise_logits_no_queries() -> None:
    head = LearnedHead(4)
    assert head.pairwise_logits(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)


def test_sbert_head_is_symmetric_and_pairwise_matches_paired():
    from siamkit.siamese import LearnedHead

    torch.manual_seed(0)
    for hidden in (0, 8):
        head = LearnedHead(5, features="sbert", hidden=hidden)
        u, v = torch.randn(6, 5), torch.randn(6, 5)
        torch.testing.assert_close(head.logits(u, v), head.logits(v, u))
        full = head.pairwise_logits(u, v, chunk=4)
        assert full.shape == (6, 6)
        for i in range(6):
            torch.testing.assert_close(full[i], head.logits(u[i].expand(6, 5), v))
        assert ((head(u, v) > 0) & (head(u, v) < 1)).all()


def test_sbert_head_features_hand_computed():
    from siamkit.siamese import LearnedHead

    head = LearnedHead(1, features="sbert")
    with torch.no_grad():  # weights on [u, v, |u - v|, u * v]
        head.mlp.weight.copy_(torch.tensor([[1.0, 0.0, -2.0, 3.0]]))
        head.mlp.bias.fill_(0.5)
    u, v = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    # order (u, v): 2 - 2*3 + 3*(-2) + 0.5 = -9.5; order (v, u): -1 - 6 - 6 + 0.5 = -12.5
    assert float(head.logits(u, v)) == pytest.approx(-11.0)
    with pytest.raises(ValueError, match="abs' or 'sbert"):
        LearnedHead(3, features="cat")


def test_config_builds_the_sbert_head():
    from siamkit.builders import build_model
    from siamkit.config import Config, ConfigError, check_config

    c = Config()
    c.model.head, c.model.head_features, c.model.head_hidden = True, "sbert", 16
    c.loss.name = "bce"
    c.optim.sampler = "pairs"
    check_config(c)
    model = build_model(c.model, 1, 28)
    assert model.head.features == "sbert" and model.higher_is_closer
    c.model.head_features = "concat"
    with pytest.raises(ConfigError, match="head_features"):
        check_config(c)
