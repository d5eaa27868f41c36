"""The train step's features, each shown by its effect: EMA, accumulation, dynamic loss scale,
clipping; the optimizers and schedulers (graph mode, CPU)."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from shufflenet.engine import train_step as train_step_module
from shufflenet.engine.optim import OPTIMIZERS, build_optimizer
from shufflenet.engine.schedule import lr_schedule
from shufflenet.engine.train_step import EMA_WARMUP, TrainStep, WithLoss, ema_parameters, swapped


def small_net(batchnorm: bool = True) -> nn.Cell:
    ms.set_seed(1)
    layers = [nn.Conv2d(3, 4, 3, has_bias=not batchnorm)]
    layers += [nn.BatchNorm2d(4)] if batchnorm else []
    return nn.SequentialCell(layers + [nn.ReLU(), nn.Flatten(), nn.Dense(4 * 8 * 8, 5)])


def batch(seed: int, size: int = 4) -> tuple[Tensor, Tensor]:
    rng = np.random.default_rng(seed)
    return (Tensor(rng.standard_normal((size, 3, 8, 8)).astype(np.float32)),
            Tensor(rng.integers(0, 5, size).astype(np.int32)))


def train_step(net: nn.Cell, lr: float = 0.1, opt: str = "momentum", momentum: float = 0.9,
               weight_decay: float = 1e-4, **kwargs) -> TrainStep:
    optimizer = build_optimizer(net, np.full(64, lr, np.float32), momentum, weight_decay, opt)
    step = TrainStep(WithLoss(net, nn.CrossEntropyLoss()), optimizer, **kwargs)
    step.set_train(True)
    return step


def values(net: nn.Cell) -> dict:
    return {p.name: p.asnumpy().copy() for p in net.get_parameters()}


def test_ema_follows_mindcvs_formula_and_swaps_in_for_evaluation():
    net = small_net()
    step = train_step(net, ema_decay=0.9)
    expected = values(net)
    for t in range(1, 5):
        step(*batch(t))
        decay = 0.9 * (1 - math.exp(-t / EMA_WARMUP))
        now = values(net)
        expected = {k: decay * v + (1 - decay) * now[k] for k, v in expected.items()}
    pairs = ema_parameters(step)
    assert len(pairs) == len(list(net.get_parameters()))  # BatchNorm statistics too
    for weight, average in pairs:
        np.testing.assert_allclose(average.asnumpy(), expected[weight.name], rtol=1e-5, atol=1e-7)
    raw, averaged = values(net), {weight.name: average.asnumpy().copy() for weight, average in pairs}
    with swapped(pairs):  # the network holds the EMA while evaluated or saved
        assert all(np.array_equal(v, averaged[k]) for k, v in values(net).items())
    assert all(np.array_equal(v, raw[k]) for k, v in values(net).items())
    assert all(np.array_equal(average.asnumpy(), averaged[w.name]) for w, average in pairs)


def test_accumulating_k_micro_batches_equals_one_step_on_their_union():
    images, labels = batch(0, size=12)
    whole = small_net(batchnorm=False)
    train_step(whole, clip_value=0.5)(images, labels)
    split = small_net(batchnorm=False)
    step = train_step(split, accumulation_steps=3, clip_value=0.5)
    before = values(split)
    for part in range(3):
        unchanged = values(split)
        assert all(np.array_equal(unchanged[k], before[k]) for k in before)  # no update mid-window
        step(images[4 * part:4 * part + 4], labels[4 * part:4 * part + 4])
    for key, value in values(whole).items():
        np.testing.assert_allclose(values(split)[key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    assert step.optimizer.global_step.asnumpy()[0] == 1
    assert all(not buffer.asnumpy().any() for buffer in step.accumulated)  # cleared for the next window


def test_dynamic_loss_scale_halves_on_overflow_and_skips_the_update():
    net = small_net()
    step = train_step(net, loss_scale=2.0**127, dynamic=True)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    images, labels = batch(0)
    step(images * 1e3, labels)  # large inputs: the scaled gradients overflow float32
    assert step.scale_sense.asnumpy() == 2.0**126
    assert all(np.array_equal(p.asnumpy(), before[p.name]) for p in net.trainable_params())
    assert step.optimizer.global_step.asnumpy()[0] == 1  # the schedule still moves on
    fine = train_step(small_net(), loss_scale=1024.0, dynamic=True)
    fine(*batch(0))
    assert fine.scale_sense.asnumpy() == 1024.0
    assert not all(np.array_equal(p.asnumpy(), before[p.name]) for p in fine.network.trainable_params())


def test_clipping_bounds_the_global_norm_of_the_update():
    net = small_net(batchnorm=False)
    step = train_step(net, lr=1.0, opt="sgd", momentum=0.0, weight_decay=0.0, clip_value=1e-3)
    before = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    step(*batch(0))
    delta = np.sqrt(sum(((p.asnumpy() - before[p.name]) ** 2).sum() for p in net.trainable_params()))
    assert delta == pytest.approx(1e-3, rel=1e-4)  # lr x clip_value


@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_every_optimizer_lowers_the_loss_and_keeps_its_state_in_the_step(opt):
    net = small_net()
    step = train_step(net, lr=0.003 if opt in ("adamw", "rmsprop") else 0.05, opt=opt)
    images, labels = batch(0, size=16)
    losses = [float(step(images, labels).asnumpy()) for _ in range(8)]
    assert losses[-1] < 0.8 * losses[0], (opt, losses)
    state = {p.name for p in step.state_parameters()}
    assert state and not state & {p.name for p in net.get_parameters()}
    assert not state & {"learning_rate", "global_step", "scale_sense"}


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    net = nn.Dense(4, 3)
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    lrs = np.array([0.1, 0.05, 0.02, 0.01], np.float32)
    optimizer = build_optimizer(net, lrs, 0.9, 0.01, "adamw")
    ours = [p.name for p in optimizer.parameters]  # decayed group first
    theirs = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
    groups = [{"params": [theirs[k] for k in ours if (start[k].ndim > 1) == decayed], "weight_decay": decay}
              for decayed, decay in ((True, 0.01), (False, 0.0))]
    reference = torch.optim.AdamW(groups, lr=0.1, eps=1e-8)
    rng = np.random.default_rng(0)
    for lr in lrs:
        grads = [rng.standard_normal(start[k].shape).astype(np.float32) for k in ours]
        optimizer(tuple(Tensor(g) for g in grads))
        for group in reference.param_groups:
            group["lr"] = float(lr)
        for key, grad in zip(ours, grads):
            theirs[key].grad = torch.tensor(grad)
        reference.step()
    for param in optimizer.parameters:
        np.testing.assert_allclose(param.asnumpy(), theirs[param.name].detach().numpy(), atol=2e-6)


def test_schedulers_against_hand_computed_values():
    steps = {"epochs": 10, "steps_per_epoch": 2}
    step = lr_schedule(1.0, 0.0, **steps, scheduler="step", decay_epochs=3, decay_rate=0.5)
    assert list(step[::2]) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
    multistep = lr_schedule(1.0, 0.0, **steps, warmup_epochs=2, scheduler="multistep", milestones=[2, 5])
    assert multistep[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])  # warm-up, then epochs count from 0
    assert list(multistep[4::2]) == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    linear = lr_schedule(0.5, 0.0, **steps, scheduler="linear")  # Megvii's: lr (1 - step / total)
    assert linear == pytest.approx([0.5 * (1 - i / 20) for i in range(20)])
    poly = lr_schedule(1.0, 0.1, **steps, scheduler="polynomial", decay_rate=2.0)
    assert poly == pytest.approx([0.1 + 0.9 * (1 - i / 20) ** 2 for i in range(20)])
    assert lr_schedule(0.3, 0.0, **steps, scheduler="constant") == pytest.approx([0.3] * 20)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        lr_schedule(1.0, 0.0, **steps, scheduler="cosine_decay")


def _run_ours(opt: str, lrs: np.ndarray, grads: list, momentum: float = 0.9, weight_decay: float = 0.01):
    """`opt` from `build_optimizer` on a Dense(4, 3), fed `grads` (one tuple per step, in the
    optimizer's parameter order: the decayed weight first); returns start and end values."""
    net = nn.Dense(4, 3)
    start = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    optimizer = build_optimizer(net, lrs, momentum, weight_decay, opt)
    names = [p.name for p in optimizer.parameters]
    for step in grads:
        optimizer(tuple(Tensor(g) for g in step))
    return names, start, {p.name: p.asnumpy() for p in optimizer.parameters}


def _random_grads(shapes: list, steps: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(shape).astype(np.float32) for shape in shapes] for _ in range(steps)]


