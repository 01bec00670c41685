"""A trainer file as CoOp-derived repositories ship it, for tests/test_dassl_compat.py: its
module-level extend_cfg re-creates TRAINER.COOP and TRAINER.COCOOP holding only the reference
CoOp keys (N_CTX, CSC, CTX_INIT, PREC, CLASS_TOKEN_POSITION; N_CTX, CTX_INIT, PREC) and sets
DATASET.SUBSAMPLE_CLASSES, as CoOp's train.py and every repository built on it do; its trainer
reads TRAINER.COOP. It must run beside this project's CoOp and CoCoOp, which declare more keys
in the same nodes. The prompt learner is prompt_style.py's (random N(0, 0.02) context of N_CTX
generic tokens in front of each class name, as CoOp's default), read from TRAINER.COOP.
"""
import importlib.util
import os
import sys

from yacs.config import CfgNode as CN

from dassl.engine import TRAINER_REGISTRY


def extend_cfg(cfg):
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp16"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"

    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"


def _prompt_style():
    """prompt_style.py under the module name the tests import it by (imported once)."""
    name = "dassl_style_prompt_style"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(__file__), "prompt_style.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@TRAINER_REGISTRY.register()
class CoOpReference(_prompt_style().PromptStyle):
    NODE = "COOP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        # What this file implements of CoOp's options.
        assert not cfg.TRAINER.COOP.CSC and cfg.TRAINER.COOP.CLASS_TOKEN_POSITION == "end"
