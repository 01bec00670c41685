"""Where the groups of a study execute. Every backend calls the same unit of work,
`worker.run_group(runs)`; none of them schedules anything inside a run.

- `local`: sequentially in this process, with one ModelCache for the whole study (sweep.py's
  way); prints a progress bar and an ETA before each run.
- `gpus`: one worker process per device (`--devices 0,1,2` or every visible GPU; `cpu` entries
  make CPU workers), each with CUDA_VISIBLE_DEVICES set to its device. A worker process runs one
  group and exits; the next ready group, largest first, goes to the device that frees up.
  Worker output: <output>/.study/<name>/logs/<group>.log.
- `slurm`: submitit job arrays, one array task per group, resources and time limits from the
  study's `slurm:` section (per dataset or group under `groups:`). The job callable is
  checkpointable: on timeout or preemption submitit requeues it and the requeued job calls
  `run_group` again, which skips the finished runs and resumes the interrupted one from its
  checkpoint. `--cluster local` runs the same jobs through submitit's local executor.

A group whose runs need another group's runs (DG evaluations, enhanced bases made elsewhere)
starts when that group has finished.
"""
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import time

from engine.recipes import REPO

from .plan import save_group
from .spec import StudyError
from .state import run_states
from .worker import run_group

POLL_S = 2.0


def _hms(seconds):
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def _todo(group):
    return [r for r in group.runs if not os.path.exists(r.done_path)]


class LocalProgress:
    """A text progress bar with an ETA, printed before each run (run output goes between)."""

    def __init__(self, runs, out=None, width=30):
        self.total = len(runs)
        self.done = sum(os.path.exists(r.done_path) for r in runs)
        self.failed = 0
        self.busy = 0  # held by another live process (its lock): running there, not failed
        self.executed, self.spent = 0, 0.0
        self.start = time.time()
        self.out, self.width = out, width

    def __call__(self, run, state, seconds):
        if state == "start":
            self.show(run)
            return
        if state in ("done", "failed"):
            self.executed += 1
            self.spent += seconds
        if state == "done":
            self.done += 1
        elif state in ("failed", "blocked"):
            self.failed += 1
        elif state == "busy":
            self.busy += 1

    def eta(self):
        if not self.executed:
            return "?"
        left = self.total - self.done - self.failed - self.busy
        return _hms(self.spent / self.executed * left)

    def show(self, run=None):
        frac = (self.done + self.failed + self.busy) / max(self.total, 1)
        bar = "#" * int(frac * self.width) + "." * (self.width - int(frac * self.width))
        busy = f", {self.busy} busy (run by another process)" if self.busy else ""
        line = (f"[study] [{bar}] {self.done}/{self.total} done, {self.failed} failed{busy} | "
                f"elapsed {_hms(time.time() - self.start)}, ETA {self.eta()}")
        if run is not None:
            line += f"\n[study] next: {os.path.relpath(run.out)}"
        print(line, file=self.out or sys.stdout, flush=True)  # the stream of the moment (None: sys.stdout)


def run_local(study, groups):
    from engine.models import ModelCache

    runs = [r for g in groups for r in g.runs]
    progress = LocalProgress(runs)
    models = ModelCache()
    for group in groups:
        if _todo(group):
            run_group(group.runs, models=models, on_run=progress)
    progress.show()


# ---------------------------------------------------------------------------------------------
# shared by gpus and slurm: start groups when the groups they need are finished


class Scheduler:
    """Hands ready groups (their needed groups finished), largest first, to `launch`;
    `launch(groups)` returns {group id: handle}; `finished(handle)` says when one is over."""

    def __init__(self, study, groups, capacity=None):
        self.study, self.groups = study, groups
        self.capacity = capacity  # None: every ready group at once (job arrays)
        self.pending = [g for g in groups]
        self.active, self.over = {}, set()
        self.all_runs = [r for g in groups for r in g.runs]

    def ready(self):
        return [g for g in self.pending if all(n in self.over for n in g.needs)]

    def loop(self, launch, finished, on_poll=None):
        while self.pending or self.active:
            for g in [g for g in self.ready() if not _todo(g)]:  # nothing left: no process needed
                self.pending.remove(g)
                self.over.add(g.id)
            free = None if self.capacity is None else self.capacity - len(self.active)
            batch = self.ready()[:free] if free is None or free > 0 else []
            if batch:
                for g in batch:
                    self.pending.remove(g)
                self.active.update(launch(batch))
            for gid, handle in list(self.active.items()):
                if finished(gid, handle):
                    del self.active[gid]
                    self.over.add(gid)
            if on_poll is not None:
                on_poll()
            if self.pending and not self.active and not self.ready():
                raise StudyError("groups wait on each other; this is a bug in the plan")
            if self.active or self.pending:
                time.sleep(POLL_S)


