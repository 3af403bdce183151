"""Integration tests under a real mpirun (Open MPI): the MPI transport and
ZeroMQ bootstrapped through MPI train the synthetic regression, the MPMD
command a cluster user types, the same bsp weights in every run mode, ranks
that exit early, and MPI options used without mpirun. Every mpirun runs
with stdin from /dev/null under a timeout, with the Open MPI settings the
launcher uses (README "Running under mpirun"). Skipped when mpirun is
missing."""
import os
import shutil
import subprocess
import time

import pslib
from pslib import timeout

SUMMARY_KEYS = ("test_accuracy", "test_loss", "updates", "samples", "samples_per_second",
                "train_seconds", "wall_seconds", "staleness_mean", "staleness_max",
                "staleness_histogram", "rejected", "consistency", "model_version",
                "options", "server", "run_dir")
LINE = ["--model", "linear", "--data", "synthetic-linear:20000", "--workers", "2",
        "--epochs", "5", "--lr", "0.1", "--lr-schedule", "const", "--batch", "32"]


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


LSAN_SUPP = os.path.join(pslib.ROOT, "tests", "lsan-openmpi.supp")


def need_mpirun():
    path = shutil.which("mpirun")
    if not path:
        raise pslib.Skip("mpirun not found (Debian package openmpi-bin)")
    pslib.need(pslib.SERVER, pslib.WORKER)
    # For a sanitizer build (make SANITIZE=address,undefined check): what
    # Open MPI leaks by design is suppressed, which needs its components
    # still loaded at exit and malloc stacks unwound without frame
    # pointers. Harmless otherwise; this test's process and children only.
    os.environ.setdefault("LSAN_OPTIONS", "suppressions=%s:fast_unwind_on_malloc=0:"
                          "print_suppressions=0" % LSAN_SUPP)
    os.environ.setdefault("OMPI_MCA_mca_base_component_disable_dlclose", "1")
    return path


def mpi_env():
    """What scripts/ps-launch sets for a one-host job: root allowed (CI runs
    as root), oversubscription (4 ranks on 2 cores), shared memory only,
    idle ranks yield their core."""
    env = dict(os.environ)
    for k, v in (("OMPI_ALLOW_RUN_AS_ROOT", "1"), ("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"),
                 ("OMPI_MCA_rmaps_base_oversubscribe", "1"), ("OMPI_MCA_btl", "self,vader"),
                 ("OMPI_MCA_mpi_yield_when_idle", "1")):
        env.setdefault(k, v)
    return env


