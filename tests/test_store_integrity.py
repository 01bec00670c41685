"""Nothing read from disk is trusted blindly: the feature store's chunks carry a content hash,
a store that cannot be written keeps features in memory, writes that fail for lack of room are
one line, temporary files of killed writers are removed, and the run lock follows no link."""
import errno
import os
import resource
import subprocess
import sys

import pytest
import torch

import train
from engine import features as features_mod
from engine import io as eio
from engine.feature_store import Namespace
from engine.errors import UserError
from engine.run_lock import run_lock
from runs import results
from test_cached_features import argv, chunks, count_encodes, data_root  # noqa: F401  (fixtures)


def _flip_feature_bytes(path, feats):
    """Flip 16 bytes inside the stored feature tensor (not the zip's metadata)."""
    raw = bytearray(open(path, "rb").read())
    start = bytes(raw).find(feats.contiguous().view(torch.uint8).numpy().tobytes())
    assert start >= 0
    for i in range(start + 8, start + 24):
        raw[i] ^= 0xFF
    with open(path, "wb") as f:
        f.write(raw)


def test_flipped_feature_bytes_are_detected_and_rebuilt(data_root, tiny_clip_path, tmp_path, count_encodes, capsys):
    cache = str(tmp_path / "cache")
    assert train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, cache)) == 0
    first = results(tmp_path / "a")
    victim = chunks(cache)[0]
    stored = torch.load(victim, weights_only=True)["features"]
    _flip_feature_bytes(victim, stored)
    features_mod._NAMESPACES.clear()
    count_encodes.clear()
    assert train.main(argv(data_root, str(tmp_path / "b"), tiny_clip_path, cache)) == 0
    out = capsys.readouterr().out
    assert "does not match its hash" in out and not os.path.exists(victim)
    assert len(count_encodes) == 1  # the damaged chunk's entries, encoded again
    assert results(tmp_path / "b")["accuracy"] == first["accuracy"]
    a = torch.load(tmp_path / "a" / "prompt_learner" / "model.pth.tar-3", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "prompt_learner" / "model.pth.tar-3", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_chunk_that_is_not_a_dict_is_discarded(tmp_path, capsys):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    ns.add(["k1", "k2"], torch.ones(2, 4))
    path = chunks(str(tmp_path))[0]
    torch.save([1, 2, 3], path)
    fresh = Namespace(str(tmp_path), "weights", "tfm", 4)
    fresh.refresh()
    assert fresh.missing(["k1", "k2"]) == ["k1", "k2"] and not os.path.exists(path)
    assert "not a feature chunk" in capsys.readouterr().out


def test_a_chunk_without_a_hash_is_not_trusted(tmp_path):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    ns.add(["k1"], torch.ones(1, 4))
    path = chunks(str(tmp_path))[0]
    data = torch.load(path, weights_only=True)
    del data["sha256"]
    torch.save(data, path)
    fresh = Namespace(str(tmp_path), "weights", "tfm", 4)
    fresh.refresh()
    assert fresh.missing(["k1"]) == ["k1"]


def test_intact_chunks_load_and_keys_are_covered_by_the_hash(tmp_path):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    feats = torch.arange(8.0).view(2, 4)
    ns.add(["k1", "k2"], feats)
    fresh = Namespace(str(tmp_path), "weights", "tfm", 4)
    fresh.refresh()
    assert torch.equal(fresh.get(["k1", "k2"]).float(), feats)
    path = chunks(str(tmp_path))[0]
    data = torch.load(path, weights_only=True)
    data["keys"] = ["k2", "k1"]  # swapped keys would give each image the other's feature
    torch.save(data, path)
    swapped = Namespace(str(tmp_path), "weights", "tfm", 4)
    swapped.refresh()
    assert swapped.missing(["k1", "k2"]) == ["k1", "k2"]


def test_read_only_empty_store_keeps_features_in_memory(data_root, tiny_clip_path, tmp_path, count_encodes, capsys,
                                                       monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    makedirs = os.makedirs

    def read_only(path, *args, **kwargs):  # as on a read-only mount (a chmod would not stop root)
        if os.fspath(path).startswith(str(cache)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(path))
        return makedirs(path, *args, **kwargs)

    monkeypatch.setattr(os, "makedirs", read_only)
    assert train.main(argv(data_root, str(tmp_path / "a"), tiny_clip_path, str(cache))) == 0
    monkeypatch.setattr(os, "makedirs", makedirs)
    assert "feature store cannot be written" in capsys.readouterr().out
    assert os.listdir(cache) == []
    online = str(tmp_path / "o")
    assert train.main(argv(data_root, online, tiny_clip_path, str(tmp_path / "c2"))) == 0
    assert results(tmp_path / "a")["accuracy"] == results(online)["accuracy"]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_store_on_a_full_disk_falls_back_to_memory(tmp_path, monkeypatch, capsys):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    monkeypatch.setattr(eio.tempfile, "mkstemp", _enospc)
    ns.add(["k1"], torch.ones(1, 4))
    ns.add(["k2"], torch.zeros(1, 4))
    assert ns.missing(["k1", "k2"]) == [] and chunks(str(tmp_path)) == []
    assert capsys.readouterr().out.count("cannot be written") == 1


def test_a_full_disk_is_one_line_naming_path_and_size(tmp_path, monkeypatch):
    real = eio.os.fsync

    def full(fd):
        real(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(eio.os, "fsync", full)
    target = tmp_path / "model.pth.tar-1"
    with pytest.raises(eio.StorageError) as e:
        eio.save_torch({"w": torch.zeros(1000)}, str(target))
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg
    assert str(target) in msg and "No space left on device" in msg and "MiB" in msg
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_a_file_size_limit_is_one_line(tmp_path):
    """Under `ulimit -f` a write past the limit fails with EFBIG (Python ignores SIGXFSZ)."""
    code = ("import resource, torch; from engine.io import save_torch, StorageError\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            f"try:\n    save_torch({{'w': torch.zeros(100000)}}, {str(tmp_path / 'big.pt')!r})\n"
            "except StorageError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR Cannot write") and "File too large" in out.stdout
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []
    assert resource.getrlimit(resource.RLIMIT_FSIZE)  # the limit was the child's only


def _orphan(folder, pid, host=None):
    host = host or eio._HOST
    path = os.path.join(folder, f".results.json.{host}-{pid}.abc123.tmp")
    open(path, "w").close()
    return path


def test_orphans_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "prompt_learner").mkdir()
    gone = _orphan(str(tmp_path / "prompt_learner"), dead.pid)
    live = _orphan(str(tmp_path), os.getpid())
    foreign = _orphan(str(tmp_path), 1, host="otherhost")
    old_foreign = _orphan(str(tmp_path), 2, host="farhost")
    os.utime(old_foreign, (1, 1))
    with run_lock(str(tmp_path)):
        pass
    assert not os.path.exists(gone) and not os.path.exists(old_foreign)
    assert os.path.exists(live) and os.path.exists(foreign)


def test_a_killed_writer_leaves_a_temporary_file_the_next_run_removes(tmp_path):
    code = ("import os, signal\nfrom engine.io import atomic_write\n"
            f"with atomic_write({str(tmp_path / 'results.json')!r}, 'w') as f:\n"
            "    f.write('{')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    left = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(left) == 1
    with run_lock(str(tmp_path)):
        pass
    assert [f for f in os.listdir(tmp_path) if f.endswith(".tmp")] == []


def test_store_folder_orphans_are_removed(tmp_path):
    ns = Namespace(str(tmp_path), "weights", "tfm", 4)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = _orphan(ns.dir, dead.pid)
    Namespace(str(tmp_path), "weights", "tfm", 4)
    assert not os.path.exists(gone)


def test_run_lock_refuses_a_planted_symlink(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    os.symlink(target, run / ".run.lock")
    with pytest.raises(UserError, match="symbolic link"):
        with run_lock(str(run)):
            pass
    assert target.read_text() == "precious"


def test_run_lock_refuses_a_non_regular_file(tmp_path):
    os.mkfifo(tmp_path / ".run.lock")
    with pytest.raises(UserError, match="not a regular file"):
        with run_lock(str(tmp_path)):
            pass

