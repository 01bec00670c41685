"""The trainer's checkpoints: saving, resume, loading a trained model (`Checkpointing`, a base
of `engine.trainer.Trainer`; the file format is `engine.checkpoint`'s).

Every load (resume, --eval-only, best-val restore) goes one way, `restore(name, state, path)`:

    check_loaded(name, checkpoint)        the method compares the checkpoint's extras with its run
    class rows                            per-class entries follow this run's classes (below)
    adapt_loaded_state(name, state_dict)  the method's own reshaping
    decode_state(name, state_dict, path)  a stored layout into the module's tensors
    strict load                           only `ignored_load_keys` may be missing or extra

Class rows: a 1000-row checkpoint evaluated on an ImageNet subset (a dataset with
`class_indices_1k`: ImageNet-A/R, base/new halves) keeps the rows those indices name (ImageNet's
class names hold duplicates, so indices, not names); the method then sees the checkpoint's class
names as this run's. Otherwise the `per_class_keys` rows of a checkpoint trained on other classes
(base -> new) are matched by class name, and classes never seen keep the freshly built rows.
"""
import os

import torch

from . import checkpoint as ckpt
from .classes import remap_class_rows
from .errors import UserError
from .record import plain

FIT_FILE = "model-fit.pth.tar"  # closed-form methods: the fitted model (no epochs)
BEST_FILE = "model-best.pth.tar"
STAGED = ".next"  # a rolling file of a multi-model save, written before any of them is replaced
IMAGENET_CLASSES = 1000


