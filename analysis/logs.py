"""Reading a run's result from its log (the reference's `* accuracy: X%` lines) and its results.json.

The logs are the reference's: a training run prints `Finish training`, then the test block
`=> result` with `* <keyword>: X%` lines; an evaluation-only run prints only the test block.
parse_test_res.py, analysis/runs.py and the study tables read runs through these functions.
"""
import json
import os
import re
from dataclasses import dataclass, field
from typing import List

from engine.layout import LOG_NAME, RESULTS_FILE, TEST_END_SIGNAL, TRAIN_END_SIGNAL, find_log  # noqa: F401
from engine.selection import tier_of

RESULTS_JSON = RESULTS_FILE


class RunSkipped(Exception):
    """A run folder that has no usable result; the message says why."""


@dataclass
class RunResult:
    run_dir: str
    source: str  # the file the value was taken from (the log or results.json)
    value: float
    log: str
    notes: List[str] = field(default_factory=list)
    selection: str = "unknown"  # the selection tier its results.json records (engine.selection)


def end_signal(test_log=False):
    return TEST_END_SIGNAL if test_log else TRAIN_END_SIGNAL


def metric_regex(keyword):
    return re.compile(r"\* {}: ([\.\deE+-]+)%".format(re.escape(keyword)))


def parse_log(path, keyword="accuracy", signal=TRAIN_END_SIGNAL):
    """Return (value, text) of the last `* keyword: X%` line after the end signal, or (None, None)."""
    regex = metric_regex(keyword)
    seen_signal = False
    found = (None, None)
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line == signal:
                seen_signal = True
            if not seen_signal:
                continue
            match = regex.search(line)
            if match:
                try:
                    found = (float(match.group(1)), match.group(1))
                except ValueError:
                    continue
    return found


def _printed_tolerance(text):
    """Half a unit of the last digit printed in `text` (how far the unrounded value can be)."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    scale = 10.0 ** int(exponent) if exponent.lstrip("+-").isdigit() else 1.0
    return 0.5 * 10.0 ** (-decimals) * scale + 1e-9


def read_results_json(run_dir, keyword, with_tier=False):
    """Return (value or None, note or None) from run_dir/results.json; with_tier: (value, note,
    selection tier) (engine.selection.tier_of: "unknown" without a results.json)."""
    path = os.path.join(run_dir, RESULTS_JSON)
    data = {}
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            return (None, f"cannot read {path} ({e}); using the log value") + (("unknown",) if with_tier else ())
    data = data if isinstance(data, dict) else {}
    tier = (tier_of(data),) if with_tier else ()
    value = data.get(keyword)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return (None, None) + tier
    return (float(value), None) + tier


def parse_run(run_dir, keyword="accuracy", test_log=False, from_log=False):
    """Parse one run folder; raise RunSkipped with the reason when it has no result.

    The newest log decides whether the run has a result (the end signal followed by a
    `* keyword:` line). If it does and results.json agrees with it to the printed precision,
    the full-precision value from results.json is returned. A results.json that disagrees is
    taken to be left over from another run and ignored (with a note).
    """
    signal = end_signal(test_log)
    log = find_log(run_dir)
    if log is None:
        raise RunSkipped(f"no {LOG_NAME}")
    value, text = parse_log(log, keyword, signal)
    if value is None:
        raise RunSkipped(f'no "* {keyword}:" result after "{signal}" in {os.path.basename(log)}')
    result = RunResult(run_dir=run_dir, source=log, value=value, log=log)
    if from_log:
        return result
    precise, note, result.selection = read_results_json(run_dir, keyword, with_tier=True)
    if note:
        result.notes.append(note)
    if precise is None:
        return result
    if abs(precise - value) <= _printed_tolerance(text):
        result.value = precise
        result.source = os.path.join(run_dir, RESULTS_JSON)
    else:
        result.notes.append(
            f"{os.path.join(run_dir, RESULTS_JSON)} says {keyword} {precise:g}% but "
            f"{os.path.basename(log)} says {text}%; using the log (results.json is from another run)")
    return result
