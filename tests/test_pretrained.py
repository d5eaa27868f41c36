"""Published weights by name, without the internet: a loopback server stands in for each publisher
(`conftest.PublisherServer`), files are made in each publisher's format by its rebuild or by
mindcv 0.3.0, and every network or file fault is driven for real."""
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import mindspore as ms
import numpy as np
import pytest
import yaml
from conftest import REPO, fill_deterministic, lineage_preprocessing, randomise_torch, small_mount
from PIL import Image

import shufflenet
from shufflenet.cli.convert import main as convert_main
from shufflenet.cli.eval import main as eval_main
from shufflenet.cli.export import main as export_main
from shufflenet.cli.predict import main as predict_main
from shufflenet.cli.weights import main as weights_main
from shufflenet.data.presets import probe_batch
from shufflenet.inference import load_network
from shufflenet.models import META_KEY, create_model, describe, head_prefix
from shufflenet.pretrained import (
    cache_paths,
    fetch_weights,
    find_entry,
    weight_table,
)
from shufflenet.pretrained.table import built_in_entries
from shufflenet.utils.checkpoint import save_checkpoint

torch = pytest.importorskip("torch")
OWN_MODEL = "shufflenet_v1_g3_x0_25"
ENVIRONMENT = ("SHUFFLENET_HOME", "SHUFFLENET_WEIGHTS_FILE", "SHUFFLENET_OFFLINE",
               "SHUFFLENET_WEIGHTS_MIRROR", "HF_ENDPOINT")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh cache, and none of the user's settings."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SHUFFLENET_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def mirror(publisher_server, monkeypatch, home):
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", publisher_server.url)
    return publisher_server


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def torchvision_file(width: float) -> bytes:
    """torchvision's ShuffleNetV2 of `width`, randomised, as torchvision releases it."""
    from shufflenet.lineages.torch_shufflenet_v2_torchvision import build_torchvision_shufflenet_v2

    path = Path(os.environ["SHUFFLENET_HOME"]).parent / f"tv-{width}.pth"
    torch.save(randomise_torch(build_torchvision_shufflenet_v2(width, 1000)).state_dict(), path)
    return path.read_bytes()


def own_checkpoint(folder: Path, num_classes: int = 10, preprocessing: str = "digits") -> bytes:
    """A checkpoint of this project (with its description), as a team would publish one."""
    net = create_model(OWN_MODEL, num_classes=num_classes)
    fill_deterministic(net)
    description = describe(OWN_MODEL, num_classes, preprocessing=preprocessing, image_size=32)
    path = save_checkpoint(net, folder / "own.ckpt", extra={META_KEY: description.to_json()})
    return path.read_bytes()


def user_table(folder: Path, *entries: dict) -> Path:
    path = folder / "weights.yaml"
    path.write_text(yaml.safe_dump(list(entries)))
    return path


def own_entry(server, data: bytes, path: str = "/team/own.ckpt", **extra) -> dict:
    server.files[path] = data
    return {"model": OWN_MODEL, "tag": "team", "publisher": "shufflenet", "url": server.url + path,
            "check": "sha256", "sha256": sha256(data), **extra}


def serve_at_builtin_url(server, model: str, tag: str, data: bytes) -> str:
    path = urlsplit(find_entry(model, tag, weight_table()).url).path
    server.files[path] = data
    return path


def replaced_by_full_hash(model: str, tag: str, data: bytes) -> dict:
    """A user entry for the built-in one's URL with `data`'s full hash: random weights cannot
    carry the publisher's hash prefix."""
    entry = find_entry(model, tag, weight_table())
    return {"model": model, "tag": tag, "publisher": entry.publisher, "url": entry.url, "check": "sha256",
            "sha256": sha256(data)}


def logits(net, size: int = 224) -> np.ndarray:
    net.set_train(False)
    return net(ms.Tensor(probe_batch(2, size, get_preprocessing("imagenet"), seed=1))).asnumpy()


def get_preprocessing(name):
    from shufflenet.data.presets import get_preprocessing as preset

    return preset(name)


