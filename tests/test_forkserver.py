"""The fork server of local runs (actpat.forkserver): a job forked from it is the job a plain start
runs (same outputs, streams, exit status, signals); any doubt, and the job runs plainly."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from actpat import forkserver

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = forkserver.THREAD_VARIABLES
PREFIX = f"export PYTHONPATH={ROOT / 'workflow'}; export PATH={Path(sys.executable).parent}:\"$PATH\"; "


def job_env(directory: Path | None, **extra) -> dict:
    """The environment Snakemake gives a one-thread job (os.environ plus its thread variables)."""
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}, **extra}
    env.pop("PYTEST_CURRENT_TEST", None)  # pytest changes it from phase to phase
    if directory is not None:
        env[forkserver.ENV] = str(directory)
    return env


def actpat(args: list[str], env: dict, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """A job's command line as the rules run it: bash, the rules' prefix, python -m actpat."""
    command = PREFIX + "exec python -m actpat " + " ".join(shlex.quote(str(a)) for a in args)
    return subprocess.run(["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
                          **kwargs)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A fork server for one-thread jobs, started as the Snakefile starts it: (socket dir, workdir)."""
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
    servers = forkserver.start(directory, [1], PREFIX, work / "logs")
    yield directory, work
    forkserver.stop(servers, directory)
    assert all(s.poll() is not None for s in servers) and not directory.exists()


def test_a_forked_job_writes_what_a_plain_job_writes(server, tiny_checkpoint):
    from conftest import sample_domain_args

    from actpat.store import open_samples

    directory, work = server
    spec = {"source": "packaged", "name": "python-stdlib"}
    outs = {}
    for how, env in (("forked", job_env(directory)), ("plain", job_env(None))):
        out = work / f"{how}.zarr"
        res = actpat(sample_domain_args("code", spec, tiny_checkpoint, 32, 4, 1, 0.2, out), env, work)
        assert res.returncode == 0, res.stderr[-2000:]
        assert ("forked by the fork server" in res.stderr) == (how == "forked"), res.stderr[-2000:]
        outs[how] = open_samples(out)
    a, b = outs["forked"], outs["plain"]
    assert sorted(a.data_vars) == sorted(b.data_vars) and a.attrs == b.attrs
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)
    np.testing.assert_array_equal(a["sample"].values, b["sample"].values)
    # the job's streams and exit status pass through, errors included
    version = actpat(["--version"], job_env(directory), work)
    assert version.returncode == 0 and version.stdout.strip() == actpat(["--version"], job_env(None), work).stdout.strip()
    bad = actpat(["perplexity", "--nonsense"], job_env(directory), work)
    assert bad.returncode == 2 and "the following arguments are required" in bad.stderr
    missing = actpat(["prune", "--settings", "{}", "--model-dir", "nowhere", "--model", "m", "--mask", "m.zarr",
                      "--report", "r.json"], job_env(directory), work)
    assert missing.returncode == 2 and "not a valid PruneJob" in missing.stderr


def _model_job_files(work: Path, checkpoint: Path) -> tuple[Path, Path]:
    """Calibration and evaluation windows of packaged text for the tiny checkpoint."""
    from actpat.samples import write_windows
    from actpat.settings import TextSource, WindowJob

    text = TextSource("code", {"source": "packaged", "name": "python-stdlib"})
    calibration, evaluation = work / "calibration.zarr", work / "eval.zarr"
    write_windows(WindowJob("calibration", text, 4, 32, 0, 0.2), checkpoint, calibration, log=lambda m: None)
    write_windows(WindowJob("evaluation", text, 4, 32, None, None), checkpoint, evaluation, log=lambda m: None)
    return calibration, evaluation


def _store_bytes(store: Path) -> dict[str, bytes]:
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


