"""Studies: many runs (datasets x methods x shots x seeds x keys x backbones) on existing engines.

A study file (configs/studies/*.yaml, read by `spec`) is expanded into independent runs (`plan`),
each one a `train.py` command line with its own run folder. Runs that share (dataset, backbone,
transform) form a group, so one process encodes the group's images once into the feature store
and every other run of the group reads them. The unit of work is `worker.run_group`: it runs the
runs of one group in-process, skipping finished ones, resuming interrupted ones, recording
failures and going on. The backends only decide where `run_group` executes (`backends`):
in this process (`local`), one process per device (`gpus`), or Slurm job arrays through
submitit (`slurm`). Nothing here schedules work inside a run: a run is the same `train.run` a
single command runs.

    python study.py plan configs/studies/taskres_paper.yaml
    python study.py run configs/studies/taskres_paper.yaml --backend gpus
    python study.py status configs/studies/taskres_paper.yaml
    python study.py table configs/studies/taskres_paper.yaml
"""
from .plan import Group, Run, plan_study  # noqa: F401
from .spec import StudyError, load_study  # noqa: F401
