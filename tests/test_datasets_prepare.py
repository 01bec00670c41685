"""prepare_datasets.py against a local HTTP server on 127.0.0.1 serving synthetic archives (the
real hosts are never contacted): download, resume, verify, unpack, idempotence, manual steps,
and the few-shot export/import."""
import hashlib
import io
import json
import os
import random
import shutil
import sys
import tarfile
import threading
import types
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from datasets import prepare
from datasets.prepare import main, prepare as run_prepare
from engine.config import get_cfg_default
from engine.errors import DatasetError
from engine.registry import DATASET_REGISTRY
from synthetic.layouts import write_dataset


class Server:
    """Serves `files` ({url path: bytes}) with HTTP Range support. `drop_once` names paths whose
    first response breaks off after half the body; `ignore_range` makes it answer 200 always."""

    def __init__(self):
        self.files, self.drop_once, self.ignore_range, self.requests = {}, set(), False, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and not server.ignore_range:
                    start = int(rng.split("=")[1].rstrip("-"))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if self.path in server.drop_once:
                    server.drop_once.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def zip_tree(folder, arc_prefix=""):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for dirpath, _, filenames in os.walk(folder):
            for f in sorted(filenames):
                path = os.path.join(dirpath, f)
                z.write(path, os.path.join(arc_prefix, os.path.relpath(path, folder)))
    return buf.getvalue()


