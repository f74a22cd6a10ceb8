# How jobs run on this machine: warm starts of local jobs (a fork server) and what a job asks of
# the machine (memory and runtime from the config's resources.jobs, GPUs). Rules only declare:
# `resources: **job_resources(<its name>)` and, for the jobs that use a GPU when there is one,
# `**gpu_resources()`.
import functools
import shutil
import subprocess


def job_resources(rule):
    """A rule's memory (times the retry attempt) and runtime: `resources.jobs.<rule>` of the config."""
    r = S.resources.jobs[rule]
    return {"mem_mb": lambda w, attempt: r.mem_mb * attempt, "runtime": r.runtime}


# Local runs: jobs start warm, forked by servers that have their libraries imported, the model
# jobs' server also the prepared checkpoint loaded and checked (actpat.forkserver; seconds less per
# job). Not on a cluster, nor with --use-conda (the jobs' interpreter is another one), nor with
# `fork_server: false`.
_FORK_SERVERS = []


onstart:
    if S.runtime.fork_server and workflow.local_exec and not workflow.touch and not _uses_conda():
        import tempfile

        from actpat import forkserver

        _dir = Path(tempfile.mkdtemp(prefix="actpat-fork-"))
        os.environ[forkserver.ENV] = str(_dir)  # inherited by every job Snakemake starts from here on
        _cap = [c for c in (workflow.cores, workflow.resource_settings.max_threads) if c]  # Snakemake caps threads
        _threads = [1, min([S.runtime.threads, *_cap])]
        _FORK_SERVERS.append((_dir, forkserver.start(_dir, _threads, _prefix, Path("logs/fork_server"))))


def _stop_fork_servers():
    from actpat import forkserver

    while _FORK_SERVERS:
        directory, servers = _FORK_SERVERS.pop()
        forkserver.stop(servers, directory)
        os.environ.pop(forkserver.ENV, None)


onsuccess:
    _stop_fork_servers()


onerror:
    _stop_fork_servers()


@functools.cache
def visible_gpus():
    """GPUs this machine shows (0 without nvidia-smi); a cluster profile overrides resources."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


# At most as many concurrent GPU jobs as this machine shows GPUs (`--resources gpu=N` overrides). A
# cluster profile states its own limit (the SLURM profile: `resources: {gpu: 100}`): the scheduler
# hands out the GPUs there, and this machine's count would cap every job's request.
if "gpu" not in workflow.global_resources:
    workflow.register_resource("gpu", visible_gpus())


def job_gpus():
    """GPUs a scoring, pruning or perplexity job asks for. Decided when the job is planned, once
    Snakemake knows its executor (not while it reads this file): none with device cpu; on a cluster
    (or a dry run with --jobs) `score_gpus` whatever this machine shows; locally `score_gpus` when
    the device is cuda or this machine shows a GPU."""
    if S.runtime.device == "cpu":
        return 0
    # the Snakemake a SLURM job starts for itself (another mode) runs its job where it is, like a local run
    submits = workflow.is_main_process and not workflow.local_exec
    on_cluster = submits or (workflow.is_main_process and workflow.dryrun and workflow.nodes is not None)
    if not (S.runtime.device == "cuda" or on_cluster or visible_gpus() > 0):
        return 0
    cap = workflow.global_resources.get("gpu")
    if submits and cap is not None and cap.value < S.resources.score_gpus:
        raise WorkflowError(f"jobs ask for {S.resources.score_gpus} GPU(s) (resources.score_gpus) but this run allows "
                            f"{cap.value}: on a cluster, state how many GPUs may be in use at once in the profile "
                            "(`resources: {gpu: 100}`, as workflow/profiles/slurm does) or pass --resources gpu=N")
    return S.resources.score_gpus


def gpu_resources():
    """The GPU resources of the jobs that use a GPU when there is one: their count (job_gpus) and,
    on a cluster, the partition `resources.gpu_partition` (when set and the device is not cpu). A
    job given GPUs that torch cannot use runs on the CPU and says so (device auto)."""
    on_gpu = S.resources.gpu_partition and S.runtime.device != "cpu"
    return {"gpu": lambda w: job_gpus(), **({"slurm_partition": S.resources.gpu_partition} if on_gpu else {})}
