"""Integration tests of fault tolerance (docs/FAULTS.md): real clusters
started by the launcher, processes killed with SIGKILL mid-run, a server
restarted from its checkpoint, acknowledgements dropped on purpose, damaged
checkpoint files. Every test bounds its own time and kills only what it
started."""
import os
import re
import signal
import subprocess
import time

import pslib
from pslib import timeout


def launch_bg(args, run_dir, env=None):
    """Start scripts/ps-launch in the background with --run-dir run_dir."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    cmd = [pslib.LAUNCH, "--build", pslib.BUILD, "--run-dir", run_dir] + list(args)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def finish(p, seconds):
    """Wait for the launcher; (rc, stdout, stderr, summary or None)."""
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        pslib.stop_tree(p)
        out, err = p.communicate()
        raise AssertionError("ps-launch did not finish within %.0f s:\n%s%s"
                             % (seconds, out.decode("utf-8", "replace"),
                                err.decode("utf-8", "replace"))) from None
    summary = None
    path = os.path.join(p.args[4], "summary.json")  # args: launch --build B --run-dir D
    if os.path.exists(path):
        summary = pslib.read_json(path)
    return (p.returncode, out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"), summary)


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


def log_has(run_dir, name, pattern):
    return re.search(pattern, pslib.read_text(os.path.join(run_dir, name + ".log")) or "")


def pid_of(launcher, needle):
    """The launcher's child process whose command line contains needle."""
    table = pslib._proc_table()
    for q in pslib.descendants(launcher.pid):
        if q in table and needle in table[q][3]:
            return q
    return None


def kill9(launcher, needle):
    q = pid_of(launcher, needle)
    assert q, "no process %r under the launcher" % needle
    os.kill(q, signal.SIGKILL)


def no_stragglers():
    left = pslib.stragglers()
    pslib.kill_pids(q for q, _ in left)
    assert not left, "processes left running: %s" % left


def steps(rows, workers, rank, batch, epochs):
    n = rows // workers + (1 if rank < rows % workers else 0)
    return -(-n // batch) * epochs


def dropped_pushes(run_dir, name):
    m = log_has(run_dir, name, r"(\d+) pushes dropped")
    return int(m.group(1)) if m else 0


@timeout(90)
def test_killed_worker_training_completes(tmp):
    """kill -9 one of 3 trainers: the server drops it after the worker
    timeout, the others finish, the short run's accuracy is reached, and
    the summary records the failure."""
    pslib.need_fashion_mnist()
    run = os.path.join(tmp, "run")
    # The short run's settings (test_launcher.py): about 0.83 untouched.
    p = launch_bg(["--workers", "3", "--epochs", "3", "--lr", "0.2",
                   "--lr-decay-steps", "1000", "--worker-timeout", "2",
                   "--heartbeat", "0.5", "--quiet"], run)
    pslib.wait_for(lambda: log_has(run, "server", r"worker 1 joined"), 40,
                   "worker 1 registers", p)
    kill9(p, "--rank 1 ")
    rc, out, err, s = finish(p, 70)
    assert rc == 0, output(rc, out, err)
    assert "worker-1 was killed by signal 9" in err, output(rc, out, err)
    assert s["failures"] == [dict(s["failures"][0], process="worker-1", status=-9,
                                  restarted=False)], s["failures"]
    assert s["workers_lost"] == 1 and s["restarts"] == 0, s
    assert s["server"]["per_worker"][1]["lost"], s["server"]["per_worker"]
    assert s["test_accuracy"] >= 0.80, s["test_accuracy"]
    assert log_has(run, "server", r"worker 1 lost: nothing heard for"), "no loss logged"
    no_stragglers()


@timeout(90)
def test_killed_server_resumes_from_checkpoint(tmp):
    """kill -9 the server: the launcher restarts it with --resume, the
    trainers register again and finish. Every push is accounted for once:
    applied by the resumed server, lost with the killed one after its last
    checkpoint (the summary's updates_lost), or dropped by its worker."""
    run = os.path.join(tmp, "run")
    rows, workers, epochs, batch = 8000, 2, 3, 16
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:%d" % rows,
                   "--workers", str(workers), "--epochs", str(epochs), "--batch", str(batch),
                   "--restart", "1", "--checkpoint-every", "100", "--no-eval",
                   "--worker-timeout", "3", "--heartbeat", "0.3", "--quiet", "--",
                   "--step-delay-ms", "2"], run)
    ckdir = os.path.join(run, "checkpoints")
    pslib.wait_for(lambda: os.path.isdir(ckdir) and len(os.listdir(ckdir)) >= 2, 40,
                   "two checkpoints written", p)
    kill9(p, "ps-server ")
    rc, out, err, s = finish(p, 70)
    assert rc == 0, output(rc, out, err)
    assert "server was killed by signal 9; restarting it" in err, output(rc, out, err)
    assert s["restarts"] == 1 and s["failures"][0]["process"] == "server", s["failures"]
    srv = s["server"]
    assert srv["resumed"] and s["resumed_version"] >= 100, srv
    assert s["resumed_version"] % 100 == 0, "resumed from a version no checkpoint had"
    assert log_has(run, "server", r"resumed from .*ckpt-0*%d\.psck" % s["resumed_version"])
    pushes = [w["pushes"] for w in srv["per_worker"]]
    made = [steps(rows, workers, r, batch, epochs) for r in range(workers)]
    dropped = [dropped_pushes(run, "worker-%d" % r) for r in range(workers)]
    assert srv["updates"] == sum(pushes), srv
    # Nothing applied twice, nothing unaccounted for.
    assert sum(pushes) + s["updates_lost"] + sum(dropped) == sum(made), \
        (pushes, s["updates_lost"], dropped, made)
    assert all(w["done"] for w in srv["per_worker"]), srv["per_worker"]
    for r in range(workers):
        assert log_has(run, "worker-%d" % r, r"registered again with \S+ as worker %d" % r)
    # It still learned y = 3x + 2.
    w = pslib.read_model(os.path.join(run, "model.bin"))["weights"]
    assert abs(w[0] - 3) < 0.05 and abs(w[1] - 2) < 0.05, w
    no_stragglers()


