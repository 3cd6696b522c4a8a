"""Run softdiff's commands as forked children of one interpreter that imported the heavy modules once.

Importing torch, diffusers and softdiff takes about 8 s on a small CI machine; forking a process that has
done so takes milliseconds. Each request runs in its own child process, exactly as ``python train.py ARGS``,
``softdiff ARGS`` or ``python -c CODE ARGS`` would at top level: its own exit code (a signal gives a negative
code), its own stdout and stderr files, files written as usual; an uncaught exception prints its traceback
and exits 1, as the interpreter does. Nothing runs in this parent but imports, so no state leaks between
cases.

Protocol (one JSON object per line): request ``{"entry": "train.py" | "sample.py" | "softdiff" | "code",
"args": [...], "code": str, "cwd": str, "env": {...}, "stdout": path, "stderr": path, "timeout": s}``;
reply ``{"returncode": int}``.
"""
import atexit
import json
import os
import runpy
import signal
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRELOAD = ["torch", "diffusers", "accelerate", "matplotlib.pyplot", "softdiff.cli", "softdiff.training.trainer",
           "softdiff.commands.train", "softdiff.commands.sample", "softdiff.commands.compare", "softdiff.commands.ntk",
           "softdiff.commands.regress", "softdiff.commands.flow", "softdiff.commands.probe",
           "softdiff.commands.evaluate", "softdiff.commands.sinks",
           # what the commands import only after parsing (so that --help and config errors answer fast)
           "softdiff.commands.work.train", "softdiff.commands.work.sample", "softdiff.commands.work.compare",
           "softdiff.commands.work.ntk", "softdiff.commands.work.regress", "softdiff.commands.work.flow",
           "softdiff.commands.work.probe", "softdiff.commands.work.evaluate", "softdiff.commands.work.sinks",
           "softdiff.pipeline.pipeline", "softdiff.training.previews", "softdiff.evaluation.run_eval",
           "softdiff.evaluation.features", "softdiff.studies.compare.runner", "softdiff.studies.ntk.drift",
           "softdiff.studies.ntk.report", "softdiff.studies.sinks.report", "softdiff.studies.value_flow.plots",
           "scipy.optimize", "torchdiffeq"]


def _child(request: dict) -> int:
    os.chdir(request.get("cwd") or ROOT)
    os.environ.update(request.get("env") or {})
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    for fd, key in ((1, "stdout"), (2, "stderr")):
        target = os.open(request[key], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
    entry, args = request["entry"], list(request.get("args") or [])
    try:
        if entry == "softdiff":
            from softdiff.cli import main

            sys.argv = ["softdiff", *args]
            sys.exit(main())
        elif entry == "code":
            sys.argv = ["-c", *args]
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
        else:
            script = os.path.join(ROOT, entry)
            sys.argv = [script, *args]
            sys.path.insert(0, ROOT)
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as err:
        if err.code is None:
            code = 0
        elif isinstance(err.code, int):
            code = err.code
        else:
            print(err.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.01)


def main() -> None:
    sys.path.insert(0, ROOT)
    for name in PRELOAD:
        __import__(name)
    protocol = sys.stdout
    print(json.dumps({"ready": True}), file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(request)
            finally:
                os._exit(code & 0xFF)
        code = _wait(pid, float(request.get("timeout", 300)))
        print(json.dumps({"returncode": code}), file=protocol, flush=True)


if __name__ == "__main__":
    main()
