"""`_BASE_` in yaml files merged by engine.config.merge_file: a file starts from another one."""
import os

import pytest

from engine.config import get_cfg_default, merge_file
from engine.errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def load(path):
    cfg = get_cfg_default()
    merge_file(cfg, path, "config file")
    return cfg


def test_child_values_win_and_nested_keys_merge(tmp_path):
    write(tmp_path / "_base.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.1\nDATALOADER:\n  TRAIN_X:\n    BATCH_SIZE: 256\n"
                                   "INPUT:\n  SIZE: (160, 160)\n")
    child = write(tmp_path / "child.yaml", "_BASE_: _base.yaml\nOPTIM:\n  LR: 0.002\n"
                                           "DATALOADER:\n  TEST:\n    BATCH_SIZE: 64\n")
    cfg = load(child)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR) == ("sgd", 0.002)
    assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.DATALOADER.TEST.BATCH_SIZE) == (256, 64)
    assert cfg.INPUT.SIZE == (160, 160)  # yacs' literal evaluation applies to inherited values too
    assert cfg.OPTIM.MAX_EPOCH == get_cfg_default().OPTIM.MAX_EPOCH


def test_chains_resolve_paths_relative_to_each_including_file(tmp_path, monkeypatch):
    write(tmp_path / "common" / "root.yaml", "OPTIM:\n  NAME: sgd\n  LR: 0.1\n  MAX_EPOCH: 5\n")
    write(tmp_path / "method" / "_base.yaml", "_BASE_: ../common/root.yaml\nOPTIM:\n  LR: 0.01\n  MAX_EPOCH: 7\n")
    leaf = write(tmp_path / "method" / "leaf.yaml", "_BASE_: _base.yaml\nOPTIM:\n  MAX_EPOCH: 9\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load(leaf)
    assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == ("sgd", 0.01, 9)


@pytest.mark.parametrize("files", [
    {"a.yaml": "_BASE_: a.yaml\n"},
    {"a.yaml": "_BASE_: sub/b.yaml\n", "sub/b.yaml": "_BASE_: ../a.yaml\n"},
])
def test_a_cycle_is_an_error_that_names_it(tmp_path, files):
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(ConfigError, match=r"_BASE_ cycle: .*a\.yaml -> .*a\.yaml"):
        load(str(tmp_path / "a.yaml"))


def test_a_missing_base_is_an_error(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: nope.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml: _BASE_ file not found: nope\.yaml"):
        load(child)
    with pytest.raises(ConfigError, match="must be the path of one yaml file"):
        load(write(tmp_path / "list.yaml", "_BASE_: [a.yaml, b.yaml]\n"))


def test_an_unknown_key_in_a_base_is_reported(tmp_path):
    write(tmp_path / "_base.yaml", "OPTIM:\n  LRR: 0.1\n")
    with pytest.raises(ConfigError, match="Did you mean OPTIM.LR"):
        load(write(tmp_path / "child.yaml", "_BASE_: _base.yaml\n"))


def test_files_without_base_load_as_yacs_loads_them():
    from engine.config import get_cfg_all_trainers as defaults
    from engine.recipes import CONFIGS, runnable_configs

    paths = [os.path.join(CONFIGS, m, f) for m in os.listdir(CONFIGS) for f in runnable_configs(os.path.join(CONFIGS, m))]
    plain = [p for p in paths if "_BASE_" not in open(p).read()]
    assert len(plain) > 20
    for path in plain:
        expected = defaults()
        expected.merge_from_file(path)
        cfg = defaults()
        merge_file(cfg, path, "config file")
        assert cfg.dump() == expected.dump(), path
