"""One run per output folder: a config fingerprint (the lock is engine/run_lock.py's).

A rerun into an existing folder resumes (or, when finished, re-reports) what is there, which is
only right when the config is the same. `OUTPUT_DIR/run_config.json` holds the effective config
of the run that made the folder, the method's keys only (engine.record.recorded_config); a rerun
with different values stops with the differing keys (`--overwrite` discards the old run; a new
--output-dir keeps both). Keys that do not change results (engine.record.RESULT_NEUTRAL_KEYS)
are left out. A key the record lacks (a later release added it) compares as its default, and a
recorded key that no longer exists (a release removed it) is noted, so that neither blocks
resuming a run.
"""
import json
import os
import shutil

from .checkpoint import RESUME_FILE
from .checkpointing import STAGED
from .config import get_cfg_all_trainers
from .errors import UserError
from .io import save_json
from .record import RESULT_NEUTRAL_KEYS, config_dict, flatten, recorded_config
from .run_lock import LOCK_FILE

FINGERPRINT_FILE = "run_config.json"
SNAPSHOT_NAMES = (RESUME_FILE, RESUME_FILE + STAGED)  # only this framework writes them

def fingerprint(cfg, trainer, eval_only=False):
    values = {k: v for k, v in recorded_config(cfg, trainer).items() if k not in RESULT_NEUTRAL_KEYS}
    values["<eval-only>"] = bool(eval_only)
    return values


def check_fingerprint(cfg, trainer, eval_only=False, overwrite=False):
    """Record the config of a new run folder, or compare it with the one recorded there."""
    folder = cfg.OUTPUT_DIR
    path = os.path.join(folder, FINGERPRINT_FILE)
    current = fingerprint(cfg, trainer, eval_only)
    if not overwrite:
        stored = _read_record(path, folder)
        if stored is not None and stored != current:
            defaults = fingerprint(get_cfg_all_trainers(), trainer)
            there = {k: stored[k] if k in stored else defaults.get(k, "<unset>") for k in current}
            diff = [f"{k}: {there[k]!r} there{'' if k in stored else ' (default)'}, {current[k]!r} now"
                    for k in sorted(current) if there[k] != current[k]]
            # Keys of other methods or ignored ones (older records hold them) are not compared.
            gone = sorted(set(stored) - set(flatten(config_dict(cfg))) - set(current))
            if gone:
                print(f"Note: {path} records keys this version no longer has; not compared: {', '.join(gone)}")
            if diff:
                raise UserError(
                    f"{folder} holds a run made with another config ({'; '.join(diff)}). Rerunning into it "
                    "would report or resume that run. Use a new --output-dir, or pass --overwrite to discard it.")
    if overwrite and os.path.isdir(folder):
        discard_run(folder)
    os.makedirs(folder, exist_ok=True)
    save_json(current, path)


def _read_record(path, folder):
    """The recorded config, or None where there is none to compare with. A folder that holds
    this framework's results or resume snapshots but no readable record is refused: its config
    is unknown, and a rerun would resume or re-report it as this config's run. Checkpoints
    alone (a run of the reference code, copied here to continue it) are resumed unchecked."""
    problem = None
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                stored = json.load(f)
            if isinstance(stored, dict):
                return stored
            problem = f"is not a mapping of config keys but a {type(stored).__name__}"
        except (OSError, ValueError) as e:
            problem = f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    held = _run_files(folder)
    if problem is None and held and not any(f == "results.json" or f.endswith(SNAPSHOT_NAMES) for f in held):
        print(f"Note: {folder} holds checkpoints without a run record ({FINGERPRINT_FILE}), e.g. from the "
              "reference code; resuming them without comparing configs")
        return None
    if held:
        raise UserError(f"{folder} holds a run ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}) but its "
                        f"record {FINGERPRINT_FILE} {problem or 'is missing'}, so its config cannot be compared with "
                        "this one and a rerun would resume or re-report it under this config. Use a new "
                        "--output-dir, or pass --overwrite to discard it.")
    return None


def _run_files(folder):
    """What a run left in `folder`: results.json and the files of its model folders."""
    if not os.path.isdir(folder):
        return []
    held = ["results.json"] if os.path.isfile(os.path.join(folder, "results.json")) else []
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        if os.path.isdir(sub):
            held += [f"{name}/{f}" for f in sorted(os.listdir(sub)) if ".pth" in f]
    return held


def discard_run(folder):
    """Remove what a run wrote (results, checkpoints, events, fingerprint); logs stay for the record."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name in (LOCK_FILE,) or name.startswith("log.txt"):
            continue
        if os.path.isdir(path):
            shutil.rmtree(path)
        else:
            os.remove(path)
    print(f"--overwrite: discarded the previous run in {folder}")

