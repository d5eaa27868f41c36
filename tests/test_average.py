"""`shufflenet average-checkpoints`: the exact mean of the weights, optimizer state dropped."""
import json

import mindspore as ms
import numpy as np
import pytest
from conftest import fill_deterministic

import shufflenet
from shufflenet.cli import average
from shufflenet.cli import main as cli_main
from shufflenet.engine.run_folder import checkpoint_path
from shufflenet.inference.loading import load_network
from shufflenet.models import META_KEY, describe, read_description
from shufflenet.utils import checkpoint
from shufflenet.utils.checkpoint_schema import AVERAGED_KEY, FORMAT_KEY

MODEL = "shufflenet_v1_g3_x0_25"
PROG = "shufflenet average-checkpoints"
OPTIMIZER_ENTRIES = ("moments.", "ema.", "accum.", "global_step", "learning_rate", "epoch")


def write_checkpoint(path, seed, model=MODEL):
    """A training checkpoint as save_epoch writes it: weights, momentum buffers, counters, plus
    an EMA copy and an accumulation buffer; returns the network's weights."""
    net = shufflenet.create_model(model, num_classes=10)
    fill_deterministic(net, seed)
    weights = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    extra = [ms.Parameter(ms.Tensor(np.full(p.shape, seed, np.float32)), name=f"{prefix}{p.name}")
             for p in net.trainable_params()[:3] for prefix in ("moments.", "ema.", "accum.")]
    extra += [ms.Parameter(ms.Tensor(np.array([seed * 10], np.int32)), name="global_step"),
              ms.Parameter(ms.Tensor(np.linspace(0.1, 0, 7).astype(np.float32)), name="learning_rate")]
    meta = {META_KEY: describe(model, 10).to_json(), "epoch": seed}
    checkpoint.save_checkpoint(list(net.get_parameters()) + extra, path, meta)
    return weights


def expected_mean(weight_sets):
    return {name: np.mean([w[name].astype(np.float64) for w in weight_sets], axis=0).astype(np.float32)
            for name in weight_sets[0]}


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{PROG}: error: ") and len(err.splitlines()) == 1, err
    return err


def test_output_is_the_exact_mean_without_optimizer_state(tmp_path, capsys):
    files = [tmp_path / f"e{i}.ckpt" for i in range(3)]
    weights = [write_checkpoint(path, seed) for seed, path in enumerate(files)]
    out = tmp_path / "avg.ckpt"
    assert cli_main.main(["average-checkpoints", *map(str, files), "--output", str(out)]) == 0
    assert "the mean of 3 checkpoint(s)" in capsys.readouterr().out

    params = checkpoint.read_checkpoint(out)
    expected = expected_mean(weights)
    assert set(params) == set(expected) | {FORMAT_KEY, META_KEY, AVERAGED_KEY}
    assert not [key for key in params if key.startswith(OPTIMIZER_ENTRIES)]
    for name, value in expected.items():
        assert params[name].asnumpy().dtype == np.float32
        np.testing.assert_array_equal(params[name].asnumpy(), value, err_msg=name)
    assert read_description(params) == describe(MODEL, 10)
    assert json.loads(params[AVERAGED_KEY]) == [path.name for path in files]  # no local paths

    fresh = shufflenet.create_model(MODEL, num_classes=10)
    assert checkpoint.load_weights(fresh, out) == []  # strict: every weight present, right shapes
    net, description = load_network(out)  # what eval, export and predict do
    assert description.model == MODEL
    np.testing.assert_array_equal(net.first_conv[1].moving_variance.asnumpy(),
                                  expected["first_conv.1.moving_variance"])


def test_last_n_of_a_run_folder_takes_the_newest(tmp_path):
    run = tmp_path / "run"
    weights = {epoch: write_checkpoint(checkpoint_path(run, epoch), epoch) for epoch in (1, 2, 3, 10)}
    out = tmp_path / "avg.ckpt"
    assert average.main(["--input-dir", str(run), "--last", "2", "--output", str(out)]) == 0
    params = checkpoint.read_checkpoint(out)
    assert json.loads(params[AVERAGED_KEY]) == ["epoch-0003.ckpt", "epoch-0010.ckpt"]
    for name, value in expected_mean([weights[3], weights[10]]).items():
        np.testing.assert_array_equal(params[name].asnumpy(), value, err_msg=name)


def test_refusals_are_one_line_and_name_the_file(tmp_path, capsys):
    a, b, other = tmp_path / "a.ckpt", tmp_path / "b.ckpt", tmp_path / "other.ckpt"
    write_checkpoint(a, 0)
    write_checkpoint(b, 1)
    write_checkpoint(other, 2, model="shufflenet_v1_g3_x0_5")
    out = tmp_path / "avg.ckpt"

    assert average.main([str(a), str(other), "--output", str(out)]) == 1
    err = one_line_error(capsys)
    assert f"{a} and {other} describe different models" in err and "shufflenet_v1_g3_x0_5" in err
    assert average.main([str(a), str(tmp_path / "missing.ckpt"), "--output", str(out)]) == 1
    assert "missing.ckpt does not exist" in one_line_error(capsys)
    (tmp_path / "bad.ckpt").write_bytes(a.read_bytes()[:2000])
    assert average.main([str(a), str(tmp_path / "bad.ckpt"), "--output", str(out)]) == 1
    assert "bad.ckpt" in one_line_error(capsys)
    assert average.main([str(a), str(b), "--output", str(a)]) == 1
    assert "is one of the checkpoints to average" in one_line_error(capsys)
    assert average.main([str(a), str(a), "--output", str(out)]) == 1
    assert "is given twice" in one_line_error(capsys)
    assert average.main(["--input-dir", str(tmp_path), "--output", str(out)]) == 1
    assert "no epoch checkpoints" in one_line_error(capsys)
    assert not out.exists()

    out.write_bytes(b"keep me")
    assert average.main([str(a), str(b), "--output", str(out)]) == 1
    assert "already exists; pass --overwrite" in one_line_error(capsys)
    assert out.read_bytes() == b"keep me"
    assert average.main([str(a), str(b), "--output", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "avg.ckpt", "b.ckpt", "bad.ckpt",
                                                          "other.ckpt"]  # no temporary left


@pytest.mark.parametrize("argv", [["--output", "x.ckpt"], ["a.ckpt", "--last", "2", "--output", "x.ckpt"],
                                  ["--input-dir", "run", "--last", "0", "--output", "x.ckpt"]])
def test_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as stop:
        average.main(argv)
    assert stop.value.code == 2