def run_with_dropped_replies(tmp, hook, every):
    """A 2-trainer linear run whose server leaves every `every`-th reply of
    one kind unsent (fault hook `hook`, an environment variable). It must
    finish; returns the run directory, the server's summary and the
    pushes each trainer made."""
    run = os.path.join(tmp, "run")
    rows, workers, epochs, batch = 3000, 2, 3, 32
    env = dict(os.environ, **{hook: str(every)})
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:%d" % rows,
                   "--workers", str(workers), "--epochs", str(epochs), "--batch", str(batch),
                   "--no-eval", "--heartbeat", "0.2", "--quiet"], run, env=env)
    rc, out, err, s = finish(p, 50)
    assert rc == 0, output(rc, out, err)
    made = [steps(rows, workers, r, batch, epochs) for r in range(workers)]
    return run, s["server"], made


@timeout(60)
def test_dropped_acks_are_resent_and_applied_once(tmp):
    """The server drops every 5th acknowledgement (fault injection): the
    trainers send those pushes again, the server acknowledges them as
    repeats, and every push is applied exactly once."""
    run, srv, made = run_with_dropped_replies(tmp, "PS_FAULT_DROP_ACK_EVERY", 5)
    assert [w["pushes"] for w in srv["per_worker"]] == made, (srv["per_worker"], made)
    assert srv["updates"] == sum(made), srv
    assert srv["acks_dropped"] == sum(made) // 5, srv
    assert srv["duplicates"] == srv["acks_dropped"], srv
    resent = 0
    for r in range(len(made)):
        m = log_has(run, "worker-%d" % r,
                    r"(\d+) pushes sent again \((\d+) already applied\)")
        assert m, "worker %d did not report resends" % r
        resent += int(m.group(1))
    assert resent == srv["acks_dropped"], (resent, srv["acks_dropped"])
    no_stragglers()


@timeout(60)
def test_dropped_pulls_are_sent_again(tmp):
    """The server leaves every 25th pull of a trainer unanswered (fault
    injection): the trainer learns from its next heartbeat's answer that
    the pull is not held back, sends it again, and finishes; every push is
    applied once. Without that it would wait until the run's time limit."""
    run, srv, made = run_with_dropped_replies(tmp, "PS_FAULT_DROP_PULL_EVERY", 25)
    assert srv["updates"] == sum(made), srv
    assert srv["pulls_dropped"] >= 5, srv
    resent = 0
    for r in range(len(made)):
        m = log_has(run, "worker-%d" % r, r"(\d+) pulls sent again")
        if m:
            resent += int(m.group(1))
    assert resent == srv["pulls_dropped"], (resent, srv["pulls_dropped"])
    no_stragglers()


@timeout(60)
def test_bsp_with_killed_worker_finishes(tmp):
    """Under bsp the others wait for every live trainer each step: a
    killed one is dropped after --worker-timeout and the rest finish."""
    run = os.path.join(tmp, "run")
    rows, workers, epochs, batch = 6000, 3, 3, 64
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:%d" % rows,
                   "--workers", str(workers), "--epochs", str(epochs), "--batch", str(batch),
                   "--consistency", "bsp", "--no-eval", "--worker-timeout", "2",
                   "--heartbeat", "0.5", "--slow-worker", "0:10", "--quiet"], run)
    pslib.wait_for(lambda: log_has(run, "server", r"worker 2 joined"), 30,
                   "worker 2 registers", p)
    t_kill = time.monotonic()
    kill9(p, "--rank 2 ")
    rc, out, err, s = finish(p, 45)
    assert rc == 0, output(rc, out, err)
    srv = s["server"]
    assert srv["workers_lost"] == 1 and srv["per_worker"][2]["lost"], srv
    made = steps(rows, workers, 0, batch, epochs)
    assert srv["bsp_steps"] == made == srv["per_worker"][0]["pushes"], (srv, made)
    assert time.monotonic() - t_kill < 30
    no_stragglers()