def test_model_jobs_take_the_checkpoint_the_server_holds_and_write_the_same_bytes(server, tiny_checkpoint):
    """A prune job (SparseGPT: a mask and changed weights) and perplexity jobs on its mask, forked
    from the server, take the checkpoint it loaded and checked once per dtype, and write what plain
    jobs write, byte for byte (the jobs' own time aside); a checkpoint file touched since makes the
    server load it again."""
    import shutil

    from actpat.models import pick_dtype
    from actpat.settings import EvaluateJob, PruneJob, PruningRun
    from actpat.settings_json import encode

    directory, work = server
    checkpoint = work / "tiny"
    shutil.copytree(tiny_checkpoint, checkpoint)
    calibration, evaluation = _model_job_files(work, checkpoint)
    prune = PruneJob(PruningRun("sparsegpt", "unstructured", 0.5, "code"), (0.0, 0.99), None, {"block": 16, "damp": 0.01})
    common = ["--model-dir", str(checkpoint), "--model", "tiny", "--device", "cpu", "--threads", "1"]
    outs = {}
    for how, env in (("plain", job_env(None)), ("forked", job_env(directory))):
        mask = work / f"{how}-mask.zarr"
        res = actpat(["prune", "--settings", encode(prune), *common, "--calibration", calibration, "--mask", mask,
                      "--report", work / f"{how}-pruning.json"], env, work)
        assert res.returncode == 0, res.stderr[-2000:]
        assert ("held by the fork server" in res.stderr) == (how == "forked"), res.stderr[-2000:]
        results = []
        for k in range(2):
            out = work / f"{how}-perplexity-{k}.json"
            res = actpat(["perplexity", "--settings", encode(EvaluateJob("auto", 0, 0)), *common, "--mask", mask,
                          "--run", prune.run.key, "--windows", evaluation, "--set", "code", "--out", out], env, work)
            assert res.returncode == 0, res.stderr[-2000:]
            assert ("held by the fork server" in res.stderr) == (how == "forked"), res.stderr[-2000:]
            results.append({k: v for k, v in json.loads(out.read_text()).items() if k not in ("seconds", "crc32c")})
        assert results[0] == results[1]
        outs[how] = (_store_bytes(mask), json.loads((work / f"{how}-pruning.json").read_text()), results[0])
    assert outs["plain"][0] == outs["forked"][0]  # the mask store, every file
    assert outs["plain"][2] == outs["forked"][2] and outs["plain"][2]["perplexity"] > 1
    plain_report, forked_report = ({k: v for k, v in r.items() if k not in ("seconds", "crc32c")}
                                   for r in (outs["plain"][1], outs["forked"][1]))
    assert plain_report == forked_report
    log = (work / "logs/threads-1-torch.log").read_text()
    dtypes = {"float32", pick_dtype("auto", "cpu")}  # prune's, the evaluation's: each loaded once
    assert log.count("holds") == len(dtypes) and all(f"in {d}, loaded" in log for d in dtypes)
    # a file of the checkpoint touched: the server checks and loads it again before it forks the job
    os.utime(checkpoint / "config.json")
    res = actpat(["perplexity", "--settings", encode(EvaluateJob("auto", 0, 0)), *common, "--mask", work / "forked-mask.zarr",
                  "--run", prune.run.key, "--windows", evaluation, "--set", "code", "--out", work / "again.json"],
                 job_env(directory), work)
    assert res.returncode == 0 and "held by the fork server" in res.stderr, res.stderr[-2000:]
    assert (work / "logs/threads-1-torch.log").read_text().count("holds") == len(dtypes) + 1


def test_a_held_checkpoint_whose_files_changed_is_loaded_again(tiny_checkpoint, tmp_path):
    """What a forked job checks (the server may hold a copy loaded before a file was written): each
    file's size, times and inode against the server's; a change, and the job loads the checkpoint
    itself and says why."""
    import shutil

    import torch

    from actpat import modeljob

    checkpoint = tmp_path / "tiny"
    shutil.copytree(tiny_checkpoint, checkpoint)
    lines: list[str] = []
    runtime = modeljob.JobRuntime("cpu", 1, log=lines.append)
    model = modeljob.ModelRef.at(checkpoint)
    try:
        modeljob.hold(checkpoint, "float32")
        warm = modeljob.start("test", model, runtime, "float32")
        assert "held by the fork server" in lines[-1] and warm.model is modeljob.HELD[modeljob._key(checkpoint, "float32")].model
        cold = modeljob.start("test", model, runtime, "bfloat16")
        assert "holds no copy of it in bfloat16; loading it" in lines[-2] and "checked and loaded" in lines[-1]
        os.utime(checkpoint / "tokenizer.json", ns=(0, 0))
        again = modeljob.start("test", model, runtime, "float32")
        assert "its files changed since the fork server loaded them (tokenizer.json); loading it" in lines[-2]
        assert again.model is not warm.model
        assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), warm.model.state_dict().values()))
        assert cold.dtype == "bfloat16"
    finally:
        modeljob.HELD.clear()


