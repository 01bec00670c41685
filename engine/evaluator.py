"""Classification metrics and the reference `=> result` block.

Numbers match Dassl's `Classification` evaluator: accuracy and error in %, macro-F1 over the
labels present in the ground truth (a label never predicted counts with F1 0), optional
per-class accuracy. The log keeps Dassl's one-decimal lines for tools that parse them;
`results.json` keeps full precision. Calibration (ECE, class-wise ECE, mean confidence, NLL:
engine.calibration) is reported with every evaluation, in results.json and in lines after
Dassl's (so tools that parse the block read the same lines as before).
"""
from collections import OrderedDict

import numpy as np
import torch

from .errors import UserError
from .calibration import CalibrationMeter, result_lines


def macro_f1(y_true, y_pred):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    scores = []
    for c in np.unique(y_true):
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return 100.0 * float(np.mean(scores)) if scores else 0.0


class Classification:
    def __init__(self, lab2cname=None, per_class=False):
        self.lab2cname = lab2cname or {}
        self.per_class = per_class
        self.reset()

    def reset(self):
        self._true, self._pred = [], []
        self._nonfinite = 0
        self.calibration = CalibrationMeter()

    def process(self, logits, labels):
        # argmax of a NaN row is an arbitrary class: such a score would look like a poor model.
        self._nonfinite += int((~torch.isfinite(logits)).any(1).sum())
        self._pred.append(logits.argmax(1).cpu())
        self._true.append(labels.cpu())
        self.calibration.update(logits, labels)

    def evaluate(self):
        y_true = torch.cat(self._true).numpy() if self._true else np.zeros(0, int)
        y_pred = torch.cat(self._pred).numpy() if self._pred else np.zeros(0, int)
        total = int(y_true.size)
        if self._nonfinite:
            raise UserError(f"{self._nonfinite} of {total} evaluated images got NaN or infinite logits: the model "
                            "computes nothing meaningful (weights diverged or damaged, or an overflow in "
                            "half precision); no accuracy is reported")
        correct = int((y_true == y_pred).sum())
        acc = 100.0 * correct / max(total, 1)
        res = OrderedDict(accuracy=acc, error_rate=100.0 - acc, macro_f1=macro_f1(y_true, y_pred))
        lines = ["=> result", f"* total: {total:,}", f"* correct: {correct:,}",
                 f"* accuracy: {acc:.1f}%", f"* error: {100.0 - acc:.1f}%", f"* macro_f1: {res['macro_f1']:.1f}%"]
        calibration = self.calibration.result()
        lines += result_lines(calibration)
        per_class = []
        if self.per_class:
            lines.append("=> per-class result")
            for label in np.unique(y_true):
                hit = y_pred[y_true == label] == label
                a = 100.0 * hit.mean()
                per_class.append({"label": int(label), "classname": self.lab2cname.get(int(label), ""),
                                  "total": int(hit.size), "correct": int(hit.sum()), "accuracy": a})
                lines.append(f"* class: {label} ({self.lab2cname.get(int(label), '')})\t"
                             f"total: {hit.size:,}\tcorrect: {hit.sum():,}\tacc: {a:.1f}%")
            res["perclass_accuracy"] = float(np.mean([p["accuracy"] for p in per_class])) if per_class else 0.0
            lines.append(f"* average: {res['perclass_accuracy']:.1f}%")
        print("\n".join(lines))
        self.summary = {"total": total, "correct": correct, "accuracy": acc, "error": 100.0 - acc,
                        "macro_f1": res["macro_f1"], **calibration}
        if per_class:
            self.summary["perclass_accuracy"] = res["perclass_accuracy"]
            self.summary["per_class"] = per_class
        return res


def batch_accuracy(logits, labels):
    return 100.0 * (logits.argmax(1) == labels).float().mean().item()