@pytest.mark.parametrize("opt", ["momentum", "nesterov", "sgd", "rmsprop"])
def test_sgd_family_and_rmsprop_match_torch(opt):
    """Against torch.optim with the same groups (weight decay on the weight, not the bias).
    RMSProp is MindSpore's (TensorFlow's) convention, which torch takes once told: the mean
    square starts at 1 (torch: 0) and eps sits inside the root, decay 0.9; at a constant lr its
    momentum buffer (which holds lr x step in MindSpore) matches torch's, so the lr is constant."""
    torch = pytest.importorskip("torch")
    lrs = np.full(4, 0.05, np.float32) if opt == "rmsprop" else np.array([0.1, 0.05, 0.02, 0.01], np.float32)
    shapes = [(3, 4), (3,)]
    grads = _random_grads(shapes, len(lrs))
    names, start, ours = _run_ours(opt, lrs, grads)
    theirs = {k: torch.nn.Parameter(torch.tensor(start[k])) for k in names}
    groups = [{"params": [theirs[names[0]]], "weight_decay": 0.01},  # the weight; the bias is not decayed
              {"params": [theirs[names[1]]], "weight_decay": 0.0}]
    if opt == "rmsprop":
        reference = torch.optim.RMSprop(groups, lr=0.05, alpha=0.9, eps=1e-10, momentum=0.9)
        for param in theirs.values():  # MindSpore's mean square starts at ones
            reference.state[param] = {"step": torch.tensor(0.0), "square_avg": torch.ones_like(param),
                                      "momentum_buffer": torch.zeros_like(param)}
    else:
        reference = torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=opt == "nesterov")
    for lr, step in zip(lrs, grads):
        for group in reference.param_groups:
            group["lr"] = float(lr)
        for key, grad in zip(names, step):
            theirs[key].grad = torch.tensor(grad)
        reference.step()
    for key in names:
        np.testing.assert_allclose(ours[key], theirs[key].detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=key)
        assert not np.allclose(ours[key], start[key])