class Checkpointing:
    source_finished = True  # False: load_model read a run that has not finished (results.json "finished")
    ignored_load_keys = ()
    per_class_keys = ()
    # {state-dict key: class dimension} of per-class entries laid out otherwise than
    # per_class_keys' rows; they are sliced for ImageNet subsets and the method matches them by
    # name itself (adapt_loaded_state). None: per_class_keys, dimension 0.
    class_dims = None

    # ---- hooks -------------------------------------------------------------------------------
    def checkpoint_weights(self, name, with_rng):
        """Hook: (state dict, optimizer state) that a checkpoint of model `name` holds; the
        resume snapshot (`with_rng`) must keep all an exact resume needs."""
        optim = self._optims[name]
        return ckpt.strip_module(self._models[name].state_dict()), optim.state_dict() if optim is not None else None

    def checkpoint_extras(self, name):
        """Hook: plain values saved beside the state dict (e.g. settings needed to reuse it)."""
        return {}

    def check_loaded(self, name, checkpoint):
        """Hook: compare a loaded checkpoint's extras with this run's config."""

    def adapt_loaded_state(self, name, state_dict):
        """Hook: reshape a loaded state dict for this run."""
        return state_dict

    def decode_state(self, name, state_dict, path):
        """Hook: turn a stored state dict into the module's tensors (e.g. bit-packed masks into
        scores)."""
        return state_dict

    # ---- saving ------------------------------------------------------------------------------
    def save_epoch_checkpoints(self):
        """The checkpoints at the end of epoch `self.epoch`: model.pth.tar-<N> every
        TRAIN.CHECKPOINT_FREQ epochs and at the last, the resume snapshot every TRAIN.RESUME_FREQ
        epochs and after every periodic checkpoint before the last. A periodic checkpoint holds
        no RNG state (and, for MaskTuning, bit-packed masks without Adam's moments), so the
        snapshot written after it is what a kill right then resumes from, exactly."""
        epoch, cfg = self.epoch, self.cfg.TRAIN
        last = epoch + 1 >= self.max_epoch
        periodic = cfg.CHECKPOINT_FREQ > 0 and (epoch + 1) % cfg.CHECKPOINT_FREQ == 0
        if last or periodic:
            self.save_model(epoch, self.output_dir)
        if not last and (periodic or (cfg.RESUME_FREQ > 0 and (epoch + 1) % cfg.RESUME_FREQ == 0)):
            self.save_model(epoch, self.output_dir, model_name=ckpt.RESUME_FILE, with_rng=True, quiet=True)

    def save_model(self, epoch, directory, val_result=None, model_name="", with_rng=False, quiet=False):
        """Every registered model's checkpoint `model_name` (default model.pth.tar-<epoch + 1>).
        The `checkpoint` pointer moves only to a file resume can continue from exactly: not to
        model-best.pth.tar, nor to a periodic checkpoint before the last epoch. With several
        models the files are one unit: all are written first (a rolling file under a staging
        name), then moved in place with the pointers, so that a kill in between leaves an epoch
        every model has (resume_model_if_exist finds it)."""
        filename = model_name or f"model.pth.tar-{epoch + 1}"
        pointer = filename != BEST_FILE and (bool(model_name) or epoch + 1 >= self.max_epoch)
        unit = pointer and len(self._models) > 1
        staged = []
        for name in self._models:
            target = os.path.join(directory, name, filename)
            write_as = filename + STAGED if unit and os.path.exists(target) else filename
            if write_as != filename:
                staged.append(name)
            state = self._checkpoint_state(name, epoch, val_result, with_rng)
            # The rolling snapshot is rewritten every epoch; skip fsync there (a process crash
            # keeps the rename atomic; only a power loss could lose the latest snapshot).
            ckpt.save_checkpoint(state, directory, name, write_as, fsync=not with_rng, pointer=pointer and not unit)
            if not quiet:
                print(f"Checkpoint saved to {target}")
        if unit:
            for name in self._models:
                if name in staged:
                    target = os.path.join(directory, name, filename)
                    os.replace(target + STAGED, target)
                ckpt.write_pointer(directory, name, filename)

    def _checkpoint_state(self, name, epoch, val_result, with_rng):
        sched = self._scheds[name]
        weights, optim_state = self.checkpoint_weights(name, with_rng)
        state = {
            "state_dict": weights,
            "epoch": epoch + 1,
            "optimizer": optim_state,
            "scheduler": sched.state_dict() if sched is not None else None,
            "val_result": val_result,
            # Which classes the per-class rows belong to (base-to-new evaluation).
            "classnames": list(self.dm.classnames),
        }
        if getattr(self, "selection", None) is not None:
            # What the run chose on data so far (engine.selection): a run loading this inherits it.
            state["selection"] = plain(self.selection.summary())  # plain values: weights_only loading
        if self.grad_scaler is not None:
            state["scaler"] = self.grad_scaler.state_dict()
        state.update(self.checkpoint_extras(name))
        if with_rng:
            state["rng"] = ckpt.rng_state()
        if self.best_result > -float("inf"):
            state["best_result"] = float(self.best_result)  # TEST.FINAL_MODEL best_val after resume
        return state

    # ---- loading -----------------------------------------------------------------------------
    def resume_model_if_exist(self, directory):
        states = self._resume_states(directory)
        if not states:
            print("No checkpoint found, train from scratch")
            return 0
        print(f"Found checkpoint at {directory} (will resume training)")
        start = 0
        for name, (path, state) in states.items():
            print(f'Loading checkpoint from "{path}"')
            self.restore(name, state, path)
            print("Loaded model weights")
            if self._optims[name] is not None and state.get("optimizer"):
                self._optims[name].load_state_dict(state["optimizer"])
                print("Loaded optimizer")
            if self._scheds[name] is not None and state.get("scheduler"):
                self._scheds[name].load_state_dict(state["scheduler"])
                print("Loaded scheduler")
            elif self._scheds[name] is not None and "epoch" in state:
                # A Dassl-written checkpoint pickles its scheduler object, which is not read: the
                # per-epoch schedule only needs the number of finished epochs.
                self._scheds[name].load_state_dict({"last_epoch": int(state["epoch"])})
                print(f"Scheduler set to epoch {state['epoch']}")
            if self.grad_scaler is not None and state.get("scaler"):
                self.grad_scaler.load_state_dict(state["scaler"])
            if state.get("best_result") is not None:
                self.best_result = float(state["best_result"])
            if "rng" in state:
                ckpt.set_rng_state(state["rng"])
            start = self.model_epoch = state["epoch"]
        print(f"Previous epoch: {start}")
        return start

    def _resume_states(self, directory):
        """{model name: (path, state)} that resume continues from, one epoch for every model;
        None without one. The pointers' files normally agree; a run killed between two models'
        saves leaves them an epoch apart, and all then resume from the last epoch they share."""
        paths = {name: ckpt.read_pointer(directory, name) for name in self._models}
        if not paths or all(p is None for p in paths.values()):
            return None
        states = {name: (p, ckpt.load_checkpoint(p, self.device)) for name, p in paths.items() if p is not None}
        epochs = {name: int(s.get("epoch", 0)) for name, (_, s) in states.items()}
        if len(states) == len(paths) and len(set(epochs.values())) == 1:
            return states
        found = {name: self._resume_points(directory, name) for name in self._models}
        shared = set.intersection(*(set(f) for f in found.values()))
        latest = ", ".join(f"{name} epoch {epochs[name]}" if name in epochs else f"{name} none" for name in paths)
        if not shared:
            print(f"The models' latest checkpoints are from different epochs ({latest}), as a run killed "
                  "while saving leaves them, and no epoch can be resumed for all; training from scratch")
            return None
        epoch = max(shared)
        print(f"The models' latest checkpoints are from different epochs ({latest}), as a run killed while "
              f"saving leaves them: resuming every model from epoch {epoch}, the last they share")
        states = {}
        for name in self._models:
            path = found[name][epoch]
            if path.endswith(STAGED):  # a unit written in full but not yet moved in place
                os.replace(path, path[:-len(STAGED)])
                path = path[:-len(STAGED)]
            stale = os.path.join(directory, name, ckpt.RESUME_FILE + STAGED)
            if os.path.exists(stale):  # of an epoch after the one resumed
                os.remove(stale)
            ckpt.write_pointer(directory, name, os.path.basename(path))
            states[name] = (path, ckpt.load_checkpoint(path, self.device))
        return states

    def _resume_points(self, directory, name):
        """{epoch: path} of the files in model `name`'s folder that an exact resume can
        start from: snapshots (they hold RNG states), staged or not, and last-epoch checkpoints."""
        folder = os.path.join(directory, name)
        points = {}
        for filename in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if filename.endswith(".tmp") or not (filename.startswith((ckpt.RESUME_FILE, "model.pth.tar-"))):
                continue
            path = os.path.join(folder, filename)
            try:
                state = ckpt.load_checkpoint(path, self.device)
            except UserError:
                continue  # a damaged file is not a resume point
            epoch = int(state.get("epoch", 0))
            if "rng" in state or epoch >= self.max_epoch:
                points.setdefault(epoch, path)
        return points

    def load_model(self, directory, epoch=None):
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self._models:
            path = self._model_path(directory, name, epoch)
            state = ckpt.load_checkpoint(path, self.device)
            self.restore(name, state, path, announce=True)
            own = os.path.abspath(directory) == os.path.abspath(self.output_dir)  # best-val restore
            if not own and any(os.path.isfile(os.path.join(directory, name, f))
                               for f in (ckpt.RESUME_FILE, ckpt.RESUME_FILE + STAGED)):
                # Only a run that has not finished keeps its resume snapshot.
                self.source_finished = False
        if not self.source_finished:
            print(f"Warning: {directory} is an unfinished run (it stopped after epoch {self.model_epoch} and keeps "
                  "its resume snapshot): this evaluates that epoch's model, not the run's final one; "
                  "results.json records finished: false")

    def _model_path(self, directory, name, epoch):
        filename = BEST_FILE if epoch is None else f"model.pth.tar-{epoch}"
        path = os.path.join(directory, name, filename)
        if epoch is None and not os.path.isfile(path):
            # No best-val model: a closed-form fit, or whatever the `checkpoint` file names.
            path = ckpt.read_pointer(directory, name) or path
        if not os.path.isfile(path):
            hint = ""
            folder = os.path.join(directory, name)
            if os.path.isdir(folder):
                found = sorted(f for f in os.listdir(folder) if f.startswith("model"))
                hint = f" Files there: {', '.join(found) or 'none'}."
                if epoch is None:
                    hint += " Pass --load-epoch N to load model.pth.tar-N."
            raise UserError(f'Model not found at "{path}".{hint}')
        return path

    def restore(self, name, state, path, announce=False):
        """Load checkpoint `state` (read from `path`) into model `name`: the one way every load
        goes (see the module docstring). `announce`: take and print the checkpoint's epoch."""
        module = self._models[name]
        state_dict = ckpt.strip_module(state["state_dict"])
        trained = state.get("classnames")
        state_dict, sliced = self._slice_imagenet_rows(state_dict, trained)
        if sliced:
            state = dict(state, state_dict=state_dict, classnames=list(self.dm.classnames))
            trained = state["classnames"]
        self.check_loaded(name, state)
        self._check_class_overlap(name, state_dict, trained, path)
        if getattr(self, "selection", None) is not None:
            self.selection.inherit(state.get("selection"))
        state_dict = self._remap_classes(module, state_dict, trained)
        state_dict = self.adapt_loaded_state(name, state_dict)
        if announce:
            self.model_epoch = state.get("epoch", 0)
            print(f'Loading weights to {name} from "{path}" (epoch = {self.model_epoch})')
        self._load_state(name, module, self.decode_state(name, state_dict, path), path)

    def _class_dims(self):
        return self.class_dims if self.class_dims is not None else dict.fromkeys(self.per_class_keys, 0)

    def _slice_imagenet_rows(self, state_dict, trained):
        """(state dict, sliced): a 1000-class ImageNet checkpoint on an ImageNet subset keeps the
        rows `class_indices_1k` names."""
        indices = getattr(self.dm.dataset, "class_indices_1k", None)
        dims = {k: d for k, d in self._class_dims().items() if k in state_dict}
        if indices is None or not dims or (trained is not None and list(trained) == list(self.dm.classnames)):
            return state_dict, False
        rows = state_dict[next(iter(dims))].shape[next(iter(dims.values()))]
        if rows == IMAGENET_CLASSES and (trained is None or len(trained) == IMAGENET_CLASSES):
            index = torch.as_tensor(list(indices), dtype=torch.long)
            return {k: v.index_select(dims[k], index.to(v.device)) if k in dims else v
                    for k, v in state_dict.items()}, True
        if trained is None:
            raise UserError(f"{self.cfg.DATASET.NAME} evaluates a 1000-class ImageNet classifier or one with "
                            f"class names, but the checkpoint has {rows} classes and no class names")
        return state_dict, False  # rows follow the class names

    def _check_class_overlap(self, name, state_dict, trained, path):
        """Per-class entries trained on classes none of which this dataset has would all be
        replaced by the zero-shot rows: the result would be zero-shot CLIP under this method's name.
        Base-to-new evaluation (DATASET.SUBSAMPLE_CLASSES new) shares no class by design."""
        keys = [k for k in self._class_dims() if k in state_dict]
        if (not keys or trained is None or set(trained) & set(self.dm.classnames)
                or self.cfg.DATASET.SUBSAMPLE_CLASSES != "all"):
            return
        if self.cfg.TEST.CROSS_DATASET:
            print(f"TEST.CROSS_DATASET: {name}'s per-class entries ({', '.join(keys)}) have no class of "
                  f"{self.cfg.DATASET.NAME}; they fall back to the zero-shot rows")
            self.record.setdefault("zero_shot_fallback", []).extend(f"{name}.{k}" for k in keys)
            return
        raise UserError(f'Checkpoint "{path}" ({name}) was trained on classes none of which '
                        f"{self.cfg.DATASET.NAME} has (e.g. {', '.join(list(trained)[:3])}; here: "
                        f"{', '.join(list(self.dm.classnames)[:3])}): its per-class entries ({', '.join(keys)}) "
                        "would all be replaced by zero-shot rows. Evaluate it on the dataset it was trained on, "
                        "or set TEST.CROSS_DATASET True for a cross-dataset transfer (scripts/xd_test.sh does).")

    def _remap_classes(self, module, state_dict, trained_classnames):
        """A checkpoint trained on other classes (base -> new): rows of `per_class_keys` follow
        the class names; classes never trained on keep the freshly built rows (zero-shot)."""
        current = list(self.dm.classnames)
        if not self.per_class_keys or trained_classnames is None or list(trained_classnames) == current:
            return state_dict
        state_dict, unseen = remap_class_rows(state_dict, module.state_dict(), self.per_class_keys,
                                              list(trained_classnames), current)
        print(f"{len(unseen)} of {len(current)} classes were not seen in training; their rows of "
              f"{', '.join(self.per_class_keys)} come from the zero-shot classifier")
        self.record["unseen_classes_zeroshot"] = len(unseen)
        return state_dict

    def _load_state(self, name, module, state_dict, path):
        broken = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point()
                  and not bool(torch.isfinite(v).all())]
        if broken:
            raise UserError(f'Checkpoint "{path}": {name} holds NaN or infinite values in {", ".join(broken)}; '
                            "the training that wrote it diverged or the file was damaged, and nothing it "
                            "scores would mean anything")
        own = module.state_dict()
        ignored = set(self.ignored_load_keys)
        state_dict = {k: v for k, v in state_dict.items() if k not in ignored}
        missing = [k for k in own if k not in state_dict and k not in ignored]
        unexpected = [k for k in state_dict if k not in own]
        shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            raise UserError(
                f"Checkpoint {path} does not fit {name}: "
                + "; ".join(filter(None, [missing and f"missing keys {missing}",
                                          unexpected and f"unexpected keys {unexpected}",
                                          shapes and "shape mismatch " + ", ".join(shapes)]))
                + ". Was it trained on another dataset (class count) or backbone?")
        module.load_state_dict(state_dict, strict=not ignored)

    def load_init_weights(self):
        """MODEL.INIT_WEIGHTS: copy the entries of a checkpoint (or raw state dict) whose name and
        shape match into the registered modules, as Dassl's load_pretrained_weights does."""
        path = self.cfg.MODEL.INIT_WEIGHTS
        if not path:
            return
        state = ckpt.load_checkpoint(path, self.device)
        state = ckpt.strip_module(state.get("state_dict", state) if isinstance(state, dict) else {})
        for name, module in self._models.items():
            own = module.state_dict()
            matched = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
            if not matched:
                raise UserError(f"MODEL.INIT_WEIGHTS {path}: no entry matches {name} by name and shape "
                                f"(file keys: {', '.join(sorted(state)) or 'none'}; model keys: {', '.join(own)})")
            own.update(matched)
            module.load_state_dict(own)
            discarded = sorted(set(state) - set(matched))
            print(f"Initial weights of {name} loaded from {path} ({len(matched)} tensors)"
                  + (f"; discarded: {', '.join(discarded)}" if discarded else ""))
