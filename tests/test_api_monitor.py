"""The edge monitor against the engine's tracker, a dense float64 Hessian, the edge formulas, and bad input."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from samedge_lib.api import SAM, EdgeMonitor, check_edge
from samedge_lib.core.hessian import dense_hessian
from samedge_lib.engine.losses import get_loss
from samedge_lib.engine.train import _Runner
from samedge_lib.reading import claims as cl
from samedge_lib.reading.edge_log import EDGE_CLAIMS, EdgeLog, plot_edge_log, read_edge_log
from samedge_lib.record.config import preset_config
from samedge_lib.theory import edges

F64 = torch.float64


# ---------------------------------------------------------------------------------------------------------- engine
@pytest.mark.parametrize(("task", "n_train"), [("mnist", 64), ("cifar10", 32)])
def test_monitor_equals_the_engines_tracker_at_the_same_weights(task, n_train, tmp_path):
    """Three steps of SAM with momentum through the engine, then its tracker and the monitor at those weights."""
    cfg = preset_config(task, "smoke", rho=0.1, momentum=0.5, dtype="float64", n_train=n_train, n_test=32, k=2,
                        lanczos_tol=1e-9, lanczos_max_iter=150)  # fmt: skip
    runner = _Runner(cfg, tmp_path / "run", None, progress=False)
    for s in range(3):
        runner.params, runner.velocity, _ = runner.update(s)
    (row,), _ = runner.measure(3)
    model = runner.task.model
    with torch.no_grad():
        for p, q in zip(model.parameters(), runner.params, strict=True):
            p.copy_(q)
    opt = SAM(model.parameters(), torch.optim.SGD, rho=cfg.rho, lr=cfg.eta, momentum=cfg.momentum)
    batch = runner.task.batch_at(3)
    check = EdgeMonitor(opt, k=2, tol=1e-9, max_iter=150, verbose=False)(
        model, get_loss(cfg.loss), (batch.x, batch.y), step=3
    )
    for name, mine in (("lambda_1", check.lambda_1), ("grad_norm", check.grad_norm), ("edge", check.edge)):
        assert mine == pytest.approx(row[name], rel=1e-6), name
    assert check.residuals[0] < 1e-6


# ---------------------------------------------------------------------------------------------------------- dense
def _tiny(seed: int = 0, n: int = 24):
    gen = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).to(F64)
    x = torch.randn(n, 5, generator=gen, dtype=F64)
    y = torch.randn(n, 3, generator=gen, dtype=F64)
    return model, x, y, nn.MSELoss()


def _dense_eigs(model, loss_fn, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]

    def f(ps):
        return loss_fn(torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y)

    return torch.linalg.eigvalsh(dense_hessian(f, list(model.parameters()))).flip(0)


def test_monitor_equals_a_dense_hessian_in_float64():
    model, x, y, loss_fn = _tiny()
    want = _dense_eigs(model, loss_fn, x, y)
    check = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1}, k=3, tol=1e-12, max_iter=200)
    for mine, ref in zip(check.eigenvalues, want[:3], strict=True):
        assert abs(mine - float(ref)) <= 1e-10 * abs(float(ref))
    assert max(check.residuals) < 1e-9


def test_chunks_and_a_dataloader_give_the_full_batchs_numbers():
    model, x, y, loss_fn = _tiny(n=30)
    whole = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1}, k=2, tol=1e-12, max_iter=100)
    chunked = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1}, k=2, tol=1e-12, max_iter=100, chunk_size=7)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=10)
    loaded = check_edge(model, loss_fn, loader, rule={"eta": 0.1}, k=2, tol=1e-12, max_iter=100)
    for other in (chunked, loaded):
        assert other.lambda_1 == pytest.approx(whole.lambda_1, rel=1e-10)
        assert other.grad_norm == pytest.approx(whole.grad_norm, rel=1e-10)
        assert other.n_examples == 30
    assert loaded.data == "3 batches"


# ---------------------------------------------------------------------------------------------------------- edges
@pytest.mark.parametrize(
    ("make", "edge"),
    [
        (lambda ps: torch.optim.SGD(ps, lr=0.1), lambda g: edges.gd_edge(0.1)),
        (
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
            lambda g: edges.momentum_sam_edge(grad_norm=g, eta=0.1, rho=0.0, beta=0.9),
        ),
        (
            lambda ps: SAM(ps, torch.optim.SGD, rho=0.05, lr=0.1),
            lambda g: edges.sam_edge(grad_norm=g, eta=0.1, rho=0.05),
        ),
        (
            lambda ps: SAM(ps, torch.optim.SGD, rho=0.05, lr=0.1, momentum=0.8, nesterov=True),
            lambda g: edges.momentum_sam_edge(grad_norm=g, eta=0.1, rho=0.05, beta=0.8, nesterov=True),
        ),
        (
            lambda ps: SAM(ps, torch.optim.SGD, rho=0.3, lr=0.1, normalized=False),
            lambda g: edges.usam_edge(eta=0.1, r=0.3),
        ),
    ],
    ids=["gd", "heavy-ball", "sam", "sam-nesterov", "usam"],
)
def test_the_edge_is_the_optimizers(make, edge):
    model, x, y, loss_fn = _tiny()
    check = check_edge(model, loss_fn, (x, y), make(model.parameters()), k=1)
    assert check.edge == pytest.approx(float(edge(check.grad_norm)), rel=1e-15)
    assert check.ratio == pytest.approx(check.lambda_1 / check.edge, rel=1e-15)


def test_adam_reports_the_preconditioned_sharpness_against_its_threshold():
    model, x, y, loss_fn = _tiny()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.9, 0.999))
    before = check_edge(model, loss_fn, (x, y), opt)
    assert math.isnan(before.edge) and "no step yet" in before.note
    for _ in range(5):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    check = check_edge(model, loss_fn, (x, y), opt, tol=1e-12, max_iter=200)
    assert check.edge == pytest.approx(float(edges.adaptive_edge(1e-2, 0.9)), rel=1e-15)
    assert check.edge == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * 1e-2), rel=1e-15)
    st = [opt.state[p] for p in model.parameters()]
    t = float(st[0]["step"])
    p_diag = torch.cat([((1 - 0.9**t) * ((s["exp_avg_sq"] / (1 - 0.999**t)).sqrt() + 1e-8)).reshape(-1) for s in st])
    names = [n for n, _ in model.named_parameters()]
    h = dense_hessian(
        lambda ps: loss_fn(torch.func.functional_call(model, dict(zip(names, ps, strict=True)), (x,)), y),
        list(model.parameters()),
    )
    want = torch.linalg.eigvals(torch.diag(1 / p_diag) @ h).real.max()
    assert check.preconditioned_lambda_1 == pytest.approx(float(want), rel=1e-9)
    assert check.sharpness == check.preconditioned_lambda_1 and "no closed-form edge" in check.edge_kind


# ---------------------------------------------------------------------------------------------------------- modes
class _BNNet(nn.Module):
    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.lin, self.bn, self.drop, self.out = (
            nn.Linear(5, 6),
            nn.BatchNorm1d(6),
            nn.Dropout(dropout),
            nn.Linear(6, 3),
        )

    def forward(self, x):
        return self.out(self.drop(torch.tanh(self.bn(self.lin(x)))))


def test_batchnorm_train_and_eval_modes_are_stated_and_running_stats_untouched():
    _, x, y, loss_fn = _tiny()
    model = _BNNet().to(F64)
    stats = [b.clone() for b in model.buffers()]
    train = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1})
    assert train.mode.startswith("train") and "each batch's statistics" in train.mode
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers(), strict=True))
    model.eval()
    ev = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1})
    assert ev.mode.startswith("eval") and not model.training
    assert abs(ev.lambda_1 - train.lambda_1) > 1e-6 * train.lambda_1
    forced = check_edge(model, loss_fn, (x, y), rule={"eta": 0.1}, mode="train")
    assert forced.lambda_1 == pytest.approx(train.lambda_1, rel=1e-6) and not model.training


def test_dropout_in_train_mode_is_refused_in_one_line_and_eval_works():
    _, x, y, loss_fn = _tiny()
    model = _BNNet(dropout=0.2).to(F64)
    with pytest.raises(ValueError, match="dropout") as info:
        check_edge(model, loss_fn, (x, y), rule={"eta": 0.1})
    assert "\n" not in str(info.value)
    assert check_edge(model, loss_fn, (x, y), rule={"eta": 0.1}, mode="eval").mode.startswith("eval")


def test_a_random_forward_pass_is_refused():
    _, x, y, loss_fn = _tiny()

    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 3).to(F64)

        def forward(self, x):
            return self.lin(x) + 0.1 * torch.randn(x.shape[0], 3, dtype=F64)

    with pytest.raises(ValueError, match="differs between two evaluations"):
        check_edge(Noisy(), loss_fn, (x, y), rule={"eta": 0.1})


# ---------------------------------------------------------------------------------------------------------- bad input
def _one_line(error, words, call):
    with pytest.raises(error, match=words) as info:
        call()
    assert "\n" not in str(info.value)


def test_bad_input_gets_one_clear_line_before_any_compute(monkeypatch):
    model, x, y, loss_fn = _tiny()
    from samedge_lib.api import monitor as mon

    def no_lanczos(*a, **k):
        raise AssertionError("Lanczos ran on bad input")

    monkeypatch.setattr(mon, "lanczos", no_lanczos)
    eta = {"eta": 0.1}
    _one_line(ValueError, "no trainable parameters", lambda: check_edge(nn.ReLU(), loss_fn, (x, y), rule=eta))
    _one_line(ValueError, "scalar", lambda: check_edge(model, nn.MSELoss(reduction="none"), (x, y), rule=eta))
    _one_line(ValueError, "eta must be a finite", lambda: check_edge(model, loss_fn, (x, y), rule={"eta": math.nan}))
    _one_line(ValueError, "rho must be a finite",
              lambda: check_edge(model, loss_fn, (x, y), rule={"eta": 0.1, "rho": math.inf}))  # fmt: skip
    _one_line(ValueError, "rho must be a finite", lambda: SAM(model.parameters(), rho=math.nan, lr=0.1))
    _one_line(ValueError, "are on meta but the model's parameters on cpu",
              lambda: check_edge(model, loss_fn, (x.to("meta"), y), rule=eta))  # fmt: skip
    _one_line(TypeError, "data must be a batch", lambda: check_edge(model, loss_fn, x, rule=eta))
    _one_line(ValueError, "give the optimizer", lambda: check_edge(model, loss_fn, (x, y)))


# ---------------------------------------------------------------------------------------------------------- logging
def test_hook_form_logs_a_tidy_csv_tensorboard_and_a_plot(tmp_path: Path, monkeypatch):
    scalars = []

    class Writer:
        def __init__(self, folder):
            self.folder = folder

        def add_scalar(self, tag, value, step):
            scalars.append((tag, value, step))

        def flush(self):
            pass

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = Writer
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    model, x, y, loss_fn = _tiny()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=0.05, lr=0.1)
    monitor = EdgeMonitor(opt, k=2, log_dir=tmp_path, verbose=False)
    handle = monitor.attach(model, loss_fn, (x, y), every=3)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    for _ in range(7):
        opt.step(closure)
    handle.remove()
    opt.step(closure)
    assert [c.step for c in monitor.history] == [0, 3, 6]
    table = read_edge_log(tmp_path)
    assert list(table["step"]) == [0, 3, 6]
    assert {"lambda_1", "lambda_2", "residual_1", "grad_norm", "edge", "ratio", "cost_in_steps"} <= set(table)
    assert table["step_seconds"].iloc[-1] > 0 and (tmp_path / "edge_monitor.json").exists()
    assert ("edge/lambda_1", monitor.history[1].lambda_1, 3) in scalars
    ax = plot_edge_log(tmp_path)
    assert ax.get_xlabel() == "step"
    ev = cl.evaluate([EdgeLog("t", "test", table)], EDGE_CLAIMS)
    assert set(ev["verdict"]) <= set(cl.Verdict)
