"""Integration tests: real ps-server and ps-worker processes over loopback
ZeroMQ (and ipc://), started by the launcher or by hand. Each test gets a
fresh temp dir `tmp` from the runner and a hard timeout."""
import gzip
import os
import re
import signal
import socket
import struct
import subprocess
import time

import pslib
from pslib import timeout

SUMMARY_KEYS = ("test_accuracy", "test_loss", "updates", "samples_per_second",
                "wall_seconds", "staleness_mean", "staleness_max", "options")
REJECT_KINDS = ("malformed", "version", "unknown_worker", "bad_length",
                "nonfinite", "model_mismatch", "bad_rank")


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


def steps(rows, workers, rank, batch, epochs):
    """Pushes one trainer makes: its shard's batches per epoch, times epochs
    (shards as ps_dataset_shard_range cuts them)."""
    n = rows // workers + (1 if rank < rows % workers else 0)
    return -(-n // batch) * epochs


def closed_port():
    """A socket bound to a free 127.0.0.1 port that does not listen:
    connections to the port are refused while it is held."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    return s


@timeout(90)
def test_synthetic_regression_recovers_line(tmp):
    run = os.path.join(tmp, "run")
    rc, out, err, summary = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:20000", "--workers", "2",
         "--epochs", "5", "--lr", "0.1", "--lr-schedule", "const", "--batch", "32",
         "--quiet"], run, timeout=75)
    assert rc == 0, output(rc, out, err)
    assert summary is not None, "no summary.json\n" + output(rc, out, err)

    m = pslib.read_model(os.path.join(run, "model.bin"))
    assert (m["name"], m["input_dim"], m["output_dim"], m["num_params"]) == \
        ("linear", 1, 1, 2), m
    w, b = m["weights"]
    # y = 3x + 2 + N(0, 0.1^2): least squares lands well inside 0.05.
    assert abs(w - 3.0) < 0.05 and abs(b - 2.0) < 0.05, \
        "weights [%g, %g], want [3, 2]" % (w, b)

    # Every push was applied: no refusals, one update per minibatch.
    want = sum(steps(20000, 2, r, 32, 5) for r in range(2))
    assert summary["updates"] == want == m["version"], \
        (summary["updates"], want, m["version"])
    assert summary["samples"] == 5 * 20000, summary["samples"]
    assert summary["rejected"]["total"] == 0, summary["rejected"]
    assert isinstance(summary["staleness_mean"], float) and summary["staleness_mean"] >= 0
    assert isinstance(summary["staleness_max"], int) and summary["staleness_max"] >= 0
    assert sum(summary["staleness_histogram"].values()) == want, summary["staleness_histogram"]
    assert summary["wall_seconds"] > 0, summary["wall_seconds"]
    # Regression data: a loss, no accuracy.
    assert summary["test_accuracy"] is None and summary["test_loss"] < 0.02, summary


@timeout(120)
def test_fashion_mnist_softmax_short_run(tmp):
    pslib.need_fashion_mnist()
    run = os.path.join(tmp, "run")
    # 3 epochs with the rate halved every 1000 updates: about 0.83 on
    # every seed tried (the default schedule needs its 15 epochs).
    rc, out, err, summary = pslib.run_launcher(
        ["--workers", "2", "--epochs", "3", "--lr", "0.2", "--lr-decay-steps", "1000",
         "--quiet"], run, timeout=105)
    assert rc == 0, output(rc, out, err)
    assert summary is not None, "no summary.json\n" + output(rc, out, err)
    missing = [k for k in SUMMARY_KEYS if k not in summary or summary[k] is None]
    assert not missing, "summary.json lacks %s: %s" % (missing, summary)
    assert summary["test_accuracy"] >= 0.80, "test accuracy %.4f" % summary["test_accuracy"]
    assert summary["updates"] == sum(steps(60000, 2, r, 64, 3) for r in range(2))
    assert summary["samples_per_second"] > 0 and summary["wall_seconds"] > 0
    assert summary["options"]["workers"] == 2 and summary["options"]["model"] == "softmax"
    m = pslib.read_model(os.path.join(run, "model.bin"))
    assert (m["name"], m["input_dim"], m["output_dim"], m["num_params"]) == \
        ("softmax", 784, 10, 7850), m
    assert m["version"] == summary["updates"]


@timeout(90)
def test_garbage_peer_does_not_stop_others(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER, pslib.BADPEER)
    stats = os.path.join(tmp, "server.json")
    model = os.path.join(tmp, "model.bin")
    data, batch, epochs = "synthetic-linear:20000", 32, 5
    with pslib.Procs() as procs:
        server, ep = pslib.start_server(procs, tmp, [
            "--workers", "2", "--lr", "0.1", "--stats-out", stats,
            "--model-out", model, "--idle-timeout", "30", "--eval-grace", "5"])

        def trainer(rank):
            return procs.start([
                pslib.WORKER, "--connect", ep, "--model", "linear", "--data", data,
                "--rank", str(rank), "--workers", "2", "--batch", str(batch),
                "--epochs", str(epochs), "--timeout", "20"],
                os.path.join(tmp, "worker-%d.log" % rank))

        # The hostile peer starts once trainer 0 has joined, so its traffic
        # meets a server that is training, and its pull as worker id 1
        # claims rank 0's id from another connection. Trainer 1 starts
        # once the hostile peer is done: the server cannot finish the run
        # (and stop answering) before it has had all its answers.
        w0 = trainer(0)
        server_log = os.path.join(tmp, "server.log")
        pslib.wait_for(lambda: "worker 0 joined" in pslib.read_text(server_log), 30,
                       "worker 0 joining", proc=w0)
        bad = procs.start([pslib.BADPEER, "--connect", ep, "--model", "linear",
                           "--input-dim", "1", "--output-dim", "1", "--seed", "1",
                           "--timeout", "5"], os.path.join(tmp, "badpeer.log"))
        rc = pslib.wait(bad, 60, "ps-badpeer")
        bad_out = pslib.read_text(os.path.join(tmp, "badpeer.log"))
        assert rc == 0, "ps-badpeer exit status %d:\n%s" % (rc, bad_out)
        m = re.search(r"^ps-badpeer: (\d+) hostile messages, (\d+) refused as expected$",
                      bad_out, re.M)
        assert m and m.group(1) == m.group(2), bad_out
        hostile = int(m.group(1))
        w1 = trainer(1)

        for r, w in ((0, w0), (1, w1)):
            rc = pslib.wait(w, 60, "worker %d" % r)
            assert rc == 0, "worker %d exit status %d:\n%s" % (
                r, rc, pslib.read_text(os.path.join(tmp, "worker-%d.log" % r)))
        rc = pslib.wait(server, 30, "ps-server")
        assert rc == 0, "ps-server exit status %d:\n%s" % (
            rc, pslib.read_text(os.path.join(tmp, "server.log")))

    st = pslib.read_json(stats)
    rej = st["rejected"]
    assert rej["total"] >= hostile, (hostile, rej)
    zero = [k for k in REJECT_KINDS if not rej[k] > 0]
    assert not zero, "no rejections counted for %s: %s" % (zero, rej)
    # Only the trainers' pushes were applied, and they taught the line.
    want = sum(steps(20000, 2, r, batch, epochs) for r in range(2))
    assert st["updates"] == want, (st["updates"], want)
    assert st["workers_done"] == 2, st
    w, b = pslib.read_model(model)["weights"]
    assert abs(w - 3.0) < 0.1 and abs(b - 2.0) < 0.1, "weights [%g, %g]" % (w, b)


@timeout(30)
def test_worker_fails_cleanly_without_server(tmp):
    pslib.need(pslib.WORKER)
    s = closed_port()
    try:
        ep = "tcp://127.0.0.1:%d" % s.getsockname()[1]
        t0 = time.monotonic()
        p = subprocess.run([pslib.WORKER, "--connect", ep, "--timeout", "2",
                            "--model", "linear", "--data", "synthetic-linear:100"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        secs = time.monotonic() - t0
    finally:
        s.close()
    err = p.stderr.decode("utf-8", "replace")
    assert p.returncode != 0, "exit status 0 without a server:\n" + err
    assert secs < 6.0, "took %.1f s to give up with --timeout 2" % secs
    errors = [l for l in err.splitlines() if " error: " in l]
    assert errors and ep in errors[-1], "no error line naming %s:\n%s" % (ep, err)


def run_cmd(cmd, seconds=30):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=seconds)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


@timeout(60)
def test_bad_flags_and_files(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER)

    rc, out, err = run_cmd([pslib.SERVER, "--lr", "abc"])
    assert rc == 2, output(rc, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "--lr" in lines[0], output(rc, out, err)

    # Shared memory is for ZeroMQ without CURVE: refused before anything
    # starts (the key files need not exist for that).
    for cmd in ([pslib.SERVER, "--shm", "--transport", "mpi"],
                [pslib.SERVER, "--shm", "--curve-secret", "s", "--curve-authorized", "d"],
                [pslib.WORKER, "--shm", "--data", "synthetic-linear:100",
                 "--curve-secret", "s", "--curve-server-key", "k"]):
        rc, out, err = run_cmd(cmd)
        assert rc == 2 and "--shm is for ZeroMQ without CURVE" in err, output(rc, out, err)

    images = os.path.join(tmp, "no-such-images")
    labels = os.path.join(tmp, "no-such-labels")
    rc, out, err = run_cmd([pslib.WORKER, "--data", "idx:%s,%s" % (images, labels)])
    assert rc != 0 and images in err, output(rc, out, err)

    # An IDX image file whose header promises 100 images but holds 3,
    # plain and gzipped (the loader reads both).
    header = struct.pack(">IIII", 0x803, 100, 28, 28)
    lab = os.path.join(tmp, "labels.idx")
    with open(lab, "wb") as f:
        f.write(struct.pack(">II", 0x801, 100) + bytes(100))
    plain = os.path.join(tmp, "short-images.idx")
    with open(plain, "wb") as f:
        f.write(header + bytes(3 * 784))
    packed = os.path.join(tmp, "short-images.idx.gz")
    with open(packed, "wb") as f:
        f.write(gzip.compress(header + bytes(3 * 784)))
    for img in (plain, packed):
        rc, out, err = run_cmd([pslib.WORKER, "--data", "idx:%s,%s" % (img, lab)])
        assert rc != 0 and "truncated" in err and img in err, output(rc, out, err)

    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        ep = "tcp://127.0.0.1:%d" % s.getsockname()[1]
        rc, out, err = run_cmd([pslib.SERVER, "--listen", ep, "--idle-timeout", "5"])
    finally:
        s.close()
    assert rc != 0 and "address already in use" in err.lower() and ep in err, \
        output(rc, out, err)

    run = os.path.join(tmp, "run")
    rc, out, err = run_cmd([pslib.LAUNCH, "--build", pslib.BUILD, "--workers", "0",
                            "--run-dir", run])
    assert rc == 2 and "--workers" in err, output(rc, out, err)
    assert not os.path.exists(run), "ps-launch made a run directory for bad options"


@timeout(60)
def test_launcher_stops_all_when_one_fails(tmp):
    run = os.path.join(tmp, "run")
    t0 = time.monotonic()
    # Options after '--' go to the trainers only: they crash after a few
    # steps while the server and the evaluator run on.
    rc, out, err, summary = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:1000", "--workers", "2",
         "--epochs", "1000", "--quiet", "--", "--crash-after", "5"], run, timeout=40)
    secs = time.monotonic() - t0
    assert rc == 1, output(rc, out, err)
    assert secs < 20, "took %.1f s to stop" % secs
    assert re.search(r"stopping: worker-\d exited with status 3", err), output(rc, out, err)
    assert "crashing on purpose" in err, \
        "the failing worker's log tail is not shown\n" + output(rc, out, err)
    assert summary is None, "summary.json written for a failed run"
    left = pslib.stragglers()
    pslib.kill_pids(q for q, _ in left)
    assert not left, "processes left running: %s" % left


@timeout(60)
def test_launcher_refuses_bad_options_before_starting(tmp):
    run = os.path.join(tmp, "run")
    missing = os.path.join(tmp, "no-such-images")
    cases = [
        (["--data", "idx:%s,%s" % (missing, missing), "--model", "linear"], missing),
        (["--model", "mlp", "--hidden", "256,,10"], "hidden"),
        (["--optimizer", "nesterov", "--momentum", "0"], "momentum"),
        (["--optimizer", "adam", "--beta2", "1"], "beta2"),
        (["--lr", "-1"], "--lr"),
        (["--patience", "3"], "--val-fraction"),
    ]
    for args, word in cases:
        rc, out, err, summary = pslib.run_launcher(args + ["--quiet"], run, timeout=30)
        assert rc == 2, "%s: %s" % (args, output(rc, out, err))
        assert word in err, "%s: error does not name %r\n%s" % (args, word, output(rc, out, err))
        assert not os.path.exists(os.path.join(run, "server.log")), \
            "%s: a cluster process was started" % args
        assert not pslib.stragglers()


@timeout(60)
def test_ipc_transport(tmp):
    run = os.path.join(tmp, "run")
    rc, out, err, summary = pslib.run_launcher(
        ["--transport", "ipc", "--model", "linear", "--data", "synthetic-linear:4000",
         "--workers", "2", "--epochs", "2", "--lr", "0.1", "--lr-schedule", "const",
         "--quiet"], run, timeout=45)
    assert rc == 0, output(rc, out, err)
    with open(os.path.join(run, "endpoint")) as f:
        ep = f.read().strip()
    assert ep == "ipc://" + os.path.join(run, "server.sock"), ep
    assert summary["updates"] == sum(steps(4000, 2, r, 64, 2) for r in range(2)), summary
    assert summary["test_loss"] is not None, summary


@timeout(90)
def test_sigint_stops_cluster(tmp):
    pslib.need_fashion_mnist()
    pslib.need(pslib.SERVER, pslib.WORKER)
    run = os.path.join(tmp, "run")
    metrics = os.path.join(run, "metrics.jsonl")
    p = subprocess.Popen([pslib.LAUNCH, "--build", pslib.BUILD, "--run-dir", run,
                          "--epochs", "1000", "--time-limit", "60",
                          "--progress-every", "0.2", "--quiet"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        # Training is under way once the evaluator has seen an update.
        def training():
            for line in pslib.read_text(metrics).splitlines():
                if re.search(r'"updates": [1-9]', line):
                    return True
            return False
        pslib.wait_for(training, 45, "evaluator progress with updates", proc=p)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=15)
        secs = time.monotonic() - t0
    finally:
        pslib.stop_tree(p, grace=0)
        left = pslib.stragglers()
        pslib.kill_pids(q for q, _ in left)
    out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    assert p.returncode == 130, output(p.returncode, out, err)
    # The launcher gives each process 5 s after SIGTERM before it kills
    # it: a stop within 4 s means every one stopped by itself.
    assert secs < 4, "took %.1f s to stop after SIGINT\n%s" % (
        secs, "\n".join("%s: %s" % (f, pslib.read_text(os.path.join(run, f))[-300:])
                        for f in sorted(os.listdir(run)) if f.endswith(".log")))
    assert "interrupted" in err, output(p.returncode, out, err)
    assert not left, "processes left running: %s" % left
    # Stopped last and cleanly, the server still writes what it trained.
    m = pslib.read_model(os.path.join(run, "model.bin"))
    assert m["name"] == "softmax" and m["version"] > 0, m


@timeout(30)
def test_badpeer_fails_when_unanswered(tmp):
    """The hostile peer is a check that can fail: with nobody answering,
    every case fails and it exits 1."""
    pslib.need(pslib.BADPEER)
    s = closed_port()
    try:
        ep = "tcp://127.0.0.1:%d" % s.getsockname()[1]
        rc, out, err = run_cmd([pslib.BADPEER, "--connect", ep, "--input-dim", "1",
                                "--model", "linear", "--timeout", "0.1"], 20)
    finally:
        s.close()
    assert rc == 1, output(rc, out, err)
    assert re.search(r"^FAIL garbage-1-bytes .*no reply", out, re.M), output(rc, out, err)
    assert "ok " not in out, output(rc, out, err)
