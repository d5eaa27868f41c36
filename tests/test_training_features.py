"""The train step's features, each shown by its effect: EMA, accumulation, dynamic loss scale,
clipping; the optimizers and schedulers (graph mode, CPU)."""
import math

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

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
