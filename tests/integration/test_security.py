"""Integration tests for the hardening: CURVE between real processes
(ps-launch --curve, keys by ps-keygen, intruders refused and counted), the
options that set it up, a hostile peer's random stream during a real run
(the server's counters must account for every message), a pull flood
that must not starve a trainer, and connections that never speak.
docs/SECURITY.md is the prose."""
import json
import os
import re
import socket
import stat
import subprocess
import time

import pslib
from pslib import timeout

KEYGEN = os.path.join(pslib.BIN, "ps-keygen")
REJECT_KINDS = ("malformed", "version", "unknown_worker", "bad_length",
                "nonfinite", "model_mismatch", "bad_rank")


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


def run_cmd(cmd, seconds=30):
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=seconds)
    return (p.returncode, p.stdout.decode("utf-8", "replace"),
            p.stderr.decode("utf-8", "replace"))


def steps(rows, workers, rank, batch, epochs):
    n = rows // workers + (1 if rank < rows % workers else 0)
    return -(-n // batch) * epochs


def keygen(tmp, names, subdir="keys"):
    d = os.path.join(tmp, subdir)
    rc, out, err = run_cmd([KEYGEN, "--dir", d, "--names", ",".join(names)])
    assert rc == 0, output(rc, out, err)
    return d


def read_key(path):
    with open(path) as f:
        return f.read().strip()


def start_launcher(args, run_dir, limit):
    """ps-launch in the background (stopped by the caller's cleanup)."""
    pslib.need(pslib.SERVER, pslib.WORKER, pslib.LAUNCH)
    cmd = [pslib.LAUNCH, "--build", pslib.BUILD, "--run-dir", run_dir,
           "--time-limit", "%g" % limit, "--quiet"] + list(args)
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def finish_launcher(proc, seconds):
    try:
        out, err = proc.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        pslib.stop_tree(proc)
        out, err = proc.communicate()
        raise AssertionError("ps-launch did not finish within %.0f s:\n%s%s" % (
            seconds, out.decode("utf-8", "replace"),
            err.decode("utf-8", "replace"))) from None
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def wait_endpoint(run_dir, proc, seconds=30):
    path = os.path.join(run_dir, "endpoint")
    pslib.wait_for(lambda: os.path.exists(path), seconds, "the server's endpoint",
                   proc=proc)
    with open(path) as f:
        return f.read().strip()


@timeout(120)
def test_curve_launcher_refuses_intruders(tmp):
    """ps-launch --curve trains with its own keys while three intruders
    try the same server: a key it does not know, no key at all, and a
    wrong server key. Each is refused at the handshake with a reason,
    none applies anything, and the server logs and counts them."""
    pslib.need(KEYGEN)
    run = os.path.join(tmp, "run")
    data, batch, epochs, workers = "synthetic-linear:20000", 32, 5, 2
    launcher = start_launcher(
        ["--curve", "--model", "linear", "--data", data, "--workers", str(workers),
         "--epochs", str(epochs), "--batch", str(batch), "--lr", "0.1",
         "--lr-schedule", "const", "--slow-worker", "0:2"], run, 90)
    intruders = []
    try:
        ep = wait_endpoint(run, launcher)
        keys = keygen(tmp, ["intruder", "other-server"], "intruder-keys")
        common = [pslib.WORKER, "--connect", ep, "--model", "linear", "--data", data,
                  "--workers", str(workers), "--rank", "0", "--batch", str(batch),
                  "--epochs", "1", "--timeout", "20"]
        server_key = os.path.join(run, "keys", "server.key")
        cases = {
            "unknown-key": ["--curve-secret", os.path.join(keys, "intruder.key_secret"),
                            "--curve-server-key", server_key],
            "no-key": [],
            "wrong-server-key": ["--curve-secret",
                                 os.path.join(run, "keys", "worker-0.key_secret"),
                                 "--curve-server-key",
                                 os.path.join(keys, "other-server.key")],
        }
        for name, extra in cases.items():
            log = os.path.join(tmp, name + ".log")
            intruders.append((name, log, pslib.start(common + extra, log)))
        for name, log, p in intruders:
            rc = pslib.wait(p, 30, name)
            text = pslib.read_text(log)
            assert rc == 1, "%s: exit status %d:\n%s" % (name, rc, text)
            assert "security handshake refused" in text, "%s:\n%s" % (name, text)
        rc, out, err = finish_launcher(launcher, 90)
    finally:
        pslib.stop([p for _, _, p in intruders])
        if launcher.poll() is None:
            pslib.stop_tree(launcher)
    assert rc == 0, output(rc, out, err)
    texts = {name: pslib.read_text(log) for name, log, _ in intruders}
    intruder_key = read_key(os.path.join(tmp, "intruder-keys", "intruder.key"))
    assert "refused this client's CURVE key %s" % intruder_key in texts["unknown-key"], \
        texts["unknown-key"]
    assert re.search(r"requires? CURVE", texts["no-key"]), texts["no-key"]
    assert "is --curve-server-key the server's public key" in texts["wrong-server-key"], \
        texts["wrong-server-key"]

    # Only the launcher's trainers trained; the intruders applied nothing.
    summary = pslib.read_json(os.path.join(run, "summary.json"))
    want = sum(steps(20000, workers, r, batch, epochs) for r in range(workers))
    assert summary["updates"] == want, (summary["updates"], want)
    assert all(w["pushes"] == steps(20000, workers, w["rank"], batch, epochs)
               for w in summary["server"]["per_worker"]), summary["server"]["per_worker"]
    w, b = pslib.read_model(os.path.join(run, "model.bin"))["weights"]
    assert abs(w - 3.0) < 0.05 and abs(b - 2.0) < 0.05, "weights [%g, %g]" % (w, b)

    # Refused, counted and logged: the unknown key by ZAP (exactly once,
    # libzmq does not retry after a refusal), the others at the handshake
    # (once per attempt; the wrong server key tries 3 times).
    rej = summary["rejected"]
    assert rej["unauthorized"] == 1, rej
    assert rej["handshake_failed"] >= 1 + 3, rej
    assert rej["total"] == rej["unauthorized"] + rej["handshake_failed"], rej
    assert all(rej[k] == 0 for k in REJECT_KINDS), rej
    log = pslib.read_text(os.path.join(run, "server.log"))
    assert "refused a client from 127.0.0.1 with key %s" % intruder_key in log, log
    assert "the client does not use CURVE" in log or \
        "closed during the handshake" in log, log
    assert "do not decrypt" in log, log

    # The launcher's keys: secrets 0600, and exactly its clients let in.
    kdir = os.path.join(run, "keys")
    for name in ("server", "worker-0", "worker-1", "eval"):
        mode = stat.S_IMODE(os.stat(os.path.join(kdir, name + ".key_secret")).st_mode)
        assert mode == 0o600, "%s.key_secret has mode %o" % (name, mode)
    assert sorted(os.listdir(os.path.join(kdir, "authorized"))) == \
        ["eval.key", "worker-0.key", "worker-1.key"]
    assert summary["options"]["curve"] is True


@timeout(90)
def test_curve_options_and_key_errors(tmp):
    """ps-keygen, and every misuse of the CURVE options a person is
    likely to make, each refused before starting with one clear line."""
    pslib.need(KEYGEN, pslib.SERVER, pslib.WORKER)
    keys = keygen(tmp, ["server", "worker"])
    sec = os.path.join(keys, "server.key_secret")
    pub = os.path.join(keys, "server.key")
    wsec = os.path.join(keys, "worker.key_secret")
    auth = os.path.join(tmp, "authorized")
    os.makedirs(auth)
    os.link(os.path.join(keys, "worker.key"), os.path.join(auth, "worker.key"))
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub).st_mode) == 0o644
    assert len(read_key(pub)) == 40

    # ps-keygen keeps existing keys unless told, and checks names.
    rc, out, err = run_cmd([KEYGEN, "--dir", keys, "--names", "new,server"])
    assert rc == 2 and "exists" in err, output(rc, out, err)
    assert not os.path.exists(os.path.join(keys, "new.key")), "wrote before refusing"
    before = read_key(pub)
    rc, out, err = run_cmd([KEYGEN, "--dir", keys, "--names", "server", "--force"])
    assert rc == 0 and read_key(pub) != before, output(rc, out, err)
    for bad in ("../x", ".hidden", "a/b", ""):
        rc, out, err = run_cmd([KEYGEN, "--dir", keys, "--names", bad])
        assert rc == 2, output(rc, out, err)

    srv = [pslib.SERVER, "--check"]
    wrk = [pslib.WORKER, "--check", "--data", "synthetic-linear:100", "--model", "linear"]
    rc, out, err = run_cmd(srv + ["--curve-secret", sec, "--curve-authorized", auth])
    assert rc == 0 and "CURVE" in out, output(rc, out, err)
    rc, out, err = run_cmd(wrk + ["--curve-secret", wsec, "--curve-server-key", pub])
    assert rc == 0, output(rc, out, err)

    short = os.path.join(tmp, "short.key")
    with open(short, "w") as f:
        f.write(read_key(pub)[:-1] + "\n")
    empty_dir = os.path.join(tmp, "empty")
    os.makedirs(empty_dir)
    bad_server = [
        (["--curve-secret", sec], "go together"),
        (["--curve-authorized", auth], "go together"),
        (["--curve-secret", os.path.join(tmp, "nope.key_secret"),
          "--curve-authorized", auth], "nope.key_secret"),
        (["--curve-secret", pub, "--curve-authorized", auth], "public key file"),
        (["--curve-secret", sec, "--curve-authorized", empty_dir], "no public key file"),
        (["--curve-secret", sec, "--curve-authorized", os.path.join(tmp, "nodir")],
         "nodir"),
        (["--curve-secret", sec, "--curve-authorized", auth, "--transport", "mpi"],
         "isolation"),
    ]
    for args, words in bad_server:
        rc, out, err = run_cmd(srv + args)
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, \
            "%s\n%s" % (args, output(rc, out, err))
    bad_worker = [
        (["--curve-secret", wsec], "go together"),
        (["--curve-server-key", pub], "go together"),
        (["--curve-secret", wsec, "--curve-server-key", sec], "secret key file"),
        (["--curve-secret", wsec, "--curve-server-key", short], "39 characters"),
        (["--curve-secret", wsec, "--curve-server-key", pub, "--connect", "mpi://0"],
         "isolation"),
    ]
    for args, words in bad_worker:
        rc, out, err = run_cmd(wrk + args)
        assert rc == 2 and words in err, "%s\n%s" % (args, output(rc, out, err))

    # A secret others may read still works, with a warning.
    os.chmod(wsec, 0o644)
    rc, out, err = run_cmd(wrk + ["--curve-secret", wsec, "--curve-server-key", pub])
    assert rc == 0 and "may be read by other users" in err, output(rc, out, err)

    # The launcher refuses CURVE over MPI before starting anything.
    run = os.path.join(tmp, "run")
    rc, out, err = run_cmd([pslib.LAUNCH, "--build", pslib.BUILD, "--curve",
                            "--transport", "mpi", "--run-dir", run])
    assert rc == 2 and "isolation" in err, output(rc, out, err)
    assert not os.path.exists(run)