class BarProgress:
    """A tqdm bar over the study's runs, updated from the run folders."""

    def __init__(self, runs, every_s=10.0):
        from tqdm import tqdm

        self.runs, self.every_s, self.last = runs, every_s, 0.0
        done = sum(os.path.exists(r.done_path) for r in runs)
        self.bar = tqdm(total=len(runs), initial=done, desc="study", unit="run", dynamic_ncols=True)
        self.done = done

    def __call__(self, force=False):
        if not force and time.time() - self.last < self.every_s:
            return
        self.last = time.time()
        done = sum(os.path.exists(r.done_path) for r in self.runs)
        if done > self.done:
            self.bar.update(done - self.done)
            self.done = done
        states = run_states(self.runs)
        self.bar.set_postfix(running=states.get("running", 0), failed=states.get("failed", 0), refresh=True)

    def close(self):
        self(force=True)
        self.bar.close()


def visible_devices():
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d for d in env.split(",") if d.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def with_repo(pythonpath):
    """PYTHONPATH with the repository first, so worker processes import studies."""
    parts = [p for p in pythonpath.split(os.pathsep) if p and p != REPO]
    return os.pathsep.join([REPO] + parts)


def worker_env(device, n_workers):
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "" if device == "cpu" else device
    env["PYTHONPATH"] = with_repo(env.get("PYTHONPATH", ""))
    if "OMP_NUM_THREADS" not in os.environ:  # share the cores between the workers
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // n_workers))
    return env


def run_gpus(study, groups, devices=None):
    devices = list(devices or visible_devices())
    if not devices:
        raise StudyError("no GPU is visible: pass --devices (e.g. --devices 0,1, or --devices cpu,cpu for CPU "
                         "workers) or use --backend local")
    state = study.state_dir
    os.makedirs(os.path.join(state, "groups"), exist_ok=True)
    os.makedirs(os.path.join(state, "logs"), exist_ok=True)
    free = list(range(len(devices)))
    slot_of, procs = {}, {}
    print(f"[study] {len(groups)} groups on {len(devices)} workers ({', '.join(devices)}); worker logs in "
          f"{os.path.join(state, 'logs')}", flush=True)

    def launch(batch):
        out = {}
        for g in batch:
            slot = free.pop(0)
            path = os.path.join(state, "groups", f"{g.id}.json")
            save_group(g, path)
            log = open(os.path.join(state, "logs", f"{g.id}.log"), "a", encoding="utf-8")
            log.write(f"\n===== {datetime.datetime.now().isoformat(timespec='seconds')} group {g.id} on "
                      f"device {devices[slot]} =====\n")
            log.flush()
            proc = subprocess.Popen([sys.executable, "-m", "studies.worker", path], stdout=log,
                                    stderr=subprocess.STDOUT, env=worker_env(devices[slot], len(devices)))
            log.close()
            slot_of[g.id], procs[g.id] = slot, proc
            out[g.id] = proc
        return out

    def finished(gid, proc):
        code = proc.poll()
        if code is None:
            return False
        if code not in (0, 1):  # 1: some runs failed, recorded in their folders
            print(f"[study] the worker of group {gid} exited with status {code}; see "
                  f"{os.path.join(state, 'logs', gid + '.log')}", file=sys.stderr, flush=True)
        free.append(slot_of.pop(gid))
        free.sort()
        procs.pop(gid)
        return True

    progress = BarProgress([r for g in groups for r in g.runs])
    try:
        Scheduler(study, groups, capacity=len(devices)).loop(launch, finished, progress)
    except KeyboardInterrupt:
        stop_workers(procs.values())
        raise
    finally:
        progress.close()


def stop_workers(procs, grace_s=10):
    """SIGTERM (a worker releases its run locks and exits), then SIGKILL after `grace_s`."""
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.time() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


# ---------------------------------------------------------------------------------------------
# slurm (submitit)

