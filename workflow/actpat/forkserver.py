"""Warm starts for local jobs: fork servers that have the heavy libraries imported already, and
the prepared checkpoints the model jobs load.

Every job of the workflow is ``python -m actpat <command>``, and importing torch, transformers, the
evaluation harness and xarray takes seconds of a job, a large share of the shipped default run,
whose jobs mostly compute for seconds each (the figures: README); loading and checking the model
took seconds more of every model job. When Snakemake runs the jobs on this machine (not on a
cluster), the Snakefile starts the servers (``start``), each waiting on a Unix socket in a private
directory. ``python -m actpat`` offers its job to a server first (``delegate``): the server forks a
child, which takes the job's standard streams, working directory, environment and arguments, runs
the command and reports its exit status; the job's own process waits for it and forwards the
signals it gets.

Two kinds of server (``KINDS``): ``torch`` for the jobs that run a model or a tokenizer, ``light``
for the reductions and reports, which import no torch (``actpat.cli.NO_TORCH``) and so neither
wait for nor fork from a process that holds it. A server imports its libraries once it has forked
its first job, not before: a run that needs none of its jobs (``snakemake -R summary``) never pays
for them, and a run of one job waits for nothing it does not use.
The torch server also holds the prepared checkpoint a model job loads (``actpat.modeljob.hold``),
loaded and checked once per model and dtype, before it forks the job: the job takes it from memory
shared copy-on-write (``actpat.modeljob.start``), after checking that the checkpoint's files are
the ones the server loaded (size, times, inode), and loads it itself otherwise.

The child must be the process a plain start would have made, up to imports already done. So a job is
handed over only when its interpreter, its flags, its working directory and its environment are the
server's, except for the variables listed in ``VOLATILE`` (shell bookkeeping, and the temporary
directory, which the child looks up again). Snakemake sets the thread variables (OMP_NUM_THREADS, ...)
of each job to its thread count, so there is one server of each kind per thread count the run's
jobs can have (their BLAS libraries read them at import). The torch server loads a checkpoint with
one thread (a thread pool started before a fork hangs the child's first parallel operation). A job
with any other difference, or with no server, or whose server does not answer, runs in its own
process as before; the results are the same either way.

What differs for the user: Snakemake's benchmark files measure the waiting process, so their CPU and
memory columns miss the job's own use; the child writes its peak memory and CPU time to the job's
log when it ends. ``fork_server: false`` in config.yaml turns the server off.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ENV = "ACTPAT_FORK_SERVER"  # the directory of the servers' sockets, set for the jobs of a local run
VOLATILE = frozenset({"_", "SHLVL", "PWD", "OLDPWD", "TMPDIR", "TMP", "TEMP", "TEMPDIR"})
# Snakemake sets these to the job's thread count (snakemake/shell.py); the first names a job's server
THREAD_VARIABLES = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# modules each kind's jobs import (a missing one is skipped). Not lm-evaluation-harness (seconds
# more), which only the zero-shot task jobs need: they import it themselves, as a plain job does.
LIGHT = ("numpy", "pandas", "xarray", "zarr", "matplotlib.pyplot", "actpat.cli", "actpat.store", "actpat.stats",
         "actpat.reduce", "actpat.findings", "actpat.pairs_report", "actpat.pruning_report", "actpat.summary",
         "actpat.plots")
KINDS = {
    "torch": ("torch", "transformers", "transformers.modeling_utils", "transformers.models.llama.modeling_llama",
              *LIGHT, "actpat.models", "actpat.modeljob", "actpat.samples", "actpat.sources", "actpat.scoring",
              "actpat.pairs", "actpat.pruning", "actpat.evaluate", "actpat.accuracy"),
    "light": LIGHT,
}
CONNECT_TIMEOUT_S = 120.0  # a server still importing answers within this
LOAD_TIMEOUT_S = 3600.0  # a server loading a checkpoint for the job says so first, then answers within this
_TMP_DERIVED: list[str] = []


def socket_path(directory: str | os.PathLike, threads: str | int | None, kind: str = "torch") -> Path:
    return Path(directory) / f"threads-{threads if threads is not None else 'unset'}-{kind}.sock"


def kind_of(argv: list[str]) -> str:
    """The server a job's command line goes to: ``light`` for the commands that import no torch."""
    from actpat.cli import NO_TORCH

    return "light" if argv and argv[0] in NO_TORCH else "torch"