def tar_tree(folder, arcname, mode="w:gz"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        t.add(folder, arcname=arcname)
    return buf.getvalue()


def md5(data):
    return hashlib.md5(data).hexdigest()


@pytest.fixture(scope="module")
def eurosat_files(tmp_path_factory):
    """EuroSAT.zip (2750/<Class>/...) and split_zhou_EuroSAT.json, as the real hosts serve them."""
    src = tmp_path_factory.mktemp("eurosat_src")
    write_dataset("EuroSAT", src, per_class=10)
    return {"EuroSAT.zip": zip_tree(src / "eurosat" / "2750", "2750"),
            "split_zhou_EuroSAT.json": (src / "eurosat" / "split_zhou_EuroSAT.json").read_bytes()}


def serve(server, files, md5s=True):
    """Put `files` on the server; the overrides that point the URL table at it."""
    overrides = {}
    for name, data in files.items():
        server.files[f"/{name}"] = data
        overrides[name] = {"urls": [f"{server.url}/{name}"], **({"md5": md5(data)} if md5s else {})}
    return overrides


def cfg_for(root, name, shots=-1, seed=1):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = str(root), name, shots
    cfg.SEED, cfg.VERBOSE = seed, False
    return cfg


def build(root, name, shots=-1, seed=1):
    random.seed(seed)
    return DATASET_REGISTRY.get(name)(cfg_for(root, name, shots, seed))


def test_download_verify_unpack_and_idempotent(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    assert run_prepare(tmp_path, ["eurosat"], overrides=overrides) == {"EuroSAT": "ready"}
    ds = build(tmp_path, "EuroSAT")
    assert ds.num_classes == 10 and len(ds.train_x) == 50
    downloads = tmp_path / ".downloads"
    assert not (downloads / "EuroSAT.zip").exists()  # archive removed once unpacked
    assert not [f for f in os.listdir(tmp_path / "eurosat") if f.startswith(".")]  # no staging left
    manifest = json.loads((downloads / "manifest.json").read_text())
    entry = manifest["EuroSAT.zip"]
    assert entry["size"] == len(eurosat_files["EuroSAT.zip"])
    assert entry["sha256"] == hashlib.sha256(eurosat_files["EuroSAT.zip"]).hexdigest()

    server.requests.clear()
    capsys.readouterr()
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides) == {"EuroSAT": "ready"}
    assert server.requests == [] and "EuroSAT.zip: in place" in capsys.readouterr().out


def test_partial_download_resumes_with_range(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    data = eurosat_files["EuroSAT.zip"]
    os.makedirs(tmp_path / ".downloads")
    (tmp_path / ".downloads" / "EuroSAT.zip.part").write_bytes(data[:1000])
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "ready"
    assert ("/EuroSAT.zip", "bytes=1000-") in server.requests
    assert "resuming at 1,000 bytes" in capsys.readouterr().out


def test_broken_connection_is_resumed(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    server.drop_once.add("/EuroSAT.zip")
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "ready"
    zip_requests = [r for r in server.requests if r[0] == "/EuroSAT.zip"]
    assert len(zip_requests) == 2 and zip_requests[0][1] is None and zip_requests[1][1].startswith("bytes=")
    assert build(tmp_path, "EuroSAT").num_classes == 10


def test_server_ignoring_range_restarts_cleanly(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    server.ignore_range = True
    os.makedirs(tmp_path / ".downloads")
    (tmp_path / ".downloads" / "EuroSAT.zip.part").write_bytes(b"stale bytes from another file")
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "ready"
    assert "the server does not resume; starting again" in capsys.readouterr().out


def test_checksum_mismatch_fails_and_prints_manual_step(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    overrides["EuroSAT.zip"]["md5"] = "0" * 32
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "failed"
    out = capsys.readouterr().out
    assert "does not match the published 00000000000000000000000000000000" in out
    assert "MANUAL (EuroSAT.zip)" in out and f"{server.url}/EuroSAT.zip" in out
    assert not os.path.exists(tmp_path / ".downloads" / "EuroSAT.zip.part")
    assert not os.path.exists(tmp_path / ".downloads" / "EuroSAT.zip")
    assert not os.path.exists(tmp_path / "eurosat" / "2750")


def test_corrupt_archive_is_reported_not_a_traceback(server, eurosat_files, tmp_path, capsys):
    files = dict(eurosat_files, **{"EuroSAT.zip": eurosat_files["EuroSAT.zip"][:-200]})  # truncated
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=serve(server, files))["EuroSAT"] == "failed"
    out = capsys.readouterr().out
    assert "cannot unpack EuroSAT.zip" in out or "neither a zip nor a tar" in out
    assert not os.path.exists(tmp_path / "eurosat" / "2750")
    assert not [f for f in os.listdir(tmp_path / "eurosat") if f.startswith(".unpack")]


def test_unreachable_host_falls_back_to_the_next_url(server, eurosat_files, tmp_path):
    overrides = serve(server, eurosat_files)
    overrides["EuroSAT.zip"]["urls"].insert(0, f"{server.url}/gone/EuroSAT.zip")  # 404
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "ready"


def test_file_placed_by_hand_is_verified_and_installed(eurosat_files, tmp_path):
    os.makedirs(tmp_path / ".downloads")
    (tmp_path / ".downloads" / "EuroSAT.zip").write_bytes(eurosat_files["EuroSAT.zip"])
    (tmp_path / ".downloads" / "split_zhou_EuroSAT.json").write_bytes(eurosat_files["split_zhou_EuroSAT.json"])
    overrides = {n: {"urls": [], "md5": md5(d)} for n, d in eurosat_files.items()}  # no network at all
    assert run_prepare(tmp_path, ["EuroSAT"], overrides=overrides)["EuroSAT"] == "ready"
    assert build(tmp_path, "EuroSAT").num_classes == 10


def test_tar_members_and_nested_archives(server, tmp_path_factory, tmp_path):
    """FGVC: keep data/ of a .tar.gz; Caltech: a zip holding a .tar.gz; DTD: a sub-folder."""
    src = tmp_path_factory.mktemp("src")
    for name in ("FGVCAircraft", "Caltech101"):
        write_dataset(name, src, per_class=10)
    inner = tar_tree(src / "caltech-101" / "101_ObjectCategories", "101_ObjectCategories")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("caltech-101/101_ObjectCategories.tar.gz", inner)
        z.writestr("caltech-101/show_annotation.m", "% not needed\n")
    files = {
        "fgvc-aircraft-2013b.tar.gz": tar_tree(src / "fgvc_aircraft", "fgvc-aircraft-2013b/data"),
        "caltech-101.zip": buf.getvalue(),
        "split_zhou_Caltech101.json": (src / "caltech-101" / "split_zhou_Caltech101.json").read_bytes(),
    }
    overrides = serve(server, files)
    assert run_prepare(tmp_path, ["FGVCAircraft", "caltech101"], overrides=overrides) == \
        {"FGVCAircraft": "ready", "Caltech101": "ready"}
    assert build(tmp_path, "FGVCAircraft").classnames[0] == "707-320"
    assert build(tmp_path, "Caltech101").classnames[0] == "face"
    assert sorted(os.listdir(tmp_path / "caltech-101")) == ["101_ObjectCategories", "split_zhou_Caltech101.json"]


def test_manual_dataset_prints_steps_and_flattens_nested_copy(server, tmp_path, tmp_path_factory, capsys):
    files = {"split_zhou_StanfordCars.json": b"{}", "car_devkit.tgz": b"x"}
    overrides = serve(server, files)
    assert run_prepare(tmp_path, ["StanfordCars"], overrides=overrides)["StanfordCars"] == "manual"
    out = capsys.readouterr().out
    assert "kaggle.com/datasets/jessicali9530/stanford-cars-dataset" in out
    assert f"{tmp_path / 'stanford_cars'}/cars_train/00001.jpg" in out
    assert "DATASETS.md#stanfordcars" in out
    assert "car_devkit.tgz: (optional, only the fallback split needs it)" in out  # b"x" is no archive

    # the Kaggle copy nests cars_train/cars_train: the next run flattens it
    src = tmp_path_factory.mktemp("cars")
    write_dataset("StanfordCars", src, per_class=4)
    for part in ("cars_train", "cars_test"):
        shutil.copytree(src / "stanford_cars" / part, tmp_path / "stanford_cars" / part / part)
    shutil.copy(src / "stanford_cars" / "split_zhou_StanfordCars.json", tmp_path / "stanford_cars")
    assert run_prepare(tmp_path, ["StanfordCars"], overrides=overrides)["StanfordCars"] == "ready"
    assert build(tmp_path, "StanfordCars").num_classes == 6


def test_dry_run_changes_nothing(server, eurosat_files, tmp_path, capsys):
    overrides = serve(server, eurosat_files)
    assert run_prepare(tmp_path, ["EuroSAT", "ImageNet"], dry_run=True, overrides=overrides) == \
        {"EuroSAT": "pending", "ImageNet": "manual"}
    out = capsys.readouterr().out
    assert f"would download {server.url}/EuroSAT.zip" in out and "image-net.org" in out
    assert os.listdir(tmp_path) == [] and server.requests == []


def test_cli_with_env_overrides_and_exit_codes(server, eurosat_files, tmp_path, monkeypatch, capsys):
    overrides = serve(server, eurosat_files)
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps(overrides))
    monkeypatch.setenv(prepare.OVERRIDES_ENV, str(path))
    assert main(["--root", str(tmp_path / "data"), "eurosat"]) == 0
    assert main(["--root", str(tmp_path / "data"), "eurosat", "--dry-run"]) == 0  # already there
    assert main(["--root", str(tmp_path / "data"), "nosuchset"]) == 2
    assert "Unknown dataset 'nosuchset'" in capsys.readouterr().out


def test_gdrive_files_go_through_gdown(tmp_path, monkeypatch, capsys):
    calls = []

    def download(id, output, quiet, resume):
        calls.append((id, resume))
        with open(output, "w") as f:
            f.write("n00000000 tench\n")
        return output

    fake = types.ModuleType("gdown")
    fake.download = download
    fake.exceptions = types.SimpleNamespace(DownloadError=RuntimeError)
    monkeypatch.setitem(sys.modules, "gdown", fake)
    overrides = {"imagenet-a.tar": {"urls": []}}
    run_prepare(tmp_path, ["ImageNetA"], overrides=overrides)
    assert calls == [("1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF", True)]
    assert (tmp_path / "imagenet-adversarial" / "classnames.txt").read_text() == "n00000000 tench\n"

    monkeypatch.setitem(sys.modules, "gdown", None)  # not installed
    assert run_prepare(tmp_path, ["ImageNetR"], overrides={"imagenet-r.tar": {"urls": []}})["ImageNetR"] == "manual"
    run_prepare(tmp_path / "other", ["ImageNetR"], overrides={"imagenet-r.tar": {"urls": []}})
    assert "pip install gdown" in capsys.readouterr().out


def test_imagenet_archives_go_through_torchvision_parsers(tmp_path, monkeypatch):
    """The ILSVRC archives cannot be synthesised with their real md5, so torchvision's parsers
    are stood in for; what is checked is the wiring: md5 check, staging folder, final place."""
    from torchvision.datasets import imagenet as tv

    calls = []

    def fake_train(root, file=None, folder="train"):
        calls.append(("train", file))
        os.makedirs(os.path.join(root, folder, "n00000000"))

    def fake_devkit(root, file=None):
        calls.append(("devkit", file))

    def fake_val(root, file=None, wnids=None, folder="val"):
        calls.append(("val", file))
        os.makedirs(os.path.join(root, folder, "n00000000"))

    monkeypatch.setattr(tv, "parse_train_archive", fake_train)
    monkeypatch.setattr(tv, "parse_devkit_archive", fake_devkit)
    monkeypatch.setattr(tv, "parse_val_archive", fake_val)
    os.makedirs(tmp_path / ".downloads")
    overrides = {"classnames.txt": {"urls": []}}
    for name in ("ILSVRC2012_devkit_t12.tar.gz", "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        (tmp_path / ".downloads" / name).write_bytes(name.encode())
        overrides[name] = {"md5": md5(name.encode())}
    (tmp_path / ".downloads" / "classnames.txt").write_text("n00000000 tench\n")
    assert run_prepare(tmp_path, ["ImageNet"], overrides=overrides)["ImageNet"] == "ready"
    assert calls == [("train", "ILSVRC2012_img_train.tar"), ("devkit", "ILSVRC2012_devkit_t12.tar.gz"),
                     ("val", "ILSVRC2012_img_val.tar")]
    assert sorted(os.listdir(tmp_path / "imagenet")) == ["classnames.txt", "images"]
    assert sorted(os.listdir(tmp_path / "imagenet" / "images")) == ["train", "val"]
    assert not (tmp_path / ".downloads" / "ILSVRC2012_img_train.tar").exists()  # unpacked: removed


# ---------------------------------------------------------------------------------------------
# Few-shot export / import


def test_export_and_import_imagenet_fewshot(tmp_path, tmp_path_factory):
    src = tmp_path_factory.mktemp("inet")
    write_dataset("ImageNet", src)
    mine, theirs, shared = tmp_path / "mine", tmp_path / "theirs", tmp_path / "shared"
    shutil.copytree(src, mine)
    shutil.copytree(src, theirs)

    assert main(["--root", str(mine), "ImageNet", "--export-fewshot", str(shared), "--shots", "1", "2",
                 "--seeds", "1", "2"]) == 0
    exported = sorted(os.listdir(shared / "imagenet" / "split_fewshot"))
    assert exported == ["shot_1-seed_1.json", "shot_1-seed_2.json", "shot_2-seed_1.json", "shot_2-seed_2.json"]
    original = build(mine, "ImageNet", shots=2, seed=2)  # what train.py --seed 2 selects

    assert main(["--root", str(theirs), "imagenet", "--import-fewshot", str(shared)]) == 0
    random.seed(12345)  # an imported cache is used, not redrawn
    imported = DATASET_REGISTRY.get("ImageNet")(cfg_for(theirs, "ImageNet", shots=2, seed=2))
    assert [os.path.relpath(d.impath, theirs) for d in imported.train_x] == \
        [os.path.relpath(d.impath, mine) for d in original.train_x]
    assert main(["--root", str(theirs), "imagenet", "--import-fewshot", str(shared)]) == 0  # same files: no-op

    # a cache that does not fit the other copy is refused, and nothing is installed
    shutil.rmtree(theirs / "imagenet" / "split_fewshot")
    shutil.rmtree(theirs / "imagenet" / "images" / "train" / "n00000006")
    shutil.rmtree(theirs / "imagenet" / "images" / "val" / "n00000006")
    with pytest.raises(DatasetError, match="does not exist"):
        prepare.import_fewshot(str(theirs), ["ImageNet"], str(shared), log=lambda *a: None)
    assert not (theirs / "imagenet" / "split_fewshot").exists()
