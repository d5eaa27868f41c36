"""Data parallelism through scripts/run_distribute_train.sh: real msrun workers on CPU."""
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest
from conftest import REPO, make_image_folder
from mindspore import nn

import shufflenet
from shufflenet.data import PipelineSpec, create_dataset, open_source
from shufflenet.engine.optim import build_optimizer
from shufflenet.engine.schedule import lr_schedule
from shufflenet.kernels import use_cpu_kernels
from shufflenet.utils.checkpoint import read_checkpoint

SCRIPTS = REPO / "scripts"
MODEL, BATCH, EPOCHS, LR, SEED = "shufflenet_v1_g3_x0_25", 6, 2, 0.01, 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(data, out, logs, epochs=EPOCHS, extra=(), devices=2, options=None, prefix=(),
           stdout=subprocess.PIPE):
    """`devices` ranks on this node; `options` replace the default free port and 60 s time-out;
    `prefix` runs the script under another command (`ip netns exec NS`)."""
    options = ["--master_port", str(free_port()), "--timeout", "60"] if options is None else options
    command = [*prefix, "bash", str(SCRIPTS / "run_distribute_train.sh"), "--log_dir", str(logs),
               *options, str(devices), str(data), "digits_cpu",
               "--", "--model", MODEL, "--image-size", "32", "--batch-size", str(BATCH),
               "--epochs", str(epochs), "--lr", str(LR), "--warmup-epochs", "0", "--num-workers", "1",
               "--no-augment", "--no-export", "--output-dir", str(out), *extra]
    return subprocess.Popen(command, stdout=stdout, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data"), train=30, val=7)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """12 training images: one step of 2 x 6 per epoch. Longer runs would compare chaos: at
    this size the first layers' updates amplify float rounding (all-reduce order) step by step."""
    return make_image_folder(tmp_path_factory.mktemp("small"), train=4, val=7)


def reference_weights(data, accumulate=1, epochs=EPOCHS, clip_value=None):
    """The data-parallel update computed in one process: the mean of both shards' gradients
    (and of `accumulate` consecutive steps', applied at the last one's learning rate), clipped
    to global norm `clip_value` if given (the test fails where that would not clip).

    Each rank normalises with its own shard's BatchNorm statistics, so this, not a plain run
    at the global batch, is what two ranks must reproduce. The network runs the C++ CPU kernels
    as train.py's does: at this batch, training-mode BatchNorm turns any two kernels' last-bit
    differences into ~1e-2 of the update.
    """
    ms.set_seed(SEED)
    source = open_source("imagenet", str(data), "train")
    net = shufflenet.create_model(MODEL, num_classes=3)
    use_cpu_kernels(net)
    initial = {p.name: p.asnumpy().copy() for p in net.trainable_params()}
    steps = PipelineSpec(True, BATCH, 32, num_shards=2, shard_id=0).steps(len(source))
    lrs = lr_schedule(LR, 0.0, epochs, steps)[accumulate - 1::accumulate]
    optimizer = build_optimizer(net, lrs, 0.9, 4e-5)
    pending = []
    grad_fn = ms.value_and_grad(nn.WithLossCell(net, nn.CrossEntropyLoss()), None, optimizer.parameters)
    net.set_train(True)
    for epoch in range(epochs):
        specs = [PipelineSpec(True, BATCH, 32, num_shards=2, shard_id=k, seed=SEED, num_workers=1,
                              augment=False) for k in range(2)]
        shards = [create_dataset(source, spec, epoch)[0] for spec in specs]
        for (x0, y0), (x1, y1) in zip(*(s.create_tuple_iterator(num_epochs=1) for s in shards)):
            (_, g0), (_, g1) = grad_fn(x0, y0), grad_fn(x1, y1)
            pending.append([(a + b) / 2 for a, b in zip(g0, g1)])
            if len(pending) == accumulate:
                grads = [sum(grads) / accumulate for grads in zip(*pending)]
                if clip_value is not None:
                    norm = float(np.sqrt(sum((g.asnumpy().astype(np.float64) ** 2).sum() for g in grads)))
                    assert norm > 2 * clip_value, f"global norm {norm:.3g} is not clipped by {clip_value}"
                    grads = [g * (clip_value / norm) for g in grads]
                optimizer(tuple(grads))
                pending = []
    return initial, {p.name: p.asnumpy() for p in net.trainable_params()}


def weight_fingerprints(logs):
    """Each rank log's "trained weights sha256" values, by log name."""
    return {log.name: [ln.split("sha256 ")[1] for ln in log.read_text().splitlines()
                       if "trained weights sha256" in ln] for log in logs}


def difference_to_update(checkpoint, initial, expected):
    """How far `checkpoint`'s weights are from `expected`, as a fraction of the update."""
    keys = sorted(expected)
    start, want = (np.concatenate([d[k].ravel() for k in keys]) for d in (initial, expected))
    saved = read_checkpoint(checkpoint)
    got = np.concatenate([saved[k].asnumpy().ravel() for k in keys])
    difference = np.linalg.norm(got - want) / np.linalg.norm(want - start)
    print(f"difference to the one-process data-parallel update: {difference:.1e} of the update")
    return difference


#: The global norm the two-rank run clips to: the reduced gradient's is ~500, so clipping acts.
CLIP = 50.0
#: Accumulation over both epochs' single step (one update), its reduction across ranks, the
#: dynamic loss scale's overflow check agreed by all-reduce, clipping of the reduced gradient, EMA.
FEATURES = ["--gradient-accumulation-steps", "2", "--loss-scale", "1024", "--loss-scale-type", "dynamic",
            "--clip-grad", "--clip-value", str(CLIP), "--ema", "--ema-decay", "0.9"]


@pytest.mark.parametrize("features", [[], FEATURES], ids=["plain", "accumulation-clipping-ema-dynamic-scale"])
def test_two_workers_agree_with_each_other_and_with_the_data_parallel_math(small_data, tmp_path, features):
    out, logs = tmp_path / "out", tmp_path / "logs"
    started = time.time()
    proc = launch(small_data, out, logs, extra=features)
    output, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, output[-3000:]
    print(f"two-worker run: {time.time() - started:.1f} s")

    worker_logs = sorted(p.name for p in logs.glob("worker_*.log"))
    assert worker_logs == ["worker_0.log", "worker_1.log"]
    fingerprints = weight_fingerprints(logs / log for log in worker_logs)
    assert len(set(sum(fingerprints.values(), []))) == 1, fingerprints

    # Rank 0 alone wrote the outputs; evaluation scored the 21 validation images once in all.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0001.ckpt", "epoch-0002.ckpt"]
    assert "(21 samples)" in (out / "train.log").read_text()
    assert not list(tmp_path.glob("**/rank_1*"))

    initial, expected = reference_weights(small_data, accumulate=2 if features else 1,
                                          clip_value=CLIP if features else None)
    keys = sorted(expected)
    start, want = (np.concatenate([d[k].ravel() for k in keys]) for d in (initial, expected))
    assert difference_to_update(out / "final.ckpt", initial, expected) < 1e-4
    if features:  # one EMA step after the one update: decay 0.9 (1 - exp(-1 / 2000))
        decay = 0.9 * (1 - np.exp(-1 / 2000))
        averaged = read_checkpoint(out / "final_ema.ckpt")
        got = np.concatenate([averaged[k].asnumpy().ravel() for k in keys])
        np.testing.assert_allclose(got, decay * start + (1 - decay) * want, rtol=1e-4, atol=1e-6)


def test_a_killed_rank_fails_the_job_quickly_and_leaves_no_process(data, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    proc = launch(data, out, logs, epochs=50)
    deadline = time.time() + 300
    while not (out / "checkpoints" / "epoch-0001.ckpt").exists():
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-f", f"output-dir {out}"], capture_output=True, text=True)
    pids = [int(p) for p in workers.stdout.split()]
    assert pids
    killed_at = time.time()
    os.kill(pids[-1], signal.SIGKILL)
    try:
        proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    print(f"job ended {time.time() - killed_at:.1f} s after the kill")
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", f"output-dir {out}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_rank_table_mode_waits_for_every_rank_and_reports_failure(tmp_path):
    table = tmp_path / "rank_table.json"
    table.write_text("{}")  # CPU has no HCCL: both ranks fail at init
    result = subprocess.run(
        ["bash", str(SCRIPTS / "run_distribute_train.sh"), "--rank_table", str(table), "--log_dir",
         str(tmp_path / "logs"), "2", "none", "digits_cpu", "--", "--output-dir", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "a rank failed" in result.stderr
    for rank in (0, 1):
        log = (tmp_path / "logs" / f"rank_{rank}.log").read_text()
        assert "distributed initialisation failed" in log and "Traceback" not in log


@pytest.mark.parametrize("script,args,message", [
    ("run_distribute_train.sh", [], "usage"),
    ("run_distribute_train.sh", ["two", "none"], "expected a whole number"),
    ("run_distribute_train.sh", ["2", "/no/such/folder"], "is not a folder"),
    ("run_distribute_train.sh", ["--rank_table", "/no/table.json", "2", "none"], "does not exist"),
    ("run_distribute_train.sh", ["--bogus", "2", "none"], "unknown option --bogus"),
    ("run_distribute_train.sh", ["--nodes", "2", "--node_rank", "1", "2", "none"],
     "node 0's network address"),
    ("run_standalone_train.sh", ["/no/such/folder"], "is not a folder"),
    ("run_standalone_train.sh", ["a", "b", "c"], "usage"),
    ("run_eval.sh", [], "usage"),
    ("run_eval.sh", ["/no/model.ckpt"], "does not exist"),
    ("run_export.sh", [], "usage"),
])
def test_scripts_check_their_arguments(script, args, message, tmp_path):
    result = subprocess.run(["bash", str(SCRIPTS / script), *args], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert message in (result.stderr + result.stdout).lower() or message in result.stderr
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "logs"])


def test_scripts_are_strict_bash():
    for script in SCRIPTS.glob("run_*.sh"):
        text = script.read_text()
        assert "set -euo pipefail" in text, script.name
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))


def test_export_and_eval_scripts_run_end_to_end(tmp_path):
    from conftest import fill_deterministic

    from shufflenet.models import META_KEY, describe
    from shufflenet.utils.checkpoint import save_checkpoint

    net = shufflenet.create_model("shufflenet_v1_g3_x0_25", num_classes=10)
    fill_deterministic(net)
    meta = describe("shufflenet_v1_g3_x0_25", 10, preprocessing="digits", image_size=32)
    ckpt = save_checkpoint(net, tmp_path / "m.ckpt", {META_KEY: meta.to_json()})
    exported = subprocess.run(["bash", str(SCRIPTS / "run_export.sh"), str(ckpt), "MINDIR", "dynamic"],
                              capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "m.mindir").is_file() and (tmp_path / "m.mindir.json").is_file()
    scored = subprocess.run(["bash", str(SCRIPTS / "run_eval.sh"), str(tmp_path / "m.mindir")],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "on 360 digits images" in scored.stdout


def _other_ranks_at(monkeypatch, *epochs):
    """The all-reduce as this rank sees it when the other ranks would start at `epochs`."""
    from shufflenet.engine import trainer

    others = sum((np.array([e, e**2], np.float64) for e in epochs), np.zeros(2))
    monkeypatch.setattr(trainer, "all_reduce_sum", lambda values: values + others)


@pytest.mark.parametrize("mine,others,refused", [
    (3, [3], False), (0, [0, 0], False), (3, [2], True), (0, [2], True),
    (2, [1, 3], True),  # the mean is this rank's epoch: only the squares tell
])
def test_ranks_that_would_start_at_different_epochs_are_refused(monkeypatch, mine, others, refused):
    """Unit level, the all-reduce replaced: every rank compares sums of the epochs and of their
    squares, so every rank reaches the same verdict (a mismatch would hang the collectives)."""
    from shufflenet.engine.trainer import _check_ranks_agree
    from shufflenet.utils.checkpoint import CheckpointError

    _other_ranks_at(monkeypatch, *others)
    if refused:
        message = f"ranks would resume from different epochs \\(this one: {mine}"
        with pytest.raises(CheckpointError, match=message):
            _check_ranks_agree(mine, 1 + len(others))
    else:
        _check_ranks_agree(mine, 1 + len(others))


def test_a_run_whose_ranks_disagree_is_refused_before_it_writes(small_data, tmp_path, monkeypatch):
    """The check is part of building a run: rank 0 starting afresh while its peer would resume
    at epoch 2 stops before anything is written, with the fix in the message."""
    from shufflenet.engine.config import Config
    from shufflenet.engine.context import Ranks
    from shufflenet.engine.trainer import build_run
    from shufflenet.utils.checkpoint import CheckpointError

    _other_ranks_at(monkeypatch, 2)
    config = Config(model=MODEL, data_path=str(small_data), image_size=32, batch_size=BATCH, epochs=3,
                    num_workers=1, cpu_kernels="off", output_dir=str(tmp_path / "out"))
    with pytest.raises(CheckpointError, match="same --output-dir .* or be given the same --resume file"):
        build_run(config, Ranks(rank=0, size=2), log=lambda line: None)
    assert not (tmp_path / "out").exists()


#: The two ends of the wire between the namespaces; nothing outside them sees these addresses.
NODE_ADDRESSES = ("10.77.0.1", "10.77.0.2")


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


@pytest.fixture
def two_hosts():
    """Two network namespaces joined by a veth pair: to msrun, two machines on one network, each
    with its own addresses and ports, so node 1 reaches node 0's scheduler over the wire (on one
    host without them, node 1's msrun starts a second scheduler on the same address and fails).

    Skipped where namespaces cannot be made, except in CI, which must run it. Whatever the test
    leaves running in them is killed, and both are removed, however the test ends."""
    tag = f"{os.getpid() % 100000}{secrets.token_hex(2)}"
    hosts = (f"shn{tag}a", f"shn{tag}b")  # also the veth ends: interface names have <= 15 characters
    why = None
    if os.geteuid() != 0:
        why = "needs root"
    elif shutil.which("ip") is None:
        why = "needs `ip`, from iproute2"
    try:
        steps = [("netns", "add", hosts[0]), ("netns", "add", hosts[1]),
                 ("link", "add", hosts[0], "type", "veth", "peer", "name", hosts[1])]
        for host, address in zip(hosts, NODE_ADDRESSES):
            steps += [("link", "set", host, "netns", host), ("-n", host, "link", "set", "lo", "up"),
                      ("-n", host, "addr", "add", f"{address}/30", "dev", host),
                      ("-n", host, "link", "set", host, "up")]
        for step in steps if why is None else ():
            result = _ip(*step)
            if result.returncode != 0:
                why = f"`ip {' '.join(step)}` failed: {result.stderr.strip()}"
                break
        if why is not None:
            message = f"two network namespaces cannot be made here ({why})"
            if os.environ.get("CI") == "true":
                pytest.fail(f"{message}; CI must run the multi-node test")
            pytest.skip(message)
        yield hosts
    finally:
        if shutil.which("ip"):
            for host in hosts:  # msrun's workers run in sessions of their own: kill by namespace
                for pid in _ip("netns", "pids", host).stdout.split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
            _ip("link", "del", hosts[0])  # only where it was never moved into its namespace
            for host in hosts:
                _ip("netns", "del", host)


def test_two_nodes_over_a_network_train_as_one_job(two_hosts, small_data, tmp_path):
    """Multi-node msrun as users run it: `--nodes 2 --node_rank 0|1 --master_addr <node 0>`, one
    rank per node, each node in its own network namespace. Proves both nodes' scripts exit 0, each
    node ran its own rank (worker_1 in node 1's logs), the two ranks end with identical weights,
    and those equal the one-process data-parallel update (what the two-rank job on one host is
    checked against). The 30 s cluster time-out (joining took ~6 s on two busy cores) ends a job
    missing a node within ~80 s (measured 77 s) instead of msrun's default 600 s."""
    out, port = tmp_path / "out", str(free_port())
    master = NODE_ADDRESSES[0]
    started = time.time()
    procs = []
    try:
        for rank, host in enumerate(two_hosts):
            options = ["--nodes", "2", "--node_rank", str(rank), "--master_addr", master,
                       "--master_port", port, "--timeout", "30"]
            with (tmp_path / f"node{rank}.out").open("w") as output:
                procs.append(launch(small_data, out, tmp_path / f"logs{rank}", epochs=1, devices=1,
                                    options=options, prefix=("ip", "netns", "exec", host), stdout=output))
        deadline = started + 240  # a job missing a node fails in ~80 s (30 s time-out)
        for proc in procs:
            proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    print(f"two-node run: {time.time() - started:.1f} s")
    for rank, proc in enumerate(procs):
        assert proc.returncode == 0, f"node {rank}:\n{(tmp_path / f'node{rank}.out').read_text()[-3000:]}"

    logs = [tmp_path / "logs0" / "worker_0.log", tmp_path / "logs1" / "worker_1.log"]
    assert sorted(p.name for p in (tmp_path / "logs1").glob("*.log")) == ["worker_1.log"]
    fingerprints = weight_fingerprints(logs)
    assert len(set(sum(fingerprints.values(), []))) == 1 and all(fingerprints.values()), fingerprints

    initial, expected = reference_weights(small_data, epochs=1)
    assert difference_to_update(out / "final.ckpt", initial, expected) < 1e-4
