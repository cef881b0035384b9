"""End to end: the same model trained in rnnfast and in PyTorch from identical weights
on identical data gives the same losses step by step (float64).

Model: a 2-layer LSTM and a Linear head; Adam with gradient clipping. The loop is the
one a user writes: zero_grad, forward, loss, backward through the head and the LSTM,
clip, step.
"""

import os

import numpy as np
import pytest

import rnnfast

if os.environ.get("RNNFAST_REQUIRE_TORCH") == "1":
    import torch
else:
    torch = pytest.importorskip("torch")

T, B, D, H, C = 12, 4, 3, 8, 5
STEPS = 20
MAX_NORM = 0.5


def make_models():
    lstm = rnnfast.LSTM(D, H, num_layers=2, dtype=np.float64, seed=0)
    head = rnnfast.Linear(H, C, dtype=np.float64, seed=1)
    torch_lstm = torch.nn.LSTM(D, H, num_layers=2).double()
    torch_head = torch.nn.Linear(H, C).double()
    torch_lstm.load_state_dict({k: torch.from_numpy(v) for k, v in lstm.state_dict().items()})
    torch_head.load_state_dict({k: torch.from_numpy(v) for k, v in head.state_dict().items()})
    return lstm, head, torch_lstm, torch_head


def test_lstm_classifier_trains_like_torch():
    """Cross-entropy per time step, with some targets ignored; Adam + clip_grad_norm."""
    lstm, head, torch_lstm, torch_head = make_models()
    optimizer = rnnfast.Adam([lstm, head], lr=1e-2)
    torch_params = list(torch_lstm.parameters()) + list(torch_head.parameters())
    torch_optimizer = torch.optim.Adam(torch_params, lr=1e-2)
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        x = rng.standard_normal((T, B, D))
        targets = rng.integers(0, C, (T, B))
        targets[8:, 1] = -100                      # a shorter sequence: ignored steps

        optimizer.zero_grad()
        y, _ = lstm(x)
        loss, dlogits = rnnfast.cross_entropy(head(y), targets)
        lstm.backward(head.backward(dlogits))
        norm = rnnfast.clip_grad_norm([lstm, head], MAX_NORM)
        optimizer.step()

        torch_optimizer.zero_grad()
        logits = torch_head(torch_lstm(torch.from_numpy(x))[0])
        torch_loss = torch.nn.functional.cross_entropy(logits.reshape(-1, C),
                                                       torch.from_numpy(targets).reshape(-1))
        torch_loss.backward()
        torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, MAX_NORM)
        torch_optimizer.step()

        assert loss == pytest.approx(torch_loss.item(), rel=1e-6), f"loss at step {step}"
        assert norm == pytest.approx(torch_norm.item(), rel=1e-6), f"norm at step {step}"


def test_truncated_bptt_matches_detached_torch_state():
    """Regression over one long sequence in chunks: the state is carried from chunk to
    chunk (``y, state = lstm(chunk, state)``) and no gradient crosses a boundary, as
    with ``state.detach()`` in torch."""
    lstm, head, torch_lstm, torch_head = make_models()
    head = rnnfast.Linear(H, 1, dtype=np.float64, seed=1)
    torch_head = torch.nn.Linear(H, 1).double()
    torch_head.load_state_dict({k: torch.from_numpy(v) for k, v in head.state_dict().items()})
    optimizer = rnnfast.SGD([lstm, head], lr=0.1, momentum=0.9)
    torch_optimizer = torch.optim.SGD(list(torch_lstm.parameters())
                                      + list(torch_head.parameters()), lr=0.1, momentum=0.9)
    series = np.sin(np.linspace(0, 12, 6 * T + 1))
    inputs = np.broadcast_to(series[:-1, None, None], (6 * T, B, D)).copy()
    targets = series[1:, None, None] * np.ones((1, B, 1))
    state, torch_state = None, None
    for chunk in range(6):
        window = slice(chunk * T, (chunk + 1) * T)
        optimizer.zero_grad()
        y, state = lstm(inputs[window], state)    # carries the state, not its gradient
        loss, dpred = rnnfast.mse_loss(head(y), targets[window])
        lstm.backward(head.backward(dpred))
        optimizer.step()

        torch_optimizer.zero_grad()
        torch_y, torch_state = torch_lstm(torch.from_numpy(inputs[window]), torch_state)
        torch_state = tuple(s.detach() for s in torch_state)
        torch_loss = torch.nn.functional.mse_loss(torch_head(torch_y),
                                                  torch.from_numpy(targets[window]))
        torch_loss.backward()
        torch_optimizer.step()
        assert loss == pytest.approx(torch_loss.item(), rel=1e-6), f"loss at chunk {chunk}"
