"""pslib: helpers for pserver's integration tests (standard library only).

Where the binaries are (PS_BUILD, default <repo>/build), running the
launcher, starting a ps-server by hand, reading model files, and waiting
for and cleaning up the processes a test started. Every wait is bounded;
every process a helper starts stays in the test's process group, so the
runner's group kill on a timeout reaches it too.
"""
import json
import os
import re
import signal
import struct
import subprocess
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("PS_BUILD") or os.path.join(ROOT, "build"))
BIN = os.path.join(BUILD, "bin")
SERVER = os.path.join(BIN, "ps-server")
WORKER = os.path.join(BIN, "ps-worker")
BADPEER = os.path.join(BIN, "ps-badpeer")
LAUNCH = os.path.join(ROOT, "scripts", "ps-launch")
FASHION_DIR = os.environ.get("PS_DATA_DIR") or "/usr/share/datasets/fashion-mnist"
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


# Every time bound of the suite (the runner's per-test limits, the
# launcher's --time-limit, waits for processes) is multiplied by this. The
# sanitizer pass of `make check-all` sets PS_TEST_TIME_SCALE=3: the code
# runs 2-3 times slower there, and Open MPI under LeakSanitizer much more;
# the plain pass holds the bounds as written.
TIME_SCALE = float(os.environ.get("PS_TEST_TIME_SCALE") or 1.0)


def scaled(seconds):
    """seconds, times PS_TEST_TIME_SCALE."""
    return seconds * TIME_SCALE


class Skip(Exception):
    """Raised by a test that cannot run here; the runner reports SKIP."""


def timeout(seconds):
    """Decorator: the runner's hard timeout for this test, in seconds."""
    def mark(fn):
        fn.timeout = seconds
        return fn
    return mark


def need(*paths):
    for p in paths:
        if not os.access(p, os.X_OK):
            raise AssertionError("%s not found or not executable: run 'make' "
                                 "(PS_BUILD=%s)" % (p, BUILD))


def sanitizer_build():
    """The -fsanitize=... option the binaries in BUILD were built with
    (their flags stamp says), or None for a plain build."""
    m = re.search(r"-fsanitize=(\S+)", read_text(os.path.join(BUILD, "flags")))
    return m.group(0) if m else None


def need_fashion_mnist():
    missing = [f for f in FASHION_FILES
               if not os.path.exists(os.path.join(FASHION_DIR, f))]
    if missing:
        raise Skip("Fashion-MNIST not in %s (missing %s)"
                   % (FASHION_DIR, ", ".join(missing)))


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def read_json(path):
    with open(path) as f:
        return json.load(f)


# --- processes -----------------------------------------------------------

def start(cmd, log_path=None):
    """Start cmd with stdin closed and stdout+stderr to log_path (or a
    pipe when None). It stays in the caller's process group."""
    if log_path is None:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(log_path, "wb") as log:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)


def wait(proc, seconds, what=None):
    """Exit status of proc, waiting at most seconds; AssertionError when it
    is still running then (the caller's cleanup stops it)."""
    seconds = scaled(seconds)
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError("%s did not exit within %.0f s"
                             % (what or proc.args[0], seconds)) from None


def stop(procs, grace=3.0):
    """SIGTERM each still-running process of procs, then SIGKILL what is
    left after grace seconds, and reap them all."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Procs:
    """Context manager that owns the processes a test starts and stops
    whatever is still running on the way out, pass or fail."""

    def __init__(self):
        self.procs = []

    def start(self, cmd, log_path=None):
        p = start(cmd, log_path)
        self.procs.append(p)
        return p

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        stop(self.procs)
        return False


def wait_for(cond, seconds, what, proc=None, interval=0.02):
    """Poll cond() until it is true, at most seconds; fail early when proc
    (whose result cond awaits) has exited."""
    seconds = scaled(seconds)
    deadline = time.monotonic() + seconds
    while not cond():
        if proc is not None and proc.poll() is not None:
            if cond():
                break
            raise AssertionError("%s: process exited with %s first"
                                 % (what, proc.returncode))
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0f s" % (what, seconds))
        time.sleep(interval)


def _proc_table():
    """{pid: (ppid, pgrp, state, cmdline, session)} of every live process."""
    table = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            with open("/proc/%s/cmdline" % d, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile
        # after the command name: state ppid pgrp session ...
        table[int(d)] = (int(fields[1]), int(fields[2]), fields[0], cmd.strip(),
                         int(fields[3]))
    return table


def descendants(pid):
    """Pids of pid's live children, their children, and so on."""
    table = _proc_table()
    found, queue = [], [pid]
    while queue:
        parent = queue.pop()
        kids = [q for q, (pp, _, st, _, _) in table.items() if pp == parent and st != b"Z"]
        found += kids
        queue += kids
    return found


def stragglers():
    """(pid, cmdline) of the live processes this test started, directly or
    not, other than itself. The runner makes each test the leader of its
    own session and process group, which every process it starts joins
    (and stays in when its parent dies); mpirun moves each rank into a
    process group of its own, but not out of the session. Outside the
    runner, the live descendants."""
    me = os.getpid()
    table = _proc_table()
    if os.getpgrp() == me:
        pids = [q for q, (_, pg, st, _, sid) in table.items()
                if (pg == me or sid == me) and q != me and st != b"Z"]
    else:
        pids = descendants(me)
    return [(q, table[q][3]) for q in pids if q in table]