def badpeer_report(text):
    """The counts a --chaos run of ps-badpeer printed."""
    m = re.search(r"^ps-badpeer: chaos .*: (\d+) hostile messages, (\d+) answered as "
                  r"expected, (\d+) wrong", text, re.M)
    sent = re.search(r"^ps-badpeer: sent (\{.*\})$", text, re.M)
    expect = re.search(r"^ps-badpeer: expect (\{.*\})$", text, re.M)
    assert m and sent and expect, text
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)),
            json.loads(sent.group(1)), json.loads(expect.group(1)))


@timeout(180)
def test_chaos_peer_during_a_real_run(tmp):
    """While the launcher trains softmax on Fashion-MNIST, ps-badpeer sends
    random bytes, truncated and oversized messages, envelopes with absurd
    lengths, NaN pushes and floods of pulls. The run still reaches its
    accuracy, nothing of the peer's is applied, and the server's counters
    equal what the peer sent, kind by kind."""
    pslib.need_fashion_mnist()
    pslib.need(pslib.BADPEER)
    run = os.path.join(tmp, "run")
    workers, epochs = 2, 3
    launcher = start_launcher(
        ["--workers", str(workers), "--epochs", str(epochs), "--lr", "0.2",
         "--lr-decay-steps", "1000", "--max-message-mb", "1"], run, 150)
    bad = None
    try:
        ep = wait_endpoint(run, launcher)
        log = os.path.join(tmp, "badpeer.log")
        # A frame of 2 MB is over the server's 1 MB; the model's 7850
        # floats (31 KB) are well under it.
        bad = pslib.start([pslib.BADPEER, "--connect", ep, "--model", "softmax",
                           "--input-dim", "784", "--output-dim", "10", "--seed", "1",
                           "--chaos", "60", "--oversize-bytes", "2000000",
                           "--timeout", "10", "--garbage-seed", "7"], log)
        rc_bad = pslib.wait(bad, 120, "ps-badpeer")
        rc, out, err = finish_launcher(launcher, 150)
    finally:
        if bad is not None:
            pslib.stop([bad])
        if launcher.poll() is None:
            pslib.stop_tree(launcher)
    text = pslib.read_text(log)
    assert rc_bad == 0, "ps-badpeer exit status %d:\n%s" % (rc_bad, text[-3000:])
    assert rc == 0, output(rc, out, err)
    total, good, wrong, sent, expect = badpeer_report(text)
    assert total == good and wrong == 0, text[-3000:]
    # It ran during training, every kind at least a few times.
    assert "training done" in text, text[-2000:]
    few = [k for k, v in sent.items() if v < 3]
    assert not few, "kinds sent fewer than 3 times: %s" % sent

    summary = pslib.read_json(os.path.join(run, "summary.json"))
    assert summary["test_accuracy"] >= 0.80, summary["test_accuracy"]
    want = sum(steps(60000, workers, r, 64, epochs) for r in range(workers))
    assert summary["updates"] == want, (summary["updates"], want)
    rej = summary["rejected"]
    mismatch = {k: (rej[k], expect[k]) for k in REJECT_KINDS if rej[k] != expect[k]}
    assert not mismatch, "server counted / peer sent: %s" % mismatch
    assert rej["total"] == sum(expect[k] for k in REJECT_KINDS), (rej, expect)
    assert rej["send_failed"] == 0, rej
    # Oversized frames are dropped by ZeroMQ unread: the peer saw each of
    # its connections dropped, and the server counted none of them.
    assert expect["oversized_dropped"] == sent["oversized"] > 0, expect
    # Every pull of the flood was answered with weights.
    assert summary["server"]["pulls"] >= expect["pulls"], (summary["server"], expect)