def _interpreter() -> dict:
    """What must match between a job's interpreter and the server's besides the environment."""
    return {"executable": sys.executable, "prefix": sys.prefix, "flags": list(sys.flags),
            "warnoptions": list(sys.warnoptions), "xoptions": {k: str(v) for k, v in sys._xoptions.items()}}


def difference(request: dict, env: dict, cwd: str) -> str | None:
    """Why a job must not run in a child of this server (None: it may)."""
    if request.get("interpreter") != _interpreter():
        return "another interpreter or other interpreter options"
    if request.get("cwd") != cwd:
        return f"another working directory ({request.get('cwd')})"
    theirs = {k: v for k, v in request.get("env", {}).items() if k not in VOLATILE}
    ours = {k: v for k, v in env.items() if k not in VOLATILE}
    if theirs != ours:
        keys = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
        return f"another environment ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
    return None


# ----------------------------------------------------------------------------------------------
# The job's side


def _send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = (json.dumps(message) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.sendall(data)


class _Lines:
    """Newline-delimited JSON messages from a stream socket."""

    def __init__(self, sock: socket.socket, first: bytes = b""):
        self.sock, self.buffer = sock, first

    def read(self) -> dict | None:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:  # it has ended already
        pass


def delegate(argv: list[str]) -> int | None:
    """Run ``python -m actpat argv`` in a child of this run's fork server; returns its exit status,
    or None when there is no server for this job or it declines (then run the job here)."""
    directory = os.environ.get(ENV)
    if not directory:
        return None
    # signals this process ignores (e.g. SIGHUP under nohup) stay ignored in the job, as a plain start would inherit them
    ignored = [sig for sig in FORWARDED if signal.getsignal(sig) is signal.SIG_IGN]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect(str(socket_path(directory, os.environ.get(THREAD_VARIABLES[0]), kind_of(argv))))
        _send(sock, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "interpreter": _interpreter(),
                     "ignored": [int(sig) for sig in ignored],
                     "unbuffered": bool(getattr(sys.stdout, "write_through", False))}, [0, 1, 2])  # -u, PYTHONUNBUFFERED
        lines = _Lines(sock)
        reply = lines.read()
        while reply and "wait" in reply:  # the server loads the job's checkpoint first
            sock.settimeout(LOAD_TIMEOUT_S)
            reply = lines.read()
    except (OSError, ValueError):
        sock.close()
        return None
    if not reply or "pid" not in reply:
        if reply and reply.get("declined"):
            print(f"actpat: running without the fork server: {reply['declined']}", file=sys.stderr)
        sock.close()
        return None
    pid = int(reply["pid"])
    forwarded: list[int] = []

    def forward(signum, frame):
        forwarded.append(signum)
        _signal(pid, signum)

    def pause(signum, frame):  # Ctrl-Z: the job stops with this process, and goes on with it (SIGCONT)
        _signal(pid, signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    for sig in FORWARDED:
        if sig not in ignored:
            signal.signal(sig, forward)
    signal.signal(signal.SIGCONT, lambda signum, frame: _signal(pid, signum))
    signal.signal(signal.SIGTSTP, pause)
    try:
        sock.settimeout(None)
        _send(sock, {"go": True})  # only now does the child run the job: a client that gave up never gets one
        message = lines.read()  # a signal's handler runs in between; the read goes on (PEP 475)
    except OSError:
        message = None
    finally:
        sock.close()
    if not message or "exit" not in message:
        if forwarded:  # ended by the signal this process passed on: report it as a plain job would
            return 128 + forwarded[-1]
        print(f"actpat: the job's process {pid} (forked by the fork server) ended without an exit status; "
              "it was killed, e.g. for lack of memory", file=sys.stderr)
        return 137
    return int(message["exit"])


# ----------------------------------------------------------------------------------------------
# The server's side


def start(directory: Path, threads: list[int], prefix: str, log_dir: Path) -> list[subprocess.Popen]:
    """Start a server of each kind per thread count, each in the environment a job with that many
    threads gets (Snakemake's thread variables, the rules' shell ``prefix``), stopped with ``stop``
    or when this process ends. Jobs find them through ``ENV``, which the caller sets to
    ``directory``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    servers, paths = [], []
    for n in sorted(set(threads)):
        env = dict(os.environ)
        env.update({var: str(n) for var in THREAD_VARIABLES})
        env[ENV] = str(directory)
        for kind in KINDS:
            path = socket_path(directory, n, kind)
            command = f"{prefix}exec python -m actpat.forkserver {shlex.quote(str(path))} {os.getpid()} {kind}"
            with open(log_dir / f"threads-{n}-{kind}.log", "w") as log:
                servers.append(subprocess.Popen(["bash", "-c", command], env=env, stdin=subprocess.DEVNULL,
                                                stdout=log, stderr=log, start_new_session=True))
            paths.append(path)
    # a server listens before it imports anything heavy: wait for that (a fraction of a second), so
    # that the first jobs queue for it rather than start cold
    end = time.time() + 10
    while time.time() < end and not all(p.exists() or s.poll() is not None for p, s in zip(paths, servers)):
        time.sleep(0.02)
    return servers


def stop(servers: list[subprocess.Popen], directory: Path) -> None:
    for server in servers:
        if server.poll() is None:
            server.terminate()
    for server in servers:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
    for sock in directory.glob("*.sock"):
        sock.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:
        pass


def serve(path: Path, parent: int, kind: str = "torch") -> None:
    """Listen at ``path``; fork a child per accepted job until ``parent`` ends or SIGTERM comes.
    The modules of ``kind`` (``KINDS``) are imported once the first job is forked (it imports what it
    needs itself, meanwhile), so that a run of one job waits for nothing it does not use."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(64)
    try:
        cwd, env = os.getcwd(), dict(os.environ)  # what a job's process starts with (imports may add to it)
        signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
        listener.settimeout(1.0)
        ready = False
        while os.getppid() == parent:
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                _hand_over(conn, listener, cwd, env, kind)
            if not ready:  # after the first job, which imports what it needs as a plain job would
                _ready(path, kind, env)
                ready = True
    finally:
        listener.close()
        path.unlink(missing_ok=True)


def _ready(path: Path, kind: str, env: dict) -> None:
    """Import the modules of ``kind``; note the variables the imports derived from the temporary
    directory (torch's TORCHINDUCTOR_CACHE_DIR): dropped in a job with another one, whose libraries
    then derive them from its own."""
    global _TMP_DERIVED
    import tempfile

    t0 = time.time()
    loaded = _preload(kind)
    _TMP_DERIVED = [k for k, v in os.environ.items() if k not in env and v.startswith(tempfile.gettempdir())]
    print(f"fork server {path}: imported {len(loaded)} modules in {time.time() - t0:.1f}s", flush=True)


def _preload(kind: str = "torch") -> list[str]:
    import importlib

    loaded = []
    for name in KINDS[kind]:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except ImportError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():  # a CUDA context does not survive a fork
        raise RuntimeError("an import initialised CUDA; the fork server cannot fork jobs from this process")
    from actpat.provenance import code_version

    code_version()  # the children report the version of the code they run: the one imported here
    sys.stdout.flush()
    sys.stderr.flush()
    return loaded


def _hand_over(conn: socket.socket, listener: socket.socket, cwd: str, env: dict, kind: str = "torch") -> None:
    """Read a job's request; decline it, or fork the child that runs it (a torch server first loads
    the checkpoint the job loads, unless it holds it already)."""
    fds: list[int] = []
    try:
        conn.settimeout(10.0)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
            return
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        lines = _Lines(conn, data)
        request = lines.read()
        if request is None or len(fds) != 3:
            return
        why = difference(request, env, cwd)
        if why:
            _send(conn, {"declined": why})
            return
        if kind == "torch":
            _hold(conn, request["argv"])
        pid = os.fork()
        if pid == 0:
            listener.close()
            code = 1
            try:
                code = _child(conn, lines, request, fds, kind)
            except BaseException:  # before the job ran (it reports its own errors): say why, then go
                import traceback

                traceback.print_exc()
                sys.stderr.flush()
            finally:
                os._exit(code)
    except (OSError, ValueError) as exc:
        print(f"fork server: a request failed: {exc!r}", flush=True)
    finally:
        for fd in fds:
            os.close(fd)


def _child(conn: socket.socket, lines: _Lines, request: dict, fds: list[int], kind: str = "torch") -> int:
    """In the forked child: become the job's process, wait for the job's go, run it, report."""
    import atexit
    import logging
    import resource
    import tempfile
    import threading
    import traceback

    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in request.get("ignored", []):
        signal.signal(sig, signal.SIG_IGN)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    os.chdir(request["cwd"])
    # the job's environment is the server's at its start (checked), up to VOLATILE; keep what the
    # imports added (a library's settings made at import), as they would in the job's own process
    for key in VOLATILE:
        if key in request["env"]:
            os.environ[key] = request["env"][key]
        else:
            os.environ.pop(key, None)
    before = tempfile.gettempdir()
    tempfile.tempdir = None  # looked up again from this job's TMPDIR
    if tempfile.gettempdir() != before:
        for key in _TMP_DERIVED:
            os.environ.pop(key, None)
    sys.argv = [sys.argv[0], *request["argv"]]
    sys.stdin = open(0, closefd=False)
    unbuffered = bool(request.get("unbuffered"))
    sys.stdout = _stream(1, sys.__stdout__, line=os.isatty(1), unbuffered=unbuffered)
    sys.stderr = _stream(2, sys.__stderr__, line=True, unbuffered=unbuffered)
    conn.settimeout(None)
    _send(conn, {"pid": os.getpid()})
    go = lines.read()
    if not go or not go.get("go"):
        return 1

    def watch():  # the job's own process is gone (killed): end with it, as a plain job would
        try:
            while conn.recv(1):
                pass
        except OSError:
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True).start()
    from actpat.cli import main

    code = 1
    try:
        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        for thread in threading.enumerate():  # join non-daemon threads, as the interpreter does at exit
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        logging.shutdown()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # a light job that imported torch after all would better be forked from the torch server
        extra = "; it imported torch (not in actpat.cli.NO_TORCH?)" if kind == "light" and "torch" in sys.modules else ""
        print(f"actpat: ran in a process forked by the fork server ({kind}{extra}): peak memory "
              f"{usage.ru_maxrss / 1024:.0f} MiB, CPU {usage.ru_utime + usage.ru_stime:.1f}s", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        _send(conn, {"exit": code})
    return code


def _stream(fd: int, like, line: bool, unbuffered: bool):
    """A text stream on ``fd`` as the interpreter makes one: the encoding and error handler of the
    server's (same environment), written through when the job's are (-u, PYTHONUNBUFFERED)."""
    import io

    raw = io.FileIO(fd, "w", closefd=False)
    binary = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(binary, encoding=getattr(like, "encoding", None), errors=getattr(like, "errors", None),
                            line_buffering=line, write_through=unbuffered)


def _hold(conn: socket.socket, argv: list[str]) -> None:
    """Hold the checkpoint the job will load (``checkpoint_loaded``), loading it now
    unless it is held with its files unchanged; the job is told to wait meanwhile. A checkpoint
    that fails to load is left to the job, which reports the error as a plain job would."""
    from actpat.modeljob import held, hold

    wanted = checkpoint_loaded(argv)
    if wanted is None or held(*wanted)[0] is not None:
        return
    _send(conn, {"wait": f"the fork server loads {wanted[0]} in {wanted[1]}"})
    t0 = time.time()
    try:
        hold(*wanted)
        print(f"fork server: holds {wanted[0]} in {wanted[1]}, loaded and checked in {time.time() - t0:.1f}s", flush=True)
    except Exception as exc:  # noqa: BLE001 - the job loads it and reports the error itself
        print(f"fork server: could not load {wanted[0]} in {wanted[1]} ({exc!r}); its jobs load it themselves", flush=True)


def _model_dtype(command: str, a):
    """The dtype a model job's command asks ``start`` for, and the function that
    resolves ``auto`` on a device (as the job does)."""
    if command == "score-shard":
        from actpat.scoring import compute_dtype

        return a.settings.scoring.compute_dtype, compute_dtype
    if command == "prune":
        from actpat.pruning import COMPUTE_DTYPE

        return COMPUTE_DTYPE, None
    from actpat.models import pick_dtype

    return a.settings.dtype, pick_dtype


MODEL_COMMANDS = ("score-shard", "prune", "perplexity", "zero-shot")


def checkpoint_loaded(argv: list[str]) -> tuple[Path, str] | None:
    """The prepared checkpoint and dtype that a model job's command line loads, where the fork
    server can tell without touching CUDA (it must not, to fork): the dtype is named, or ``auto``
    on a job that runs on the CPU (``--device cpu``, or a torch built without CUDA). None for
    other commands and for a command line that does not parse (the job reports it)."""
    import contextlib
    import io

    if not argv or argv[0] not in MODEL_COMMANDS:
        return None
    from actpat.cli import build_parser
    from actpat.modeljob import device_without_cuda

    try:
        with contextlib.redirect_stderr(io.StringIO()):
            a = build_parser().parse_args(argv)
    except SystemExit:
        return None
    requested, resolve = _model_dtype(argv[0], a)
    if requested != "auto":
        return Path(a.model_dir), requested
    device = device_without_cuda(a.device)
    return (Path(a.model_dir), resolve(requested, device)) if device else None


if __name__ == "__main__":
    serve(Path(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