def kill_pids(pids):
    for q in pids:
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop_tree(proc, grace=10.0):
    """SIGTERM proc (a launcher stops its cluster on it), wait up to grace
    seconds, then SIGKILL it and whatever it started that is still alive."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    left = descendants(proc.pid) if proc.poll() is None else []
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    kill_pids(left)


# --- ps-server -------------------------------------------------------------

def start_server(procs, tmp, args, name="server", start_timeout=10.0, prefix=()):
    """Start ps-server on 127.0.0.1 with an ephemeral port and wait (bounded)
    for its endpoint file. Returns (Popen, endpoint); the log is
    tmp/<name>.log. prefix is a command to run it under (valgrind ...)."""
    need(SERVER)
    ep_file = os.path.join(tmp, name + ".endpoint")
    log = os.path.join(tmp, name + ".log")
    p = procs.start(list(prefix) + [SERVER, "--listen", "tcp://127.0.0.1:*",
                                     "--endpoint-file", ep_file] + list(args), log)
    try:
        wait_for(lambda: os.path.exists(ep_file), start_timeout,
                 "ps-server endpoint file", proc=p)
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, read_text(log))) from None
    with open(ep_file) as f:
        endpoint = f.read().strip()
    assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
    return p, endpoint


# --- the launcher ----------------------------------------------------------

def run_launcher(args, run_dir, timeout=120.0):
    """Run scripts/ps-launch with args and --run-dir run_dir (plus --build,
    and --time-limit below timeout unless args has one). Returns
    (rc, stdout, stderr, summary) with summary the parsed summary.json or
    None. On timeout, stops the launcher (SIGTERM: it stops its cluster)
    and fails."""
    need(SERVER, WORKER)
    timeout = scaled(timeout)
    extra = []
    if "--time-limit" not in args:
        extra += ["--time-limit", "%g" % max(5.0, timeout - 15.0)]
    cmd = ([LAUNCH, "--build", BUILD, "--run-dir", run_dir] + extra
           + list(args))
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_tree(p)
        out, err = p.communicate()
        raise AssertionError("ps-launch did not finish within %.0f s:\n%s%s"
                             % (timeout, out.decode("utf-8", "replace"),
                                err.decode("utf-8", "replace"))) from None
    summary = None
    path = os.path.join(run_dir, "summary.json")
    if os.path.exists(path):
        summary = read_json(path)
    return (p.returncode, out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"), summary)


# --- model files (common/ps_modelfile.h) ------------------------------------

MODELFILE_H = os.path.join(ROOT, "common", "ps_modelfile.h")
_LAYOUT_LINE = re.compile(
    r"^\s*\*\s+(\d+|\.\.\.)\s+(char\[(\d+)\]|u32|u64|f32\[num_params\])\s+(\S+)")
_FIELD_NAMES = {"model": "name", "format": "format", "hidden": "hidden",
                "CRC-32": "crc"}


def model_layout():
    """The header fields of the model file as ps_modelfile.h documents
    them: [(key, struct code)] in order, checking the documented offsets
    add up. Reading the layout from the header keeps this reader and the
    documented format one thing; a field the C code writes elsewhere than
    documented fails the CRC or size checks of read_model()."""
    fields, offset = [], 0
    with open(MODELFILE_H) as f:
        for line in f:
            m = _LAYOUT_LINE.match(line)
            if not m:
                continue
            off, kind, size, word = m.groups()
            if kind.startswith("f32"):
                assert off == str(offset), "%s: weights at %s, fields end at %d" % (
                    MODELFILE_H, off, offset)
                return fields
            assert off == str(offset), "%s: field %s at %s, expected %d" % (
                MODELFILE_H, word, off, offset)
            word = word.rstrip(",;:.")
            key = _FIELD_NAMES.get(word, word)
            code = {"u32": "I", "u64": "Q"}.get(kind) or "%ss" % size
            fields.append((key, code))
            offset += struct.calcsize("<" + code)
    raise AssertionError("%s: no layout with f32[num_params] weights found"
                         % MODELFILE_H)


def read_model(path):
    """Parse a model file per the layout in ps_modelfile.h, checking magic,
    format version, size and CRC-32. Returns a dict of the header fields
    (strings without their NUL padding: name, hidden, ...; numbers:
    input_dim, output_dim, init_seed, version, num_params, ...) and
    weights (list of floats)."""
    fields = model_layout()
    header = struct.Struct("<" + "".join(code for _, code in fields))
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) >= header.size + 4, \
        "%s: %d bytes, shorter than a header" % (path, len(data))
    m = {}
    for (key, _), v in zip(fields, header.unpack_from(data, 0)):
        m[key] = v.rstrip(b"\0").decode() if isinstance(v, bytes) else v
    assert m["magic"] == "PSMODEL", "%s: bad magic %r" % (path, data[:8])
    assert m["format"] == 1, "%s: format version %d" % (path, m["format"])
    n = m["num_params"]
    want = header.size + 4 * n + 4
    assert len(data) == want, "%s: %d bytes, header says %d" % (path, len(data), want)
    (crc,) = struct.unpack_from("<I", data, want - 4)
    assert crc == zlib.crc32(data[:want - 4]), "%s: CRC mismatch" % path
    m["weights"] = list(struct.unpack_from("<%df" % n, data, header.size))
    return m
