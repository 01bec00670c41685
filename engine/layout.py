"""Where runs live: the run-folder layout shared by train.py, sweep.py, studies, analysis and the
shell scripts (the reference scripts' layout, so runs made by any of them are runs of the others).

    few-shot      <root>/<cfg>_<K>shots[/<variant>][/<tag>]/seed<S>     (sweep.py: root = --output-dir;
                  studies and main.sh: root = <output>/<dataset>/<Trainer>)
    evaluation    <output>/<Trainer>/<cfg>[_<K>shots]/<dataset>[/<variant>][/<tag>][/seed<S>]   (zero-shot)
    base-to-new   <output>/base2new/train_base/<dataset>/shots_<K>/<Trainer>/<cfg>[/<variant>][/<tag>]/seed<S>
                  and its new-class evaluation under .../test_new/... (the base-to-new scripts)
    product       <output>/<product>/<dataset>/<tag>_<K>shots: a producer's run, its product installed to
                  <strong_base>/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar (the published layout)

`<variant>` is the method's `run_variant(cfg)` (engine/describe.py); `<tag>` joins KEYvalue for each
grid key (`grid_tag`); `<cfg>` carries `-<backbone_tag>` when a study backbone replaces the
config's. A run is finished when its folder holds results.json; the shell scripts also accept a
log whose training finished and printed a result (runs of the reference code).

    python -m engine.layout finished DIR [--logs]      # exit status 0 when DIR holds a finished run
    python -m engine.layout backbone-tag NAME          # ViT-B/16 -> ViT-B-16
    python -m engine.layout base-tag NAME              # ViT-B/16 -> vitb16
    python -m engine.layout product-path STRONG_BASE DATASET_NAME TAG SHOTS
"""
import argparse
import os
import re
import sys

from .errors import UserError

RESULTS_FILE = "results.json"
LOG_NAME = "log.txt"
TRAIN_END_SIGNAL = "Finish training"
TEST_END_SIGNAL = "=> result"
PRODUCT_FILE = "model.pth.tar"  # the installed product's name (the published strong_base files)
_TIMESTAMPED_LOG = re.compile(r"^log\.txt-\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}$")


# ---------------------------------------------------------------------------------------------
# names


def short_key(key):
    """A config key's last part (OPTIM.LR -> LR)."""
    return key.rsplit(".", 1)[-1]


def grid_tag(combo):
    """The folder tag of grid values: KEYvalue joined by '_' ([(OPTIM.LR, 1e-3)] -> LR1e-3)."""
    return "_".join(f"{short_key(k)}{v}" for k, v in combo)


set_tag = grid_tag  # sweep.py's name for it


def backbone_tag(name):
    """main.sh's folder tag for a backbone override (ViT-B/16 -> ViT-B-16; a file -> its stem)."""
    if os.path.isfile(name) or ("/" in name and "." in name):
        name = os.path.splitext(os.path.basename(name))[0]
    return re.sub(r"[^A-Za-z0-9._:+-]", "-", name).strip("-")


def base_tag(name):
    """enhance_base.sh's product tag: lowercase without '/' and '-' (RN50 -> rn50); a weights file
    is named by its stem."""
    if os.path.isfile(name):
        name = os.path.splitext(os.path.basename(name))[0]
    return name.lower().replace("/", "").replace("-", "")


def config_name(config_file):
    """A config file's stem (configs/trainers/X/rn50_ep50.yaml -> rn50_ep50)."""
    return os.path.splitext(os.path.basename(config_file))[0]


def shots_folder(cfg_name, shots):
    return f"{cfg_name}_{shots}shots"


def seed_folder(seed):
    return "" if seed is None else f"seed{seed}"


def join(*parts):
    """os.path.join of the non-empty parts ("" when there are none)."""
    parts = [str(p) for p in parts if p not in ("", None)]
    return os.path.join(*parts) if parts else ""


# ---------------------------------------------------------------------------------------------
# folders


def run_folder(root, cfg_name, shots, seed, variant="", tag=""):
    """`<root>/<cfg>_<K>shots[/<variant>][/<tag>]/seed<S>` (the few-shot layout)."""
    return join(root, shots_folder(cfg_name, shots), variant, tag, seed_folder(seed))


def evaluation_folder(output, trainer, cfg_name, shots, dataset, variant="", tag="", seed=None):
    """An evaluation-only method's folder: `<output>/<Trainer>/<cfg>[_<K>shots]/<dataset>/...`."""
    return join(output, trainer, shots_folder(cfg_name, shots) if shots > 0 else cfg_name, dataset, variant, tag,
                seed_folder(seed))