@timeout(150)
def test_pull_flood_does_not_starve_a_trainer(tmp):
    """A peer pulling the whole model as fast as the server answers (48
    requests always in flight) shares the server fairly: a trainer
    started after the flood began finishes while the flood goes on, in
    a bounded multiple of its time alone. ZeroMQ's ROUTER takes one
    message from each peer in turn; this checks that the server's loop
    keeps that fairness."""
    pslib.need_fashion_mnist()
    pslib.need(pslib.BADPEER)

    def train(name):
        log = os.path.join(tmp, name + ".log")
        t0 = time.monotonic()
        w = procs.start([pslib.WORKER, "--connect", ep, "--model", "softmax",
                         "--data", "fashion-mnist:train", "--rank", "0",
                         "--workers", "1", "--epochs", "1", "--timeout", "30"], log)
        rc = pslib.wait(w, 100, name)
        assert rc == 0, "%s: exit status %d:\n%s" % (name, rc, pslib.read_text(log))
        m = re.search(r"done: (\d+) steps, \d+ samples in ([0-9.]+) s",
                      pslib.read_text(log))
        assert m, pslib.read_text(log)
        return int(m.group(1)), float(m.group(2)), time.monotonic() - t0

    with pslib.Procs() as procs:
        # Alone: the trainer's time without a flood, on this machine now.
        server, ep = pslib.start_server(procs, tmp, [
            "--workers", "1", "--lr", "0.2", "--idle-timeout", "60",
            "--eval-grace", "5"], name="server-alone")
        n_alone, t_alone, _ = train("alone")
        assert pslib.wait(server, 30, "ps-server") == 0

        stats = os.path.join(tmp, "server.json")
        server, ep = pslib.start_server(procs, tmp, [
            "--workers", "1", "--lr", "0.2", "--idle-timeout", "60",
            "--eval-grace", "5", "--stats-out", stats], name="server-flood")
        log = os.path.join(tmp, "flood.log")
        flood = procs.start([pslib.BADPEER, "--connect", ep, "--model", "softmax",
                             "--input-dim", "784", "--output-dim", "10", "--seed", "1",
                             "--chaos", "100", "--kinds", "pull_flood",
                             "--timeout", "10"], log)
        # Let the flood fill its window before the trainer comes.
        pslib.wait_for(lambda: "hello-as-evaluator" in pslib.read_text(log), 20,
                       "the flood starting", proc=flood)
        time.sleep(0.5)
        n_flood, t_flood, wall = train("flooded")
        rc = pslib.wait(flood, 30, "ps-badpeer")
        assert rc == 0, pslib.read_text(log)[-2000:]
        assert pslib.wait(server, 30, "ps-server") == 0
    text = pslib.read_text(log)
    total, good, wrong, sent, expect = badpeer_report(text)
    st = pslib.read_json(stats)
    print("trainer alone: %d steps in %.2f s; beside the flood: %.2f s (%.1fx); "
          "flood: %d pulls answered, server pulls %d"
          % (n_alone, t_alone, t_flood, t_flood / t_alone, good, st["pulls"]))
    assert n_flood == n_alone
    # The flood stops when a reply says training is done, not before.
    m = re.search(r"^ps-badpeer: chaos ([0-9.]+) s: .*; training done$", text, re.M)
    assert m and float(m.group(1)) < 100, text[-2000:]
    # The flood really competed: thousands of whole-model pulls answered
    # while the trainer ran, and nothing was dropped.
    assert good >= 1000 and wrong == 0, text[-2000:]
    assert st["rejected"]["send_failed"] == 0, st["rejected"]
    # Fair turns cost the trainer about one flood reply per request; an
    # unfair loop would hold it until the flood ended (100 s).
    assert t_flood < max(20 * t_alone, 10.0), (t_alone, t_flood)