def test_the_server_holds_what_a_model_job_loads_where_it_can_tell_without_cuda(monkeypatch):
    """Prune: float32; evaluation and scoring: their dtype, ``auto`` resolved as the job resolves
    it on the CPU, and not at all where the job may run on a GPU (only CUDA could tell)."""
    import torch

    from actpat.models import pick_dtype
    from actpat.forkserver import checkpoint_loaded
    from actpat.settings import EvaluateJob, PruneJob, PruningRun
    from actpat.settings_json import encode

    def evaluation(dtype, device):
        return ["perplexity", "--settings", encode(EvaluateJob(dtype, 0, 0)), "--model-dir", "m", "--windows", "w",
                "--set", "s", "--device", device, "--out", "o"]

    prune = PruneJob(PruningRun("wanda", "unstructured", 0.5, "code"), (0.0, 0.99), None, None)
    assert checkpoint_loaded(["prune", "--settings", encode(prune), "--model-dir", "m", "--model", "m", "--device", "cuda",
                              "--mask", "k", "--report", "r"]) == (Path("m"), "float32")
    assert checkpoint_loaded(evaluation("auto", "cpu")) == (Path("m"), pick_dtype("auto", "cpu"))
    assert checkpoint_loaded(evaluation("bfloat16", "auto")) == (Path("m"), "bfloat16")
    assert checkpoint_loaded(["perplexity", "--nonsense"]) is None and checkpoint_loaded(["summary"]) is None
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    assert checkpoint_loaded(evaluation("auto", "auto")) is None
    assert checkpoint_loaded(evaluation("auto", "cpu")) == (Path("m"), pick_dtype("auto", "cpu"))
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    assert checkpoint_loaded(evaluation("auto", "auto")) == (Path("m"), pick_dtype("auto", "cpu"))


def test_jobs_without_torch_fork_from_a_server_without_it(server):
    """A report job goes to the light server, which imports its libraries once it has forked that
    job; the torch server imports nothing until a job of its own comes."""
    directory, work = server

    def imported(kind: str) -> bool:  # the server's imports follow its first job: wait for them
        end = time.time() + 120
        while "imported" not in (work / f"logs/threads-1-{kind}.log").read_text() and time.time() < end:
            time.sleep(0.2)
        return "imported" in (work / f"logs/threads-1-{kind}.log").read_text()

    res = actpat(["summary", "--help"], job_env(directory), work)
    assert res.returncode == 0 and "SummaryJob" in res.stdout, res.stderr[-2000:]
    assert "forked by the fork server (light)" in res.stderr, res.stderr[-2000:]
    assert imported("light") and (work / "logs/threads-1-torch.log").read_text() == ""
    res = actpat(["--version"], job_env(directory), work)
    assert res.returncode == 0 and "forked by the fork server (torch)" in res.stderr
    assert imported("torch")