def base_to_new_folder(output, dataset, shots, trainer, cfg_name, variant="", tag="", seed=None):
    return join(output, "base2new", "train_base", dataset, f"shots_{shots}", trainer, cfg_name, variant, tag,
                seed_folder(seed))


def new_classes_folder(base_folder):
    """The new-class evaluation of a base-to-new run: train_base -> test_new in its path."""
    marker = f"{os.sep}train_base{os.sep}"
    if marker in base_folder:
        return base_folder.replace(marker, f"{os.sep}test_new{os.sep}", 1)
    return os.path.join(base_folder, "test_new")


def producer_folder(output, product, dataset, tag, shots):
    """The run folder of a producer run: `<output>/<product>/<dataset>/<tag>_<K>shots`."""
    return os.path.join(output, product, dataset, f"{tag}_{shots}shots")


def product_path(strong_base, dataset_name, tag, shots):
    """Where a product is installed: `<strong_base>/<DATASET.NAME>/<tag>_<K>shots/model.pth.tar`."""
    return os.path.join(strong_base, dataset_name, f"{tag}_{shots}shots", PRODUCT_FILE)


def fill_template(text, fields, what, collapse=False):
    """A folder template with its {placeholders} filled; `what` names it in the error for an
    unknown placeholder. `collapse` drops the empty path parts an empty field leaves."""
    try:
        path = text.format(**fields)
    except (KeyError, IndexError) as e:
        raise UserError(f"{what} uses an unknown placeholder {e}; known: "
                        f"{', '.join('{' + k + '}' for k in fields)}") from None
    if not collapse:
        return path
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    return ("/" if path.startswith("/") else "") + "/".join(parts)


# ---------------------------------------------------------------------------------------------
# state


def results_path(folder):
    return os.path.join(folder, RESULTS_FILE)


def find_log(folder):
    """The newest log of a run folder, or None.

    The logger writes log.txt, and `log.txt-YYYY-MM-DD-HH-MM-SS` only when log.txt already exists,
    so any timestamped log is newer than log.txt, and the names of timestamped logs sort in time
    order.
    """
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    stamped = sorted(n for n in names if _TIMESTAMPED_LOG.match(n) and os.path.isfile(os.path.join(folder, n)))
    if stamped:
        return os.path.join(folder, stamped[-1])
    path = os.path.join(folder, LOG_NAME)
    return path if os.path.isfile(path) else None


def has_log(names):
    """True when a folder listing holds a run log."""
    return LOG_NAME in names or any(n.startswith(LOG_NAME + "-") for n in names)


def _log_finished(path):
    """A log with the end of training followed by the result block."""
    trained = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line == TRAIN_END_SIGNAL:
                trained = True
            elif trained and line == TEST_END_SIGNAL:
                return True
    return False


def finished(folder, logs=False):
    """True when the folder holds a finished run: its results.json, or (with `logs`, for runs
    of the reference code, which write none) any log that finished training and printed a result."""
    if os.path.isfile(results_path(folder)):
        return True
    if not logs or not os.path.isdir(folder):
        return False
    return any(_log_finished(os.path.join(folder, n)) for n in sorted(os.listdir(folder))
               if (n == LOG_NAME or n.startswith(LOG_NAME + "-")) and os.path.isfile(os.path.join(folder, n)))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m engine.layout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("finished", help="exit status 0 when DIR holds a finished run, 1 otherwise")
    f.add_argument("dir")
    f.add_argument("--logs", action="store_true", help="a finished log counts too (runs of the reference code)")
    for name in ("backbone-tag", "base-tag"):
        sub.add_parser(name).add_argument("name")
    pp = sub.add_parser("product-path")
    for arg in ("strong_base", "dataset_name", "tag"):
        pp.add_argument(arg)
    pp.add_argument("shots", type=int)
    args = p.parse_args(argv)
    if args.command == "finished":
        return 0 if finished(args.dir, logs=args.logs) else 1
    if args.command == "backbone-tag":
        print(backbone_tag(args.name))
    elif args.command == "base-tag":
        print(base_tag(args.name))
    else:
        print(product_path(args.strong_base, args.dataset_name, args.tag, args.shots))
    return 0


if __name__ == "__main__":
    sys.exit(main())