@timeout(60)
def test_restarted_worker_rejoins(tmp):
    """--restart 1: a trainer killed mid-run is started again, registers
    with the same rank, gets the current weights and trains on its shard."""
    run = os.path.join(tmp, "run")
    rows, workers, epochs, batch = 4000, 2, 4, 32
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:%d" % rows,
                   "--workers", str(workers), "--epochs", str(epochs), "--batch", str(batch),
                   "--restart", "1", "--no-eval", "--quiet", "--",
                   "--step-delay-ms", "3"], run)
    pslib.wait_for(lambda: log_has(run, "server", r"worker 1 joined"), 30,
                   "worker 1 registers", p)
    time.sleep(0.3)  # let it push a few times first (the check below holds anyway)
    kill9(p, "--rank 1 ")
    rc, out, err, s = finish(p, 50)
    assert rc == 0, output(rc, out, err)
    assert "worker-1 was killed by signal 9; restarting it" in err, output(rc, out, err)
    srv = s["server"]
    assert srv["rejoins"] == 1 and s["restarts"] == 1, srv
    assert log_has(run, "server", r"worker 1 registered again"), "no rejoin logged"
    made = steps(rows, workers, 1, batch, epochs)
    # Its pushes from before the kill, then a whole run of its shard.
    assert srv["per_worker"][1]["pushes"] > made and srv["per_worker"][1]["done"], srv
    assert srv["per_worker"][0]["pushes"] == made, srv
    no_stragglers()


def write_checkpoint(tmp):
    """A short run whose server leaves a final checkpoint; its directory."""
    run = os.path.join(tmp, "ck")
    rc, out, err, s = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:1000", "--workers", "1",
         "--epochs", "2", "--no-eval", "--checkpoint-every", "1000000", "--quiet"],
        run, timeout=40)
    assert rc == 0, output(rc, out, err)
    ckdir = os.path.join(run, "checkpoints")
    names = sorted(os.listdir(ckdir))
    assert names == ["ckpt-%020d.psck" % s["updates"], "manifest.json"], names
    manifest = pslib.read_json(os.path.join(ckdir, "manifest.json"))
    assert manifest["num_shards"] == 1 and manifest["ranges"] == [[0, 2]], manifest
    return ckdir, os.path.join(ckdir, names[0]), s


def resume_server(ckdir):
    """ps-server --resume on ckdir, expected to refuse: (rc, stderr)."""
    p = subprocess.run([pslib.SERVER, "--listen", "tcp://127.0.0.1:*", "--checkpoint-dir",
                        ckdir, "--resume", "--idle-timeout", "2"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    return p.returncode, p.stderr.decode("utf-8", "replace")


@timeout(60)
def test_damaged_checkpoint_is_refused(tmp):
    ckdir, path, _ = write_checkpoint(tmp)
    with open(path, "rb") as f:
        good = f.read()
    for what, data in (("flipped byte", good[:200] + bytes([good[200] ^ 0x10]) + good[201:]),
                       ("truncated", good[:len(good) - 7])):
        with open(path, "wb") as f:
            f.write(data)
        rc, err = resume_server(ckdir)
        assert rc != 0, (what, rc, err)
        assert re.search(r"cannot resume: no valid checkpoint in .*(checksum|truncated|bytes)",
                         err), (what, err)
    # No checkpoint at all, and a checkpoint of another run's worker count.
    os.unlink(path)
    rc, err = resume_server(ckdir)
    assert rc != 0 and "no checkpoint in" in err, err
    with open(path, "wb") as f:
        f.write(good)
    p = subprocess.run([pslib.SERVER, "--listen", "tcp://127.0.0.1:*", "--workers", "3",
                        "--checkpoint-dir", ckdir, "--resume"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0 and "1 workers, this one has 3" in err, err


@timeout(90)
def test_interrupted_run_checkpoints_and_resumes(tmp):
    """Ctrl-C stops the run cleanly with a final checkpoint and nothing
    left running; --resume on the same run directory carries on from it."""
    run = os.path.join(tmp, "run")
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:20000", "--workers", "2",
                   "--epochs", "50", "--no-eval", "--checkpoint-every", "1000000",
                   "--quiet", "--", "--step-delay-ms", "1"], run)
    pslib.wait_for(lambda: log_has(run, "worker-1", r"epoch \d+/50"), 40,
                   "training under way", p)
    p.send_signal(signal.SIGINT)
    rc, out, err, _ = finish(p, 30)
    assert rc == 130, output(rc, out, err)
    no_stragglers()
    m = log_has(run, "server", r"final checkpoint at version (\d+)")
    assert m, pslib.read_text(os.path.join(run, "server.log"))
    version = int(m.group(1))
    assert os.path.exists(os.path.join(run, "checkpoints", "ckpt-%020d.psck" % version))

    rc, out, err, s = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:20000", "--workers", "2",
         "--epochs", "1", "--no-eval", "--resume", "--quiet"], run, timeout=40)
    assert rc == 0, output(rc, out, err)
    srv = s["server"]
    assert srv["resumed"] and srv["resumed_version"] == version, srv
    assert srv["updates"] == version + 2 * steps(20000, 2, 0, 64, 1), (srv["updates"], version)
    no_stragglers()
