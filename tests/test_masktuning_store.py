"""MASK.TEACHER store: mask tuning on seeded views whose zero-shot features (the teacher) come
from the feature store instead of a teacher pass per batch."""
import os

import pytest
import torch

import clip
from engine.features import ViewBatch, _SeededViews
from runs import results, run, run_killed
from test_masktuning import make_trainer, mask_some, mt_args


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from synthetic.layouts import write_eurosat

    root = tmp_path_factory.mktemp("data")
    write_eurosat(str(root), per_class=12)
    return str(root)


def store_opts(cache, views=2):
    return ("MASK.TEACHER", "store", "FEATURES.NUM_VIEWS", views, "FEATURES.CACHE_DIR", cache,
            "DATALOADER.TRAIN_X.BATCH_SIZE", 8, "OPTIM.LR", 1e-3, "MASK.GDR_LAMBDA", 1.0)


def test_store_teacher_reads_the_zero_shot_features_of_each_view(data_root, tiny_clip_path, tmp_path):
    tr = make_trainer(data_root, tiny_clip_path, str(tmp_path / "out"), *store_opts(str(tmp_path / "cache")))
    mask_some(tr.masks, 0.2)  # the student is no longer zero-shot CLIP; the teacher must be
    batch, labels = next(iter(tr.source.train_batches()))
    assert isinstance(batch, ViewBatch) and batch.images.shape[0] == 8 and set(batch.view.tolist()) <= {0, 1}
    items = tr.dm.dataset.train_x
    for row in range(8):  # every row is the seeded view it names
        i, v = int(batch.index[row]), int(batch.view[row])
        assert int(labels[row]) == items[i].label
        view = _SeededViews([(items[i].impath, v)], tr.dm.tfm_train, True, data_root)[0]
        assert torch.equal(batch.images[row], view)
    stored = tr.teacher_store.train_feats[batch.index, batch.view]
    assert stored.dtype == torch.float16
    reference = clip.load(tiny_clip_path)  # zero-shot CLIP, loaded apart from the run
    with torch.no_grad():
        fresh = reference.encode_image(batch.images).float()
        student = tr.visual(batch.images).float()
    scale = float(fresh.abs().max())
    assert torch.allclose(stored.float(), fresh, rtol=1e-3, atol=1e-3 * scale)  # fp16 storage only
    assert not torch.allclose(student, fresh, rtol=1e-2, atol=1e-2 * scale)
    with torch.no_grad(), tr.masks.off():
        forward_teacher = tr.forward(batch.images)
    teacher = tr.teacher_logits(batch)
    assert (teacher - forward_teacher).abs().max() <= 1e-2 * forward_teacher.abs().max()


@pytest.fixture(scope="module")
def store_runs(data_root, tiny_clip_path, tmp_path_factory):
    base = tmp_path_factory.mktemp("store")
    cache = str(base / "cache")
    a, b = str(base / "a"), str(base / "b")
    run(mt_args(data_root, a, tiny_clip_path, *store_opts(cache), epochs=2))
    run(mt_args(data_root, b, tiny_clip_path, *store_opts(cache), epochs=2))  # the store now holds the views
    return base, cache, a, b


def bits(out, epoch=2):
    return torch.load(os.path.join(out, "shared", f"model.pth.tar-{epoch}"), weights_only=True)["state_dict"]


def test_store_teacher_run_repeats_bit_for_bit_and_skips_the_teacher_pass(store_runs):
    _, _, a, b = store_runs
    ra, rb = results(a), results(b)
    assert ra["extras"]["teacher_encoder"]["images"] == 4 * 10 * 2  # 4 shots x 10 classes x 2 views
    assert rb["extras"]["teacher_encoder"]["images"] == 0  # read from the store: no teacher pass at all
    assert ra["extras"]["masked_entries"] > 0  # the masks did train
    ma, mb = bits(a), bits(b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert ra["accuracy"] == rb["accuracy"]


def test_store_teacher_resume_equals_uninterrupted(store_runs, data_root, tiny_clip_path, monkeypatch):
    base, cache, a, _ = store_runs

    part = str(base / "part")
    run_killed(mt_args(data_root, part, tiny_clip_path, *store_opts(cache), epochs=2), 1, monkeypatch)
    run(mt_args(data_root, part, tiny_clip_path, *store_opts(cache), epochs=2))
    ma, mp = bits(a), bits(part)
    assert all(torch.equal(ma[k], mp[k]) for k in ma)
    assert results(a)["accuracy"] == results(part)["accuracy"]


def test_lambda0_with_store_views_encodes_no_teacher(data_root, tiny_clip_path, tmp_path):
    out = str(tmp_path / "plain")
    opts = store_opts(str(tmp_path / "cache"))[:-2] + ("MASK.GDR_LAMBDA", 0.0)
    run(mt_args(data_root, out, tiny_clip_path, *opts, epochs=1))
    assert results(out)["extras"]["teacher_encoder"]["images"] == 0