ALIASES = {"partition": "slurm_partition", "array_parallelism": "slurm_array_parallelism",
           "account": "slurm_account", "qos": "slurm_qos", "constraint": "slurm_constraint",
           "additional_parameters": "slurm_additional_parameters", "setup": "slurm_setup"}
DEFAULT_SLURM = {"timeout_min": 240, "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "nodes": 1,
                 "tasks_per_node": 1}


def group_resources(study, group):
    """submitit parameters of a group: the study's slurm: keys, then groups: <dataset> or
    groups: <group id> overrides."""
    conf = dict(study.slurm)
    per_group = conf.pop("groups", None) or {}
    for key in ("max_requeues", "cluster"):
        conf.pop(key, None)
    params = dict(DEFAULT_SLURM)
    params.update(conf)
    for key in (group.dataset, group.id):
        params.update(per_group.get(key) or {})
    return {ALIASES.get(k, k): v for k, v in params.items()}


LOCAL_CLUSTERS = ("local", "debug")  # submitit's executors that run on this machine


def require_slurm(cluster):
    """Stop unless Slurm can take the jobs or a local executor was asked for: submitit's automatic
    choice falls back to running every job on this machine, which on a login node is a whole study
    where a submission was meant."""
    if cluster in LOCAL_CLUSTERS or shutil.which("sbatch") is not None:
        return
    raise StudyError(f"--backend slurm{' --cluster ' + cluster if cluster else ''}: Slurm's `sbatch` is not on "
                     f"this machine's PATH, so nothing can be submitted; run it where Slurm is installed, or "
                     f"run here with --backend local (or --backend slurm --cluster local for submitit's local "
                     f"executor)")


def run_slurm(study, groups, cluster=None, detach=False):
    try:
        import submitit
    except ImportError:
        raise StudyError("the slurm backend needs submitit: pip install submitit") from None
    from . import slurm_job

    cluster = cluster or study.slurm.get("cluster")
    require_slurm(cluster)
    folder = os.path.join(study.state_dir, "submitit")
    kwargs = {}
    if "max_requeues" in study.slurm:
        kwargs["slurm_max_num_timeout"] = int(study.slurm["max_requeues"])
    executor = submitit.AutoExecutor(folder=os.path.join(folder, "%j"), cluster=cluster, **kwargs)
    # Jobs run `python -m submitit.core._submit` from this folder; they import studies from REPO.
    os.environ["PYTHONPATH"] = with_repo(os.environ.get("PYTHONPATH", ""))
    jobs_file = os.path.join(study.state_dir, "jobs.json")
    print(f"[study] submitit executor: {executor.cluster}; job folders under {folder}", flush=True)

    def launch(batch):
        buckets = {}
        for g in batch:
            params = group_resources(study, g)
            if executor.cluster != "slurm":
                params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
            buckets.setdefault(json.dumps(params, sort_keys=True, default=str), (params, []))[1].append(g)
        out = {}
        for params, bucket in buckets.values():
            executor.update_parameters(name=f"study-{study.name}", **params)
            with executor.batch():
                jobs = [executor.submit(slurm_job.GroupJob(), [r.to_dict() for r in g.runs]) for g in bucket]
            for g, job in zip(bucket, jobs):
                out[g.id] = job
                print(f"[study] group {g.id} ({len(g.runs)} runs): job {job.job_id}", flush=True)
        _record_jobs(jobs_file, {gid: job.job_id for gid, job in out.items()})
        return out

    def finished(gid, job):
        if not job.done():
            return False
        try:
            job.result()
        except Exception as e:  # noqa: BLE001 - report the job's failure, keep the study going
            print(f"[study] group {gid}: job {job.job_id} failed: {str(e).strip().splitlines()[-1:]} "
                  f"(log: {job.paths.stderr})", file=sys.stderr, flush=True)
        return True

    sched = Scheduler(study, groups)
    if detach:
        ready = [g for g in sched.ready() if _todo(g)]
        launch(ready)
        later = len([g for g in groups if _todo(g)]) - len(ready)
        print(f"[study] submitted {len(ready)} groups; {later} wait for them: run this command again when "
              f"they have finished (study.py status shows progress)", flush=True)
        return
    progress = BarProgress([r for g in groups for r in g.runs])
    try:
        sched.loop(launch, finished, progress)
    finally:
        progress.close()


def _record_jobs(path, jobs):
    from engine.io import save_json

    try:
        with open(path, encoding="utf-8") as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    known.update(jobs)
    save_json(known, path)