def test_by_name_behind_a_mirror_equals_shufflenet_convert(mirror, tmp_path, capsys):
    """The issue's first promise: `create_model(..., pretrained="torchvision")` from a mirrored
    file gives the logits of `shufflenet convert` of that same file."""
    data = torchvision_file(1.0)
    path = serve_at_builtin_url(mirror, "shufflenet_v2_x1_0", "torchvision", data)
    table = user_table(tmp_path, replaced_by_full_hash("shufflenet_v2_x1_0", "torchvision", data))
    net = shufflenet.create_model("shufflenet_v2_x1_0", pretrained="torchvision", table_file=table)
    assert mirror.requests == [(path, None)]

    src = tmp_path / Path(path).name
    src.write_bytes(data)
    assert convert_main([str(src), str(tmp_path / "converted.ckpt")]) == 0
    converted, description = load_network(tmp_path / "converted.ckpt")
    assert description.options["unit_layout"] == "torchvision"
    np.testing.assert_array_equal(logits(net), logits(converted))

    again = shufflenet.create_model("shufflenet_v2_x1_0", pretrained="torchvision", table_file=table,
                                    num_classes=7)
    assert len(mirror.requests) == 1  # from the cache
    head = [p for p in again.get_parameters() if p.name.startswith(head_prefix("shufflenet_v2_x1_0"))]
    assert head[0].shape == (7, 1024)


def test_a_file_failing_the_publishers_hash_prefix_is_removed_not_converted(mirror, home):
    serve_at_builtin_url(mirror, "shufflenet_v2_x0_5", "torchvision", b"not torchvision's file" * 1000)
    with pytest.raises(ValueError, match=r"failed its check \(SHA-256 .*, expected f707e7126e"):
        fetch_weights("shufflenet_v2_x0_5", "torchvision")
    assert list((home / "downloads").rglob("*")) == [home / "downloads" / "shufflenet_v2_x0_5.torchvision"]
    assert not list((home / "checkpoints").iterdir())


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("fault, fragment", [(404, "HTTP 404"), (403, "HTTP 403"),
                                             ("refused", "cannot reach 127.0.0.1")])
