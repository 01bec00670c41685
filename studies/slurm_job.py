"""The job callable of the slurm backend (imported only there: it needs submitit).

submitit pickles `GroupJob()` with the group's runs. On a timeout or a preemption signal it
calls `checkpoint`, which resubmits the same callable with the same runs (submitit's
Checkpointable protocol); the requeued job skips the runs that finished and `train.py` resumes
the interrupted one from the rolling checkpoint in its folder.
"""
import submitit

from .plan import Run
from .worker import run_group


class GroupJob(submitit.helpers.Checkpointable):
    def __call__(self, runs):
        return run_group([Run.from_dict(r) for r in runs])
