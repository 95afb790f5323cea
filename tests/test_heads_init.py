"""Initialisation (every block drawn on its own) and the task heads' arithmetic, on hand-made states."""
import torch

from gpt1_fast.config import GPTConfig
from gpt1_fast.model import DoubleHeadModel, SimilarityHead, TransformerModel

CLF = 7


def cfg(**kw):
    return GPTConfig(**dict(dict(n_embd=32, n_head=4, n_layer=3, backend="torch"), **kw))


# ------------------------------------------------------------------------------------ initialisation
def test_every_block_is_drawn_independently_from_n_0_002():
    torch.manual_seed(0)
    m = TransformerModel(cfg(n_layer=4, n_embd=64), vocab=50, n_ctx=8)
    blocks = [dict(b.named_parameters()) for b in m.h]
    for name in blocks[0]:
        for i in range(1, len(blocks)):
            if name.endswith(".w"):
                assert not torch.equal(blocks[0][name], blocks[i][name]), (name, i)  # not a copy of block 0
    ws = torch.cat([b[n].flatten() for b in blocks for n in b if n.endswith(".w")])
    assert abs(ws.mean().item()) < 1e-3 and abs(ws.std().item() - 0.02) < 5e-4
    for b in blocks:
        for n, p in b.items():
            if n.endswith(".b") and not n.startswith(("ln_1", "ln_2")):
                assert torch.count_nonzero(p) == 0, n  # biases 0
        assert torch.equal(b["ln_1.g"], torch.ones(64)) and torch.equal(b["ln_2.b"], torch.zeros(64))


def test_a_seed_reproduces_the_model_and_another_seed_does_not():
    def build(seed):
        torch.manual_seed(seed)
        return DoubleHeadModel(cfg(), CLF, "multiple_choice", vocab=50, n_ctx=8).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["transformer.h.2.mlp.c_fc.w"], c["transformer.h.2.mlp.c_fc.w"])


# ------------------------------------------------------------------------------------------- heads
def _pair_input(B, T, pos):
    """x [B, 2, T, 2] with the classify token at pos[b][order] of each of the two orderings."""
    x = torch.zeros(B, 2, T, 2, dtype=torch.long)
    for b in range(B):
        for o in range(2):
            x[b, o, pos[b][o], 0] = CLF
    return x


def test_similarity_head_adds_the_two_orderings_states_then_applies_the_linear_layer():
    torch.manual_seed(0)
    B, T, C = 3, 6, 32
    pos = [[2, 4], [5, 1], [3, 3]]
    h = torch.randn(B * 2, T, C)  # the two orders' states differ
    x = _pair_input(B, T, pos)
    for n_class in (1, 6):
        head = SimilarityHead(CLF, cfg(), n_class).eval()
        with torch.no_grad():
            head.linear.weight.normal_()
            head.linear.bias.normal_()
        s = torch.stack([h[2 * b, pos[b][0]] + h[2 * b + 1, pos[b][1]] for b in range(B)])
        want = s @ head.linear.weight.T + head.linear.bias
        got = head(h, x)
        torch.testing.assert_close(got, want.view(-1) if n_class == 1 else want)


def test_soft_label_head_is_six_way_and_trained_against_the_encoded_scores():
    torch.manual_seed(0)
    m = DoubleHeadModel(cfg(), CLF, ("similarity_soft_labels", 6), vocab=50, n_ctx=8).eval()
    assert m.task_head.linear.out_features == 6 and not m.regression
    logits = torch.randn(4, 6)
    y = torch.tensor([0.0, 2.5, 4.2, 5.0])
    target = torch.zeros(4, 6)
    target[0, 0] = 1
    target[1, 2] = target[1, 3] = 0.5
    target[2, 4], target[2, 5] = 0.8, 0.2
    target[3, 5] = 1
    want = -(target * torch.log_softmax(logits, -1)).sum(-1)
    torch.testing.assert_close(m.task_loss(logits, y), want)
    reg = DoubleHeadModel(cfg(), CLF, "similarity", vocab=50, n_ctx=8)  # the Regressor's head stays
    assert reg.regression and reg.task_head.linear.out_features == 1
    torch.testing.assert_close(reg.task_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 4.0])),
                               torch.tensor([0.25, 4.0]))