def no_mpi_env():
    """The environment without anything saying mpirun started us."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("OMPI_", "PMI_", "PMIX_"))}


def mpirun(blocks, seconds):
    """Run `mpirun -np N cmd... : -np M cmd...` for blocks [(N, cmd)] with
    stdin from /dev/null; returns (rc, output, seconds taken). Fails when
    it does not end within `seconds` (the job is killed then)."""
    cmd = [need_mpirun()]
    for i, (n, argv) in enumerate(blocks):
        cmd += ([":"] if i else []) + ["-np", str(n)] + list(argv)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=mpi_env())
    try:
        out, _ = p.communicate(timeout=pslib.scaled(seconds))
    except subprocess.TimeoutExpired:
        pslib.stop_tree(p)
        out, _ = p.communicate()
        raise AssertionError("mpirun did not finish within %.0f s:\n%s"
                             % (seconds, out.decode("utf-8", "replace"))) from None
    return p.returncode, out.decode("utf-8", "replace"), time.monotonic() - t0


def assert_line(path, what):
    m = pslib.read_model(path)
    assert (m["name"], m["num_params"]) == ("linear", 2), (what, m)
    w, b = m["weights"]
    # y = 3x + 2 + N(0, 0.1^2).
    assert abs(w - 3.0) < 0.05 and abs(b - 2.0) < 0.05, \
        "%s: weights [%g, %g], want [3, 2]" % (what, w, b)
    return m


def assert_no_stragglers(what):
    left = [(q, c) for q, c in pslib.stragglers()
            if "ps-server" in c or "ps-worker" in c or "mpirun" in c]
    assert not left, "%s: left running: %s" % (what, left)


def launch_line(tmp, transport):
    run = os.path.join(tmp, "run-" + transport)
    rc, out, err, summary = pslib.run_launcher(
        ["--mpi", "--transport", transport, "--quiet"] + LINE, run, timeout=40)
    assert rc == 0, output(rc, out, err)
    assert summary is not None, "no summary.json\n" + output(rc, out, err)
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    assert not missing, "summary.json lacks %s" % missing
    m = assert_line(os.path.join(run, "model.bin"), transport)
    # 2 trainers x ceil(10000 / 32) batches x 5 epochs, each applied.
    assert summary["updates"] == 2 * 313 * 5 == m["version"], (summary["updates"], m)
    assert summary["samples"] == 5 * 20000, summary["samples"]
    assert summary["rejected"]["total"] == 0, summary["rejected"]
    # The evaluator rank measured the loss over the same transport.
    assert summary["test_accuracy"] is None and summary["test_loss"] < 0.02, summary
    with open(os.path.join(run, "mpirun.cmd")) as f:
        cmd = f.read()
    assert cmd.count(" : ") == 3, cmd  # server, evaluator, 2 trainers
    assert ("--transport mpi" in cmd) == (transport == "mpi"), cmd
    return summary


@timeout(60)
def test_mpi_transport_trains_regression(tmp):
    need_mpirun()
    launch_line(tmp, "mpi")


@timeout(60)
def test_zmq_under_mpirun_trains_regression(tmp):
    need_mpirun()
    s = launch_line(tmp, "tcp")
    log = pslib.read_text(os.path.join(s["run_dir"], "mpirun.log"))
    # The server bound an ephemeral port and the ranks learned it via MPI.
    assert "listening on tcp://127.0.0.1:" in log, log


@timeout(60)
def test_raw_mpmd_command(tmp):
    """What a cluster user types: no --rank, --workers or --connect."""
    model = os.path.join(tmp, "model.bin")
    stats = os.path.join(tmp, "server.json")
    rc, out, secs = mpirun(
        [(1, [pslib.SERVER, "--transport", "mpi", "--lr", "0.1", "--model-out", model,
              "--stats-out", stats]),
         (2, [pslib.WORKER, "--model", "linear", "--data", "synthetic-linear:8000",
              "--epochs", "4", "--batch", "32"])], 40)
    assert rc == 0, "exit status %d\n%s" % (rc, out)
    assert "listening on mpi://0 for 2 worker(s)" in out, out
    # Both ranks of the one block found their trainer index.
    assert "rank 0 of 2" in out and "rank 1 of 2" in out, out
    m = assert_line(model, "raw mpmd")
    st = pslib.read_json(stats)
    assert st["workers_done"] == 2 and st["updates"] == m["version"] == 2 * 125 * 4, st


@timeout(90)
def test_bsp_same_weights_in_every_run_mode(tmp):
    """bsp with a fixed seed makes every update a deterministic function of
    the data: the launcher over ZeroMQ tcp, ZeroMQ under mpirun and the MPI
    transport write the same model file, byte for byte."""
    need_mpirun()
    common = ["--model", "logistic", "--data", "synthetic-logistic:900", "--workers", "2",
              "--epochs", "2", "--batch", "16", "--lr", "0.5", "--lr-schedule", "const",
              "--consistency", "bsp", "--seed", "3", "--no-eval", "--quiet"]
    files = {}
    for name, extra in (("local", []), ("mpi-tcp", ["--mpi", "--transport", "tcp"]),
                        ("mpi-mpi", ["--transport", "mpi"])):
        run = os.path.join(tmp, name)
        rc, out, err, summary = pslib.run_launcher(common + extra, run, timeout=30)
        assert rc == 0, "%s: %s" % (name, output(rc, out, err))
        st = pslib.read_json(os.path.join(run, "server.json"))
        assert st["consistency"] == "bsp" and st["staleness_max"] == 0, (name, st)
        # 450 rows a shard, 29 batches an epoch: 58 bsp steps.
        assert st["updates"] == 58 and st["rejected"]["total"] == 0, (name, st)
        with open(os.path.join(run, "model.bin"), "rb") as f:
            files[name] = f.read()
    # Two server shards under mpirun, over ZeroMQ and over MPI: the same
    # model again (written by the evaluator, which assembles the shards).
    shards = [a for a in common if a != "--no-eval"]
    for name, extra in (("mpi-tcp-2", ["--mpi", "--transport", "tcp", "--servers", "2"]),
                        ("mpi-mpi-2", ["--transport", "mpi", "--servers", "2"])):
        run = os.path.join(tmp, name)
        rc, out, err, summary = pslib.run_launcher(shards + extra, run, timeout=30)
        assert rc == 0, "%s: %s" % (name, output(rc, out, err))
        assert [sh["range"] for sh in summary["shards"]] == [[0, 2], [2, 3]], summary["shards"]
        for k in range(2):
            st = pslib.read_json(os.path.join(run, "server-%d.json" % k))
            assert st["shard"] == k and st["updates"] == 58, (name, st)
        with open(os.path.join(run, "model.bin"), "rb") as f:
            files[name] = f.read()
    ref = pslib.read_model(os.path.join(tmp, "local", "model.bin"))
    for name, data in files.items():
        if data != files["local"]:
            got = pslib.read_model(os.path.join(tmp, name, "model.bin"))
            raise AssertionError("%s: model file differs from the local run's:\n"
                                 "  local %s\n  %s %s" % (name, ref, name, got))


@timeout(90)
def test_worker_rank_exiting_early_does_not_hang(tmp):
    need_mpirun()
    # A trainer that dies (exit status 3 without MPI_Finalize): mpirun ends
    # the job, the launcher says so, nothing is left running.
    run = os.path.join(tmp, "crash")
    t0 = time.monotonic()
    rc, out, err, _ = pslib.run_launcher(
        ["--transport", "mpi", "--quiet"] + LINE + ["--", "--crash-after", "5"],
        run, timeout=40)
    assert rc == 1 and "mpirun exited with status" in err, output(rc, out, err)
    assert time.monotonic() - t0 < 30, "took %.1f s" % (time.monotonic() - t0)
    assert "crashing on purpose" in pslib.read_text(os.path.join(run, "mpirun.log"))
    assert_no_stragglers("launcher, crashed trainer")

    # The same in the raw MPMD form with ZeroMQ as the data path: the
    # server and the other trainer are stopped by mpirun, not left waiting.
    rc, out, secs = mpirun(
        [(1, [pslib.SERVER, "--idle-timeout", "60"]),
         (1, [pslib.WORKER, "--model", "linear", "--data", "synthetic-linear:20000",
              "--epochs", "50"]),
         (1, [pslib.WORKER, "--model", "linear", "--data", "synthetic-linear:20000",
              "--epochs", "50", "--crash-after", "5"])], 30)
    assert rc != 0 and "crashing on purpose" in out, "exit status %d\n%s" % (rc, out)
    assert secs < 20, "mpirun took %.1f s to end the job" % secs
    assert_no_stragglers("raw mpirun, crashed trainer")

    # A trainer that finishes cleanly long before the other (1 epoch against
    # 20): it waits in MPI_Finalize, the others go on, the job completes.
    for transport in ("mpi", "zmq"):
        stats = os.path.join(tmp, "early-%s.json" % transport)
        rc, out, secs = mpirun(
            [(1, [pslib.SERVER, "--transport", transport, "--stats-out", stats]),
             (1, [pslib.WORKER, "--model", "linear", "--data", "synthetic-linear:4000",
                  "--epochs", "1"]),
             (1, [pslib.WORKER, "--model", "linear", "--data", "synthetic-linear:4000",
                  "--epochs", "20"])], 30)
        assert rc == 0, "%s: exit status %d\n%s" % (transport, rc, out)
        st = pslib.read_json(stats)
        # ceil(2000 / 64) = 32 batches an epoch: 1 and 20 epochs.
        assert st["workers_done"] == 2 and st["pushes"] == 32 * 21, (transport, st)
    assert_no_stragglers("early finish")


@timeout(30)
def test_mpi_oversized_message_is_refused(tmp):
    """Bug: a message over --max-message-mb was received truncated into a
    16-byte buffer, and Open MPI's single-copy path wrote all of it there:
    the server crashed. Now it is refused and counted; training goes on."""
    need_mpirun()
    stats = os.path.join(tmp, "server.json")
    # 20482 weights: every 80 KB push is over the 10 KB limit.
    rc, out, _ = mpirun(
        [(1, [pslib.SERVER, "--transport", "mpi", "--max-message-mb", "0.01",
              "--stats-out", stats]),
         (1, [pslib.WORKER, "--model", "mlp", "--hidden", "4096", "--data",
              "synthetic-logistic:200", "--timeout", "10"])], 30)
    assert rc == 0, "exit status %d\n%s" % (rc, out)
    st = pslib.read_json(stats)
    assert st["updates"] == 0 and st["rejected"]["malformed"] == 4, st


@timeout(30)
def test_mpi_tensor_buffers_between_two_ranks(tmp):
    """The MPI transport's zero-copy paths between two real ranks
    (tests/tools/ps-mpi-tensors.c): one tensor buffer sent twice in a row
    under two envelopes and dropped at once, a received frame taken over
    without a copy, written and sent back under a longer envelope than
    its room holds. Both ranks must report every check held."""
    tool = os.path.join(pslib.BIN, "ps-mpi-tensors")
    pslib.need(tool)
    need_mpirun()
    rc, out, _ = mpirun([(2, [tool])], 30)
    assert rc == 0, "exit status %d\n%s" % (rc, out)
    for rank in (0, 1):
        assert "rank %d: ok" % rank in out, out


@timeout(60)
def test_mpi_receive_sees_a_message_that_arrived_unseen(tmp):
    """A message that reached a rank while it made no MPI call is seen by
    its next receive, even one that does not wait: Open MPI's MPI_Iprobe
    matches before it progresses, so the transport probes twice
    (tests/tools/ps-mpi-arrival.c; the ranks take turns through files,
    so that the receiver is outside MPI when the message lands). With
    one probe a receive found such a message a nap late."""
    tool = os.path.join(pslib.BIN, "ps-mpi-arrival")
    pslib.need(tool)
    need_mpirun()
    rc, out, _ = mpirun([(2, [tool, tmp])], 45)
    assert rc == 0, "exit status %d\n%s" % (rc, out)
    for rank in (0, 1):
        assert "rank %d: ok" % rank in out, out


@timeout(30)
def test_mpi_bad_options(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER)
    env = no_mpi_env()
    for argv in ([pslib.SERVER, "--transport", "mpi"],
                 [pslib.SERVER, "--listen", "mpi://*"]):
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                           env=env, timeout=10)
        err = p.stderr.decode("utf-8", "replace")
        assert p.returncode == 2 and "needs a job started by mpirun" in err, \
            (argv, p.returncode, err)
    # A client outside mpirun would otherwise be a world of one, talking
    # to itself.
    p = subprocess.run([pslib.WORKER, "--connect", "mpi://0", "--model", "linear",
                        "--data", "synthetic-linear:100"],
                       stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=10)
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode == 1 and "needs a job started by mpirun" in err, (p.returncode, err)
    p = subprocess.run([pslib.SERVER, "--transport", "carrier-pigeon"],
                       stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=10)
    assert p.returncode == 2, p

    if shutil.which("mpirun"):
        # Under mpirun: a job without a server, and a rank with a bad option,
        # end at once with an error instead of waiting for each other.
        rc, out, _ = mpirun([(2, [pslib.WORKER, "--model", "linear", "--data",
                                  "synthetic-linear:100"])], 20)
        assert rc != 0 and "no ps-server rank" in out, out
        rc, out, _ = mpirun([(1, [pslib.SERVER, "--transport", "mpi"]),
                             (1, [pslib.WORKER, "--model", "linear", "--bogus"])], 20)
        assert rc != 0 and "bogus" in out, out
        assert_no_stragglers("bad options under mpirun")


@timeout(60)
def test_micro_bench_runs(tmp):
    """The micro-benchmarks (make bench-micro) in their shortest form: every
    case runs, and the table and the CSV have a row for each, with figures
    (speed is the benchmark's business, not the test's)."""
    bench = os.path.join(pslib.BIN, "ps-bench-micro")
    pslib.need(bench)
    need_mpirun()
    rc, out, secs = mpirun([(2, [bench, "--reps", "1", "--min-time", "0.005",
                                 "--mem-mb", "16", "--out", tmp])], 50)
    assert rc == 0, "exit status %d\n%s" % (rc, out)
    # tcp+shm, ipc+shm: pserver over ZeroMQ with tensors through shared
    # memory, against the same raw ZeroMQ.
    transports = ("zmq-tcp", "tcp+shm", "zmq-ipc", "ipc+shm", "mpi")
    ops = ("pull round trip", "push round trip", "push stream")
    want = {(op, t, size) for op in ops for t in transports
            for size in ("4", "40000", "4000000")}
    want |= {("SGD apply", "cold", "4000000"), ("SGD apply", "warm", "4000000"),
             ("Adam apply", "cold", "4000000"), ("Adam apply", "warm", "4000000"),
             ("push check+SGD", "warm", "4000000")}
    mem = {("memory copy", "memory"), ("memory triad", "memory")}
    with open(os.path.join(tmp, "micro.csv")) as f:
        head = f.readline().strip().split(",")
        rows = [dict(zip(head, line.strip().split(","))) for line in f]
    assert len(rows) == len(want) + len(mem), rows
    assert {(r["what"], r["path"], r["bytes"]) for r in rows
            if r["path"] != "memory"} == want, rows
    assert {(r["what"], r["path"]) for r in rows if r["path"] == "memory"} == mem
    transport_paths = set(transports)
    for r in rows:
        cols = ["raw_per_s", "raw_us", "raw_mb_per_s"]
        if r["path"] != "memory":
            cols += ["pserver_per_s", "pserver_us", "pserver_mb_per_s", "ratio",
                     "ratio_min", "ratio_max"]
        # Both ranks run here, so the CPU time per operation of both is
        # counted for every transport row; the others have none.
        if r["path"] in transport_paths:
            cols += ["pserver_cpu_us", "raw_cpu_us"]
        else:
            assert r["pserver_cpu_us"] == r["raw_cpu_us"] == "", r
        assert all(float(r[c]) > 0 for c in cols), r
        assert r["target_met"] in ("", "yes", "no"), r
    # The three targets are judged: small pulls, 4 MB pushes, cold SGD.
    judged = {(r["what"], r["path"]) for r in rows if r["target_met"]}
    assert ("pull round trip", "zmq-tcp") in judged and \
        ("push stream", "zmq-ipc") in judged and ("push stream", "ipc+shm") in judged \
        and ("SGD apply", "cold") in judged, judged
    # The same rows on stdout, one table.
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(rows), out
    assert "written: " in out, out