def test_network_faults_are_one_line(mirror, tmp_path, monkeypatch, capsys, fault, fragment):
    entry = own_entry(mirror, own_checkpoint(tmp_path))
    if fault == "refused":
        monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", closed_port_url())
    else:
        mirror.faults["/team/own.ckpt"] = fault
    table = user_table(tmp_path, entry)
    assert weights_main(["download", OWN_MODEL, "team", "--weights-table", str(table)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0] and "/team/own.ckpt" in err[0], err


@pytest.mark.parametrize("main, extra", [(eval_main, ["--data-path", "."]), (export_main, []),
                                        (predict_main, ["image.png"])], ids=["eval", "export", "predict"])
def test_a_weights_tag_without_a_model_is_one_line(home, tmp_path, monkeypatch, capsys, main, extra):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8)).save("image.png")
    assert main(["--weights", "torchvision", *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'torchvision'" in err[0] and "pass --model NAME" in err[0], err
    assert not list(home.rglob("*.ckpt"))


def test_a_cut_download_resumes_where_it_stopped(mirror, tmp_path, home):
    data = own_checkpoint(tmp_path)
    table = user_table(tmp_path, own_entry(mirror, data))
    mirror.faults["/team/own.ckpt"] = "cut"  # every attempt cut half-way
    with pytest.raises(ValueError, match="was cut 4 times .* run the command again to resume"):
        fetch_weights(OWN_MODEL, "team", table)
    part = cache_paths(find_entry(OWN_MODEL, "team", weight_table(table))).source.with_suffix(".ckpt.part")
    assert 0 < part.stat().st_size < len(data)
    kept = part.stat().st_size
    ranges = [asked for _, asked in mirror.requests]
    assert ranges[0] is None and all(asked.startswith("bytes=") for asked in ranges[1:])

    mirror.faults["/team/own.ckpt"] = "cut-once"
    mirror.requests.clear()
    ckpt = fetch_weights(OWN_MODEL, "team", table)
    assert mirror.requests[0] == ("/team/own.ckpt", f"bytes={kept}-")
    assert cache_paths(find_entry(OWN_MODEL, "team", weight_table(table))).source.read_bytes() == data
    assert ckpt.read_bytes() == data and not part.exists()


def test_damaged_cache_files_are_found_by_their_hash_and_replaced(mirror, tmp_path, capsys):
    data = own_checkpoint(tmp_path)
    table = user_table(tmp_path, own_entry(mirror, data))
    ckpt = fetch_weights(OWN_MODEL, "team", table)
    ckpt.write_bytes(ckpt.read_bytes()[:-10] + b"x" * 10)
    assert fetch_weights(OWN_MODEL, "team", table).read_bytes() == data
    assert "is damaged" in capsys.readouterr().err
    assert len(mirror.requests) == 1  # the downloaded file was intact: converted again, not fetched

    paths = cache_paths(find_entry(OWN_MODEL, "team", weight_table(table)))
    paths.source.write_bytes(b"y" + data[1:])
    ckpt.write_bytes(b"")
    assert fetch_weights(OWN_MODEL, "team", table).read_bytes() == data
    assert len(mirror.requests) == 2


def test_offline_uses_the_cache_or_says_which_file_to_place_where(mirror, tmp_path, monkeypatch):
    data = own_checkpoint(tmp_path)
    table = user_table(tmp_path, own_entry(mirror, data))
    monkeypatch.setenv("SHUFFLENET_OFFLINE", "1")
    with pytest.raises(ValueError) as refused:
        fetch_weights(OWN_MODEL, "team", table)
    source = cache_paths(find_entry(OWN_MODEL, "team", weight_table(table))).source
    assert f"place own.ckpt (from {mirror.url}/team/own.ckpt) at {source}" in str(refused.value)
    source.write_bytes(data)  # the manual route the message gives
    assert fetch_weights(OWN_MODEL, "team", table).read_bytes() == data
    assert mirror.requests == []


def test_manual_downloads_name_their_page_and_convert_once_placed(home, tmp_path):
    entry = next((e for e in built_in_entries() if not e.direct and e.model == "shufflenet_v2_x0_5"), None)
    assert entry is not None, "Megvii's ShuffleNetV2 0.5x is listed with its page"
    with pytest.raises(ValueError) as refused:
        fetch_weights(entry.model, entry.tag)
    source = cache_paths(entry).source
    assert entry.page in str(refused.value) and str(source) in str(refused.value)

    from shufflenet.lineages.torch_shufflenet_v2_megvii import build_megvii_shufflenet_v2, megvii_checkpoint

    torch.save(megvii_checkpoint(randomise_torch(build_megvii_shufflenet_v2(0.5, 1000))), source)
    ckpt = fetch_weights(entry.model, entry.tag)
    net, description = load_network(ckpt)
    assert description.preprocessing == "megvii" and description.options["unit_layout"] == "megvii"
    recorded = cache_paths(entry).source_hash.read_text().strip()
    assert recorded == sha256(source.read_bytes())  # first use records it; later uses must match


@pytest.mark.parametrize("content, fragment", [
    ("- {model: nosuchnet, tag: a, publisher: shufflenet, url: 'https://x/y.ckpt', check: sha256}",
     "model 'nosuchnet' is not registered"),
    (f"- {{model: {OWN_MODEL}, tag: a, publisher: shufflenet, url: 'https://x/y.ckpt'}}",
     "needs sha256"),
    (f"- {{model: {OWN_MODEL}, tag: a, publisher: shufflenet, urls: 'https://x/y.ckpt'}}",
     "unknown key(s) ['urls']"),
    (f"- {{model: {OWN_MODEL}, tag: a, publisher: shufflenet, url: 'ftp://x/y.ckpt', check: sha256, "
     f"sha256: {'0' * 64}}}", "is not http(s)"),
    ("model: [", "is not valid YAML"),
])
def test_user_tables_are_checked_before_anything_is_fetched(home, tmp_path, content, fragment):
    table = tmp_path / "mine.yaml"
    table.write_text(content)
    with pytest.raises(ValueError) as refused:
        weight_table(table)
    assert str(table) in str(refused.value) and fragment in str(refused.value)


def test_two_processes_fetch_one_file_once(mirror, tmp_path, home):
    table = user_table(tmp_path, own_entry(mirror, own_checkpoint(tmp_path)))
    code = (f"from shufflenet.pretrained import fetch_weights; "
            f"print(fetch_weights({OWN_MODEL!r}, 'team', {str(table)!r}, progress=False))")
    env = {**os.environ, "SHUFFLENET_HOME": str(home), "SHUFFLENET_WEIGHTS_MIRROR": mirror.url}
    workers = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env) for _ in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert outputs[0][0] == outputs[1][0] != ""
    assert len(mirror.requests) == 1


def test_weights_command_lists_every_entry_and_plots(home, tmp_path, capsys):
    import json

    assert weights_main(["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(built_in_entries())
    for row in rows:
        assert {"model", "tag", "publisher", "url", "file_name", "top1", "top5", "cached"} <= row.keys()
        assert row["cached"] is False
    defaults = [row for row in rows if row["model"] == "shufflenet_v2_x1_0" and row["default"]]
    best = max((row for row in rows if row["model"] == "shufflenet_v2_x1_0" and row["url"]),
               key=lambda row: row["top1"])
    assert defaults == [best]
    assert weights_main(["--model", "shufflenet_v2_x0_5", "--plot", str(tmp_path / "chart.png")]) == 0
    assert (tmp_path / "chart.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_export_and_predict_take_weights_by_tag(mirror, tmp_path, monkeypatch, capsys):
    from shufflenet.cli.eval import main as eval_main
    from shufflenet.cli.export import main as export_main
    from shufflenet.cli.predict import main as predict_main

    table = user_table(tmp_path, own_entry(mirror, own_checkpoint(tmp_path), top1=12.5, top5=50.0))
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_FILE", str(table))
    monkeypatch.chdir(tmp_path)
    picked = ["--model", OWN_MODEL, "--weights", "team"]
    assert eval_main([*picked, "--image-size", "32", "--batch-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "(published: top-1 12.5 %, top-5 50 %)" in out
    assert (tmp_path / f"{OWN_MODEL}.team.eval.json").is_file()
    assert export_main([*picked, "--file-name", str(tmp_path / "exported")]) == 0
    assert (tmp_path / "exported.mindir").is_file()
    image = tmp_path / "digit.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(image)
    capsys.readouterr()
    assert predict_main([*picked, str(image), "--top-k", "2"]) == 0
    assert "digit.png" in capsys.readouterr().out
    assert len(mirror.requests) == 1


@pytest.mark.slow
def test_train_fine_tunes_from_a_mirrored_mindcv_file(mirror, tmp_path, home):
    """The issue's second promise: `train.py --model mobilenet_v2_100 --pretrained mindcv` from a
    file in mindcv 0.3.0's own format (its network, its names), behind a mirror."""
    import mindcv

    network = mindcv.create_model("mobilenet_v2_100", num_classes=1000)
    ms.save_checkpoint(network, str(tmp_path / "mindcv.ckpt"))
    data = (tmp_path / "mindcv.ckpt").read_bytes()
    serve_at_builtin_url(mirror, "mobilenet_v2_100", "mindcv", data)
    table = user_table(tmp_path, replaced_by_full_hash("mobilenet_v2_100", "mindcv", data))
    out = tmp_path / "run"
    env = {**os.environ, "SHUFFLENET_HOME": str(home), "SHUFFLENET_WEIGHTS_MIRROR": mirror.url,
           "SHUFFLENET_WEIGHTS_FILE": str(table)}
    trained = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--model", "mobilenet_v2_100", "--pretrained", "mindcv",
         "--epochs", "1", "--image-size", "32", "--batch-size", "128", "--num-workers", "1",
         "--output-dir", str(out), "--no-export"], capture_output=True, text=True, env=env, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    log = (out / "train.log").read_text()
    assert "pretrained weights from mindcv (" in log and "(new classifier: ['classifier.1.weight'" in log, log
    assert len(mirror.requests) == 1


def test_the_builtin_table_names_what_the_publishers_code_names():
    """Each built-in URL and score, read again from the publisher's own code at test time:
    torchvision's `*_Weights` enums and timm's pretrained configs (from their wheels), mindcv
    0.3.0's `default_cfgs` (installed), the hub's asset files (an extract); Megvii's are pages."""
    import importlib
    import pkgutil

    import mindcv.models
    from publisher_code import import_publishers

    torchvision, timm = import_publishers()
    torchvision_weights = {}
    for module in ("shufflenetv2", "mobilenetv2", "squeezenet"):
        loaded = importlib.import_module(f"torchvision.models.{module}")
        for enum in vars(loaded).values():
            if isinstance(enum, type) and enum.__name__.endswith("_Weights"):
                torchvision_weights.update({weights.url: weights for weights in enum})
    mindcv_urls = set()
    for info in pkgutil.iter_modules(mindcv.models.__path__):
        cfgs = getattr(importlib.import_module(f"mindcv.models.{info.name}"), "default_cfgs", {})
        mindcv_urls.update(cfg.get("url") for cfg in cfgs.values())
    for entry in built_in_entries():
        if entry.publisher == "torchvision":
            weights = torchvision_weights[entry.url]
            metrics = weights.meta["_metrics"]["ImageNet-1K"]
            assert (entry.top1, entry.top5) == (metrics["acc@1"], metrics["acc@5"]), entry.name
            sizes = weights.transforms.keywords
            assert (sizes["crop_size"], sizes.get("resize_size", 256)) == (
                entry.evaluation["crop"], entry.evaluation["resize"]), entry.name
            assert entry.check == "sha256-prefix" and entry.hash_prefix in entry.source_name
        elif entry.publisher == "mindcv":
            assert entry.url in mindcv_urls, entry.name
        elif entry.publisher == "timm":
            assert_in_timm(timm, entry)
        elif entry.publisher == "mindspore":  # the model zoo's hub: an extract of its asset files
            assert (entry.url, entry.sha256) in hub_assets(), entry.name


def hub_assets() -> set[tuple[str, str]]:
    """(asset-link, asset-sha256) pairs of `golden/mindspore_hub_assets.txt`, extracted verbatim
    from the MindSpore Hub's repository (the commit is in the file)."""
    lines = (REPO / "tests" / "golden" / "mindspore_hub_assets.txt").read_text().splitlines()
    links = [line.split("<")[1].rstrip(">") for line in lines if line.startswith("asset-link:")]
    hashes = [line.split()[1] for line in lines if line.startswith("asset-sha256:")]
    return set(zip(links, hashes))


def assert_in_timm(timm, entry) -> None:
    from timm.models import get_pretrained_cfg

    parts = urlsplit(entry.url)
    if parts.netloc == "huggingface.co":  # https://huggingface.co/timm/<name>/resolve/main/<file>
        name = parts.path.split("/")[2]
        cfg = get_pretrained_cfg(name)
        assert cfg is not None and cfg.hf_hub_id == f"timm/{name}", entry.name
    else:
        found = [name for name in timm.list_pretrained("*xception*")
                 if getattr(get_pretrained_cfg(name), "url", None) == entry.url]
        assert found, entry.name
        cfg = get_pretrained_cfg(found[0])
    evaluation = entry.evaluation
    assert (list(cfg.mean), list(cfg.std)) == (evaluation["mean"], evaluation["std"]), entry.name
    assert int(cfg.input_size[-1] / cfg.crop_pct) == evaluation["resize"], entry.name
    assert cfg.input_size[-1] == evaluation["crop"], entry.name


@pytest.mark.parametrize("entry", built_in_entries(), ids=lambda entry: entry.name)
def test_converted_weights_are_fed_as_their_publisher_evaluated_them(entry):
    """The complaint trackers hear most: weights scored with the wrong preprocessing. The input
    convention the converted weights get (the entry's, else its lineage's) is the publisher's
    evaluation: channel order, mean and std, and the resize before the centre crop."""
    from shufflenet.data.presets import eval_resize
    from shufflenet.lineages import LINEAGES
    from shufflenet.models import model_entry

    family = model_entry(entry.model).family
    lineages = [x for x in LINEAGES if x.origin == entry.publisher and x.family == family]
    assert lineages, f"{entry.name}: no lineage converts {entry.publisher}'s {family}"
    name = entry.preprocessing or lineage_preprocessing(lineages[0], entry.model)
    preset, evaluation = get_preprocessing(name), entry.evaluation
    unit = 255.0 if evaluation["scale"] == [0, 1] else 1.0
    assert preset.bgr == evaluation.get("bgr", False), entry.name
    for field in ("mean", "std"):
        np.testing.assert_allclose(getattr(preset, field), np.array(evaluation[field]) * unit, atol=0.01,
                                   err_msg=entry.name)
    assert evaluation["crop"] == model_entry(entry.model).image_size, entry.name
    assert eval_resize(evaluation["crop"], preset) == evaluation["resize"], entry.name


def test_the_default_path_arguments_are_paths_not_tags(tmp_path):
    from shufflenet.pretrained import is_weights_tag

    assert is_weights_tag("torchvision") and is_weights_tag("default")
    assert not is_weights_tag("runs/final.ckpt") and not is_weights_tag("final.ckpt")
    (tmp_path / "mindcv").write_text("")
    cwd = Path.cwd()
    try:
        os.chdir(tmp_path)
        assert not is_weights_tag("mindcv")  # a file of that name is what the user means
    finally:
        os.chdir(cwd)



def test_the_readme_table_is_what_the_weights_command_prints(home):
    from shufflenet.cli.weights import format_table, table_rows

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- weights-table -->\n", 1)[1].split("\n\n", 1)[0]
    assert table == format_table(table_rows(weight_table()), cache=False)


def test_full_and_read_only_caches_are_one_line(publisher_server, tmp_path, monkeypatch, capsys):
    data = own_checkpoint(tmp_path)
    table = user_table(tmp_path, own_entry(publisher_server, data))
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", publisher_server.url)
    for option, fragment in (("size=64k", "no space left on the device holding"),
                             ("ro,size=64k", "is not writable; set SHUFFLENET_HOME")):
        with small_mount(tmp_path / option.replace(",", "-").replace("=", ""), option) as mount:
            monkeypatch.setenv("SHUFFLENET_HOME", str(mount / "home") if "ro" not in option else str(mount))
            assert weights_main(["download", OWN_MODEL, "team", "--weights-table", str(table)]) == 1
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and fragment in err[-1] and str(mount) in err[-1], err


def test_mirrors_replace_scheme_and_host_and_keep_the_path(monkeypatch):
    from shufflenet.pretrained.download import mirrored

    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    hub = "https://huggingface.co/timm/mobilenetv1_100.ra4_e3600_r224_in1k/resolve/main/model.safetensors"
    torchvision = "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth"
    assert mirrored(hub) == hub
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.com")
    assert mirrored(hub) == hub.replace("https://huggingface.co", "https://hf-mirror.example.com")
    assert mirrored(torchvision) == torchvision  # HF_ENDPOINT is Hugging Face's alone
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", "http://10.0.0.1:8080/cache/")
    assert mirrored(torchvision) == "http://10.0.0.1:8080/cache/models/shufflenetv2_x1-5666bf0f80.pth"
    assert mirrored(hub).startswith("http://10.0.0.1:8080/cache/timm/")
    monkeypatch.setenv("SHUFFLENET_WEIGHTS_MIRROR", "mirror.example.com")
    with pytest.raises(ValueError, match="must be an http"):
        mirrored(torchvision)


def test_the_readme_family_table_is_what_summary_prints(home):
    from shufflenet.cli.summary import family_rows, format_families

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- family-table -->\n", 1)[1].split("\n\n", 1)[0]
    assert table == format_families(family_rows())