def test_lamb_matches_the_papers_update():
    """LAMB as You et al. (2020), "Large Batch Optimization for Deep Learning", Algorithm 2, per
    tensor, in numpy: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, bias-corrected m^ and v^,
    r = m^ / (sqrt(v^) + eps), x -= lr phi(||x||) / ||r + lam x|| (r + lam x) with phi the identity
    (a zero norm gives a ratio of 1, as their reference code)."""
    lrs = np.array([0.1, 0.05, 0.02, 0.01], np.float32)
    shapes = [(3, 4), (3,)]
    grads = _random_grads(shapes, len(lrs), seed=1)
    names, start, ours = _run_ours("lamb", lrs, grads, weight_decay=0.01)
    beta1, beta2, eps = 0.9, 0.999, 1e-6
    decays = {names[0]: 0.01, names[1]: 0.0}  # no decay on the bias
    x = {k: start[k].astype(np.float64) for k in names}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v = {k: np.zeros_like(value) for k, value in x.items()}
    for t, (lr, step) in enumerate(zip(lrs, grads), start=1):
        for key, grad in zip(names, step):
            m[key] = beta1 * m[key] + (1 - beta1) * grad
            v[key] = beta2 * v[key] + (1 - beta2) * grad.astype(np.float64) ** 2
            r = (m[key] / (1 - beta1**t)) / (np.sqrt(v[key] / (1 - beta2**t)) + eps)
            update = r + decays[key] * x[key]
            norms = np.linalg.norm(x[key]), np.linalg.norm(update)
            trust = norms[0] / norms[1] if min(norms) > 0 else 1.0
            x[key] = x[key] - float(lr) * trust * update
    for key in names:
        np.testing.assert_allclose(ours[key], x[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_dynamic_loss_scale_doubles_after_its_window_of_clean_steps(monkeypatch):
    """mindcv's x2 after 2000 clean steps, shown with the window the step reads made 3."""
    default = train_step(small_net(), loss_scale=1024.0, dynamic=True).loss_scaling_manager
    assert (int(default.scale_window.asnumpy()), float(default.scale_factor.asnumpy())) == (2000, 2.0)
    monkeypatch.setattr(train_step_module, "DYNAMIC_SCALE_WINDOW", 3)
    step = train_step(small_net(), loss_scale=1024.0, dynamic=True)
    scales = []
    for t in range(7):
        step(*batch(t))
        scales.append(float(step.scale_sense.asnumpy()))
    assert scales == [1024.0, 1024.0, 2048.0, 2048.0, 2048.0, 4096.0, 4096.0]


class _OtherRankSaysOverflow(nn.Cell):
    """The all-reduce of the non-finite count as seen by a rank whose peer had one inf."""

    def construct(self, count):
        return count + 1.0


def test_an_overflow_on_another_rank_skips_this_ranks_update_too():
    """Unit level (an msrun job cannot make one rank alone overflow on demand): the non-finite
    count is summed over ranks before the decision, so clean local gradients still skip the
    update and halve the scale when the all-reduce reports another rank's inf."""
    net = small_net()
    step = train_step(net, loss_scale=1024.0, dynamic=True)
    step.is_distributed = True  # only the overflow check reads it here: the reducer is fixed at build
    step.allreduce = _OtherRankSaysOverflow()
    before = values(net)
    step(*batch(0))
    assert float(step.scale_sense.asnumpy()) == 512.0
    assert all(np.array_equal(value, before[name]) for name, value in values(net).items()
               if not name.endswith(("moving_mean", "moving_variance")))