@timeout(90)
def test_silent_connections_cost_little_and_are_closed(tmp):
    """Fifty TCP connections that never speak (and a few that stop after
    half a greeting) do not keep two trainers from training, and the
    server closes them once the handshake time (10 s) is over."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    data, batch, epochs = "synthetic-linear:20000", 32, 3
    stats = os.path.join(tmp, "server.json")
    silent = []
    try:
        with pslib.Procs() as procs:
            server, ep = pslib.start_server(procs, tmp, [
                "--workers", "2", "--lr", "0.1", "--idle-timeout", "60",
                "--eval-grace", "1", "--stats-out", stats])
            host, port = ep[len("tcp://"):].rsplit(":", 1)
            t_open = time.monotonic()
            for i in range(55):
                s = socket.create_connection((host, int(port)), timeout=5)
                if i >= 50:
                    s.sendall(b"\xff\x00\x00")  # the start of a greeting
                silent.append(s)
            workers = [procs.start([
                pslib.WORKER, "--connect", ep, "--model", "linear", "--data", data,
                "--rank", str(r), "--workers", "2", "--batch", str(batch),
                "--epochs", str(epochs), "--timeout", "20"],
                os.path.join(tmp, "worker-%d.log" % r)) for r in range(2)]
            for r, w in enumerate(workers):
                rc = pslib.wait(w, 60, "worker %d" % r)
                assert rc == 0, pslib.read_text(os.path.join(tmp, "worker-%d.log" % r))
            assert pslib.wait(server, 30, "ps-server") == 0
            trained = time.monotonic() - t_open
        st = pslib.read_json(stats)
        want = sum(steps(20000, 2, r, batch, epochs) for r in range(2))
        assert st["updates"] == want, (st["updates"], want)
        assert trained < 30, "training beside silent connections took %.1f s" % trained
    finally:
        for s in silent:
            s.close()

    # Against a server that stays up, the same connections are closed by
    # it after the handshake time.
    with pslib.Procs() as procs:
        server, ep = pslib.start_server(procs, tmp, [
            "--workers", "1", "--idle-timeout", "60"], name="server-idle")
        host, port = ep[len("tcp://"):].rsplit(":", 1)
        socks = [socket.create_connection((host, int(port)), timeout=5)
                 for _ in range(10)]
        t0 = time.monotonic()
        try:
            for s in socks:
                s.settimeout(max(0.1, 20 - (time.monotonic() - t0)))
                got = b""
                while True:
                    chunk = s.recv(4096)  # the server's greeting, then EOF
                    if not chunk:
                        break
                    got += chunk
            closed_after = time.monotonic() - t0
        except socket.timeout:
            raise AssertionError("a silent connection still open after 20 s") from None
        finally:
            for s in socks:
                s.close()
        assert 8 <= closed_after <= 20, closed_after
