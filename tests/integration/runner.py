#!/usr/bin/env python3
"""runner: run pserver's integration tests (standard library only).

Finds tests/integration/test_*.py and runs every function test_* in them,
each in its own subprocess and session with a fresh temp dir and a hard
timeout (the function's `timeout` attribute, see pslib.timeout(), else
180 s; times PS_TEST_TIME_SCALE when set). On a timeout the test's whole process group is killed: that is
everything the test started and nothing else. A test passes by returning,
fails by raising, and is skipped by raising pslib.Skip. Ends with the line
"integration: N passed, N failed"; exit status 1 when any failed.

  runner.py [-k WORD]          run the tests whose name has WORD
  runner.py --one FILE::FUNC   run one test in this process (used inside)

A failed test's temp dir is kept (its path is printed); PS_KEEP_TMP=1 keeps
every test's.
"""
import argparse
import glob
import importlib.util
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # the tests import pslib
DEFAULT_TIMEOUT = 180.0
SKIP_STATUS = 77  # exit status of a --one child whose test raised Skip
# pslib.TIME_SCALE: every limit times PS_TEST_TIME_SCALE (sanitizer pass).
TIME_SCALE = float(os.environ.get("PS_TEST_TIME_SCALE") or 1.0)


def load(path):
    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def discover(word):
    """[(name "file::func", path, func name, timeout)] in file order, and
    [(file name, traceback)] of the files that do not import."""
    tests, broken = [], []
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        base = os.path.splitext(os.path.basename(path))[0]
        try:
            mod = load(path)
        except Exception:  # noqa: BLE001 - a broken file is a failure
            broken.append((base, traceback.format_exc()))
            continue
        funcs = [(n, f) for n, f in vars(mod).items()
                 if n.startswith("test_") and inspect.isfunction(f)
                 and f.__module__ == mod.__name__]
        funcs.sort(key=lambda nf: nf[1].__code__.co_firstlineno)
        for n, f in funcs:
            name = "%s::%s" % (base, n)
            if word and word not in name:
                continue
            tests.append((name, path, n,
                          float(getattr(f, "timeout", DEFAULT_TIMEOUT)) * TIME_SCALE))
    return tests, broken


def run_one(target):
    """Child side: import the file, call the function with the temp dir
    (PS_TEST_TMP, also the working directory) if it takes an argument."""
    path, func = target.rsplit("::", 1)
    tmp = os.environ["PS_TEST_TMP"]
    os.chdir(tmp)
    mod = load(path)
    fn = getattr(mod, func)
    pslib = sys.modules.get("pslib")
    try:
        if inspect.signature(fn).parameters:
            fn(tmp)
        else:
            fn()
    except Exception as e:  # noqa: BLE001 - report every failure
        if pslib is not None and isinstance(e, pslib.Skip):
            print("SKIP: %s" % e, flush=True)
            return SKIP_STATUS
        traceback.print_exc()
        return 1
    return 0


def group_members(pgid, leader):
    """(pid, cmdline) of live processes in process group pgid or in the
    session of the same id (the test leads both; mpirun puts each rank in
    a process group of its own, in the same session), leader excluded (it
    has exited but is not reaped yet)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == leader:
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        # fields: state ppid pgrp session ...
        if pgid in (int(fields[2]), int(fields[3])) and fields[0] != b"Z":
            found.append((int(d), cmd.strip()))
    return found


def killpg(pgid):
    """SIGKILL process group pgid and whatever else is left in the
    session of the same id (mpirun's ranks)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid, _ in group_members(pgid, pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def exited(pid):
    """True once pid has exited, without reaping it: while the leader is
    an unreaped zombie its pid, the group id, cannot be reused, so a
    group kill cannot reach anyone else's processes."""
    return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def run_test(name, path, func, limit, env):
    """Returns ("PASS"|"FAIL"|"SKIP", seconds, output)."""
    tmp = tempfile.mkdtemp(prefix="ps-it-%s-" % func)
    log_path = os.path.join(tmp, "test-output.log")
    cmd = [sys.executable, os.path.abspath(__file__), "--one",
           "%s::%s" % (path, func)]
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                             stderr=subprocess.STDOUT, start_new_session=True,
                             env=dict(env, PS_TEST_TMP=tmp))
    timed_out = False
    try:
        while not exited(p.pid):
            if time.monotonic() - t0 > limit:
                timed_out = True
                break
            time.sleep(0.02)
        secs = time.monotonic() - t0
        left = [] if timed_out else group_members(p.pid, p.pid)
    finally:
        # The whole group: the test and whatever it started and left.
        killpg(p.pid)
        p.wait()
    out = open(log_path, "rb").read().decode("utf-8", "replace")
    if timed_out:
        status = "FAIL"
        out += "\nTIMEOUT: killed after %.0f s with its process group\n" % limit
    elif p.returncode == SKIP_STATUS:
        status = "SKIP"
    elif p.returncode == 0 and not left:
        status = "PASS"
    else:
        status = "FAIL"
        if p.returncode != 0:
            out += "\nexit status %d\n" % p.returncode
    if left:
        status = "FAIL"
        out += "\nleft %d process(es) running (killed now):\n%s\n" % (
            len(left), "\n".join("  %d %s" % pc for pc in left))
    if status == "FAIL" or os.environ.get("PS_KEEP_TMP"):
        out += "(files kept in %s)\n" % tmp
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return status, secs, out


def main():
    ap = argparse.ArgumentParser(description="Run pserver's integration tests.")
    ap.add_argument("-k", dest="word", default=None,
                    help="only tests whose name (file::function) has WORD")
    ap.add_argument("--one", metavar="FILE::FUNC", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        return run_one(a.one)

    env = dict(os.environ)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("PS_BUILD", os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                            "build"))
    tests, broken = discover(a.word)
    passed, failed = 0, len(broken)
    for base, tb in broken:
        print("FAIL %s (import)\n    %s" % (base, tb.rstrip().replace("\n", "\n    ")))
    if not tests and not broken:
        print("no integration tests%s" % (" match '%s'" % a.word if a.word else ""))
    t_all = time.monotonic()
    current = None
    try:
        for name, path, func, limit in tests:
            current = name
            status, secs, out = run_test(name, path, func, limit, env)
            if status == "PASS":
                passed += 1
                print("PASS %s (%.1fs)" % (name, secs), flush=True)
            elif status == "SKIP":
                reason = out.strip().splitlines()[-1] if out.strip() else ""
                reason = reason[len("SKIP: "):] if reason.startswith("SKIP: ") else reason
                print("SKIP %s (%.1fs) %s" % (name, secs, reason), flush=True)
            else:
                failed += 1
                print("FAIL %s (%.1fs)" % (name, secs))
                print("    " + out.rstrip().replace("\n", "\n    "), flush=True)
    except KeyboardInterrupt:
        # run_test's finally already killed the running test's group.
        print("interrupted during %s" % current)
        failed += 1
    print("integration time %.1fs" % (time.monotonic() - t_all))
    print("integration: %d passed, %d failed" % (passed, failed), flush=True)
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main())