def test_the_light_server_imports_no_torch():
    code = ("import sys; from actpat.forkserver import _preload; _preload('light'); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT / "workflow")},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr[-2000:]


def test_a_job_in_another_environment_runs_plainly(server):
    directory, work = server
    res = actpat(["--version"], job_env(directory, ACTPAT_SOMETHING_ELSE="1"), work)
    assert res.returncode == 0 and res.stdout.strip()
    assert "running without the fork server: another environment (ACTPAT_SOMETHING_ELSE)" in res.stderr
    # no server for this thread count: plainly, silently
    res = actpat(["--version"], job_env(directory, **{v: "2" for v in THREAD_VARS}), work)
    assert res.returncode == 0 and res.stdout.strip() and "fork server" not in res.stderr
    # a server that is gone: plainly
    res = actpat(["--version"], job_env(work / "no-such-dir"), work)
    assert res.returncode == 0 and res.stdout.strip()


FAKE_SERVER = textwrap.dedent("""
    import json, os, signal, sys, tempfile, time
    from pathlib import Path
    import actpat.cli

    def main(argv=None):
        if argv[0] == "sleep":
            Path(argv[1]).write_text(str(os.getpid()))
            time.sleep(float(argv[2]) if len(argv) > 2 else 120)
            return 0
        if argv[0] == "env":
            print(json.dumps({"tmp": tempfile.gettempdir(), "cwd": os.getcwd(), "argv": sys.argv[1:],
                              "threads": os.environ.get("OMP_NUM_THREADS")}))
            return 5
        if argv[0] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        return 0

    actpat.cli.main = main  # the children run this instead of the real commands
    from actpat.forkserver import serve
    serve(Path(sys.argv[1]), int(sys.argv[2]))
""")


@pytest.fixture
def fake_server(tmp_path):
    """A fork server whose children run test commands (sleep, env, die): (env, workdir)."""
    directory = tmp_path / "sockets"
    directory.mkdir(mode=0o700)
    script = tmp_path / "fake_server.py"
    script.write_text(FAKE_SERVER)
    env = job_env(directory, PYTHONPATH=str(ROOT / "workflow"))
    proc = subprocess.Popen([sys.executable, str(script), str(forkserver.socket_path(directory, 1)), str(os.getpid())],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    end = time.time() + 30
    while not forkserver.socket_path(directory, 1).exists() and time.time() < end:
        time.sleep(0.05)
    yield env, tmp_path
    proc.terminate()
    proc.wait(timeout=20)


def _client(args, env, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "actpat", *args], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _gone(pid: int, within: float = 15.0) -> bool:
    end = time.time() + within
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _forked_pid(pidfile: Path, within: float = 60.0) -> int:
    end = time.time() + within
    while time.time() < end:
        if pidfile.exists() and pidfile.read_text():
            return int(pidfile.read_text())
        time.sleep(0.1)
    raise AssertionError("the forked job did not start")


def test_the_child_takes_the_jobs_arguments_workdir_and_temporary_directory(fake_server):
    env, work = fake_server
    tmp = work / "job-tmp"
    tmp.mkdir()
    res = _client(["env", "a b", "ü"], {**env, "TMPDIR": str(tmp)}, work)
    out, err = res.communicate(timeout=120)
    assert res.returncode == 5, err
    seen = json.loads(out)
    assert seen == {"tmp": str(tmp), "cwd": str(work), "argv": ["env", "a b", "ü"], "threads": "1"}
    assert "forked by the fork server" in err


def test_signals_reach_the_forked_job_and_a_killed_job_fails(fake_server):
    env, work = fake_server
    # SIGTERM to the job's process: passed on, and its status is the signal's
    pidfile = work / "pid1"
    client = _client(["sleep", str(pidfile)], env, work)
    child = _forked_pid(pidfile)
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=30) == 128 + signal.SIGTERM and _gone(child)
    # SIGKILL to the job's process (it cannot pass it on): the child sees it gone and ends too
    pidfile = work / "pid2"
    client = _client(["sleep", str(pidfile)], env, work)
    child = _forked_pid(pidfile)
    client.kill()
    client.wait(timeout=30)
    assert _gone(child)
    # a child killed from outside (the OOM killer): the job fails, and says why
    client = _client(["die"], env, work)
    _, err = client.communicate(timeout=120)
    assert client.returncode == 137 and "ended without an exit status" in err


def test_a_signal_the_job_ignores_stays_ignored(fake_server):
    """Under nohup (SIGHUP ignored) a plain job outlives a hangup: so does a forked one."""
    env, work = fake_server
    pidfile = work / "pid"
    client = _client(["sleep", str(pidfile), "3"], env, work,
                     preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    child = _forked_pid(pidfile)
    client.send_signal(signal.SIGHUP)
    assert client.wait(timeout=60) == 0 and _gone(child)
