"""Integration tests of the consistency models (docs/CONSISTENCY.md): bsp and
one async trainer against the synchronous-SGD oracle (tests/tools/
ps-sgd-oracle.c), the ssp bound as the server records it, asynchrony with a
slowed trainer, byes under bsp and ssp, Downpour intervals, and the
staleness remedies. Synthetic data throughout, so nothing is skipped."""
import json
import os
import random
import struct
import subprocess

import pslib
from pslib import timeout

ORACLE = os.path.join(pslib.BIN, "ps-sgd-oracle")


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


def steps(rows, workers, rank, batch, epochs):
    """Minibatches one trainer takes (shards as ps_dataset_shard_range cuts
    them: the first rows % workers ranks have one row more)."""
    n = rows // workers + (1 if rank < rows % workers else 0)
    return -(-n // batch) * epochs


def launch(tmp, name, args, seconds=40):
    """Run the launcher (no evaluator) to success; returns (run dir,
    server.json)."""
    run = os.path.join(tmp, name)
    rc, out, err, summary = pslib.run_launcher(
        list(args) + ["--no-eval", "--quiet"], run, timeout=seconds)
    assert rc == 0, "%s: %s" % (name, output(rc, out, err))
    assert summary is not None, "%s: no summary.json" % name
    return run, pslib.read_json(os.path.join(run, "server.json"))


def oracle(tmp, name, args):
    """Run ps-sgd-oracle with args; returns the model file it wrote."""
    pslib.need(ORACLE)
    path = os.path.join(tmp, name + ".bin")
    p = subprocess.run([ORACLE, "--model-out", path] + list(args),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    rc, out, err = (p.returncode, p.stdout.decode("utf-8", "replace"),
                    p.stderr.decode("utf-8", "replace"))
    assert rc == 0, "%s: %s" % (name, output(rc, out, err))
    return path


def assert_same_model(got_path, want_path, what):
    """The two model files hold the same spec, version and weights, bit for
    bit: the files are equal byte for byte."""
    got, want = pslib.read_model(got_path), pslib.read_model(want_path)
    header = [k for k in want if k != "weights"]
    assert [got[k] for k in header] == [want[k] for k in header], \
        "%s: headers differ:\n  cluster %s\n  oracle  %s" % (
            what, {k: got[k] for k in header}, {k: want[k] for k in header})
    diffs = [(i, a, b) for i, (a, b) in enumerate(zip(got["weights"], want["weights"]))
             if struct.pack("<f", a) != struct.pack("<f", b)]
    if diffs:
        worst = max(abs(a - b) / max(abs(b), 1e-30) for _, a, b in diffs)
        raise AssertionError(
            "%s: %d of %d weights differ from the oracle's (largest relative "
            "difference %.3g; first: index %d %r vs %r)" % (
                what, len(diffs), len(want["weights"]), worst, *diffs[0]))
    with open(got_path, "rb") as f, open(want_path, "rb") as g:
        assert f.read() == g.read(), "%s: files differ outside the weights" % what


def write_idx(tmp, rows, side, classes, seed):
    """A small image classification set in IDX files: side x side pixels,
    the label the brightest of `classes` bands of rows (plus noise).
    Returns the data spec "idx:IMAGES,LABELS"."""
    rng = random.Random(seed)
    images, labels = bytearray(), bytearray()
    band = side // classes
    for _ in range(rows):
        px = [rng.randrange(256) for _ in range(side * side)]
        sums = [sum(px[c * band * side:(c + 1) * band * side]) for c in range(classes)]
        labels.append(max(range(classes), key=lambda c: sums[c] + rng.gauss(0, 300)))
        images += bytes(px)
    img = os.path.join(tmp, "images.idx")
    lab = os.path.join(tmp, "labels.idx")
    with open(img, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, rows, side, side) + images)
    with open(lab, "wb") as f:
        f.write(struct.pack(">II", 0x801, rows) + labels)
    return "idx:%s,%s" % (img, lab)


def line_weights(run):
    w, b = pslib.read_model(os.path.join(run, "model.bin"))["weights"]
    return w, b


# Equality with the oracle is exact, not within a tolerance: the cluster and
# the oracle run the same float32 operations in the same order. Each trainer
# computes its gradient on weights it pulled (a bit-exact copy of the
# server's) with the same model code and one BLAS thread; the server's bsp
# step sums share_r * g_r in rank order whatever order the pushes arrived
# in, as the oracle does; both apply it with ps_optim as update number t.
# With one worker, share 1.0f times g is g, and async applies g directly.
EQUAL_CASES = [
    # (name, consistency, workers, rows of --data, options the launcher
    # and the oracle share)
    # 1921 rows: shards of 641, 640 and 640 rows, 21, 20 and 20 batches an
    # epoch. Ranks 1 and 2 say bye after 40 steps; the last two steps are
    # rank 0's alone, as in the oracle.
    ("linear-bsp-3", "bsp", 3, 1921,
     ["--model", "linear", "--data", "synthetic-linear:1921", "--epochs", "2",
      "--batch", "32", "--lr", "0.1", "--lr-schedule", "const"]),
    ("linear-bsp-2", "bsp", 2, 1000,
     ["--model", "linear", "--data", "synthetic-linear:1000", "--epochs", "2",
      "--batch", "25", "--lr", "0.2", "--lr-schedule", "invsqrt",
      "--lr-decay-steps", "10"]),
    ("logistic-ssp0-3", "ssp:0", 3, 900,
     ["--model", "logistic", "--data", "synthetic-logistic:900", "--epochs", "2",
      "--batch", "16", "--lr", "0.5", "--lr-schedule", "const"]),
]


@timeout(90)
def test_bsp_equals_synchronous_sgd(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER, ORACLE)
    idx = write_idx(tmp, 600, 6, 3, 5)
    cases = EQUAL_CASES + [
        # Softmax over 36 pixels and 3 classes, momentum with a decaying
        # rate: optimizer state and schedule follow the step count too.
        ("softmax-bsp-2", "bsp", 2, 600,
         ["--model", "softmax", "--data", idx, "--epochs", "2", "--batch", "20",
          "--lr", "0.05", "--lr-schedule", "exp", "--lr-decay-steps", "20",
          "--lr-gamma", "0.5", "--optimizer", "momentum", "--momentum", "0.9"]),
    ]
    for name, mode, workers, rows, opts in cases:
        common = opts + ["--workers", str(workers), "--seed", "3"]
        run, st = launch(tmp, name, common + ["--consistency", mode])
        # ssp:0 is bsp, and says so.
        assert st["consistency"] == "bsp" and st["ssp_bound"] == 0, (name, st)
        assert st["workers_done"] == workers and st["rejected"]["total"] == 0, (name, st)
        assert st["staleness_max"] == 0, (name, st)
        assert_same_model(os.path.join(run, "model.bin"), oracle(tmp, name, common),
                          name)
        # One step per clock: as many as the busiest trainer's batches.
        args = dict(zip(common[::2], common[1::2]))
        per_rank = [steps(rows, workers, r, int(args["--batch"]), int(args["--epochs"]))
                    for r in range(workers)]
        assert st["bsp_steps"] == st["updates"] == max(per_rank), (name, st, per_rank)
        assert st["pushes"] == sum(per_rank), (name, st, per_rank)


@timeout(60)
def test_one_async_worker_equals_sequential_sgd(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER, ORACLE)
    cases = [
        ("linear-async-1",
         ["--model", "linear", "--data", "synthetic-linear:2000", "--epochs", "2",
          "--batch", "32", "--lr", "0.1", "--lr-schedule", "const",
          "--val-fraction", "0.1"]),
        # Layers, tanh, adam and warm-up: every kind of state in order.
        ("mlp-async-1",
         ["--model", "mlp", "--hidden", "8,4", "--activation", "tanh",
          "--data", "synthetic-logistic:1000", "--epochs", "2", "--batch", "16",
          "--optimizer", "adam", "--lr", "0.01", "--lr-schedule", "const",
          "--lr-warmup", "10"]),
    ]
    for name, opts in cases:
        common = opts + ["--workers", "1", "--seed", "11"]
        run, st = launch(tmp, name, common)
        assert st["consistency"] == "async" and st["staleness_max"] == 0, (name, st)
        assert_same_model(os.path.join(run, "model.bin"), oracle(tmp, name, common),
                          name)


@timeout(60)
def test_prefetch_with_own_push_equals_sequential_sgd(tmp):
    # One prefetching trainer computes on weights that lack its newest
    # push and adds that push itself at the rate the server announced
    # (Weights.sgd_lr, the schedule's rate at the version the push will be
    # applied as): the same float32 operations as the server's plain SGD,
    # so the run is sequential SGD, bit for bit, with or without a
    # schedule. --stale-prefetch leaves the push out and is not.
    pslib.need(pslib.SERVER, pslib.WORKER, ORACLE)
    cases = [
        ("linear-prefetch-const",
         ["--model", "linear", "--data", "synthetic-linear:2000", "--epochs", "2",
          "--batch", "32", "--lr", "0.1", "--lr-schedule", "const"]),
        ("softmax-prefetch-exp",
         ["--model", "softmax", "--data", write_idx(tmp, 600, 6, 3, 7),
          "--epochs", "2", "--batch", "20", "--lr", "0.3", "--lr-schedule", "exp",
          "--lr-decay-steps", "15", "--lr-gamma", "0.5", "--lr-warmup", "5"]),
    ]
    for name, opts in cases:
        common = opts + ["--workers", "1", "--seed", "5"]
        run, st = launch(tmp, name, common + ["--prefetch"])
        # The pushes still report the version of the weights pulled.
        assert st["staleness_max"] == 1 and st["staleness_histogram"]["0"] == 1, st
        want = oracle(tmp, name, common)
        assert_same_model(os.path.join(run, "model.bin"), want, name)
        with open(os.path.join(run, "worker-0.log")) as f:
            log = f.read()
        assert "own newest gradient added to %d of %d" % (
            st["pushes"], st["pushes"]) in log, log
        # Every pull after the first step's claimed the weights the
        # trainer held (its last reply plus its own push), and the server,
        # whose weights they were exactly, sent none back: still bit for
        # bit the oracle's.
        assert st["pulls_unchanged"] == st["pushes"], st
        assert "%d pull replies \"unchanged\"" % st["pushes"] in log, log
        stale, st_stale = launch(tmp, name + "-stale",
                                 common + ["--prefetch", "--stale-prefetch"])
        assert st_stale["pulls_unchanged"] == 0, st_stale
        try:
            assert_same_model(os.path.join(stale, "model.bin"), want, name)
        except AssertionError:
            pass
        else:
            raise AssertionError("%s: --stale-prefetch gave the sequential "
                                 "weights" % name)


@timeout(60)
def test_prefetch_adds_no_own_push_to_another_update(tmp):
    # Momentum is not w -= lr * g: the server announces no rate and the
    # trainer adds nothing, and says so.
    run, st = launch(tmp, "prefetch-momentum", [
        "--model", "linear", "--data", "synthetic-linear:1000", "--workers", "1",
        "--epochs", "1", "--batch", "50", "--lr", "0.05", "--lr-schedule", "const",
        "--optimizer", "momentum", "--prefetch"])
    with open(os.path.join(run, "worker-0.log")) as f:
        log = f.read()
    assert "own newest gradient added to 0 of %d" % st["pushes"] in log, log
    assert "update other than plain SGD" in log, log
    # Nothing added, nothing claimed: every pull got the weights.
    assert st["pulls_unchanged"] == 0, st


@timeout(60)
def test_ssp_bound_holds_with_a_slow_worker(tmp):
    rows, batch = 4000, 32
    run, st = launch(tmp, "ssp2", [
        "--model", "linear", "--data", "synthetic-linear:%d" % rows, "--workers", "2",
        "--epochs", "1", "--batch", str(batch), "--lr", "0.1", "--lr-schedule",
        "const", "--consistency", "ssp:2", "--slow-worker", "1:5"])
    assert st["consistency"] == "ssp" and st["ssp_bound"] == 2, st
    # Trainer 0 does a step in well under a millisecond, trainer 1 sleeps
    # 5 ms in each: trainer 0 hits the bound again and again, and its
    # held-back pulls are answered when trainer 1's push brings the
    # slowest clock up to 2 behind it, never later than that.
    assert st["pulls_waited"] > 0, st
    assert st["clock_lead_max"] == 2, st
    want = sum(steps(rows, 2, r, batch, 1) for r in range(2))
    assert st["updates"] == st["pushes"] == want, (st, want)
    assert st["workers_done"] == 2, st
    w, b = line_weights(run)
    assert abs(w - 3) < 0.1 and abs(b - 2) < 0.1, (w, b)


def async_with_straggler(tmp, name, delay_ms):
    """An async run started by hand: trainer 0 takes 10 big steps (batch
    320) sleeping delay_ms in each, and only once it has joined does
    trainer 1 start its 200 small ones (batch 32). Returns server.json."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    stats = os.path.join(d, "server.json")
    with pslib.Procs() as procs:
        server, ep = pslib.start_server(procs, d, [
            "--workers", "2", "--lr", "0.1", "--stats-out", stats,
            "--idle-timeout", "20", "--eval-grace", "1"])

        def trainer(rank, batch, epochs, extra):
            return procs.start([
                pslib.WORKER, "--connect", ep, "--model", "linear",
                "--data", "synthetic-linear:6400", "--rank", str(rank),
                "--workers", "2", "--batch", str(batch), "--epochs", str(epochs),
                "--timeout", "15"] + extra, os.path.join(d, "worker-%d.log" % rank))

        slow = trainer(0, 320, 1, ["--step-delay-ms", str(delay_ms)])
        pslib.wait_for(lambda: "worker 0 joined" in pslib.read_text(
            os.path.join(d, "server.log")), 20, "worker 0 joining", proc=server)
        fast = trainer(1, 32, 2, [])
        for r, p in ((0, slow), (1, fast)):
            rc = pslib.wait(p, 30, "%s worker %d" % (name, r))
            assert rc == 0, "%s worker %d exit status %d" % (name, r, rc)
        assert pslib.wait(server, 20, "%s ps-server" % name) == 0
    return pslib.read_json(stats)


@timeout(60)
def test_async_slow_worker_still_converges(tmp):
    base = ["--model", "linear", "--data", "synthetic-linear:6400", "--workers", "2",
            "--epochs", "1", "--batch", "32", "--lr", "0.1", "--lr-schedule", "const"]
    # Trainer 1 slowed a little; trainer 0 slowed a lot (it starts first,
    # so trainer 1 runs while it sleeps). Both learn the line.
    for name, slow in (("slow-1-2ms", ["--slow-worker", "1:2"]),
                       ("slow-0-20ms", ["--slow-worker", "0:20"])):
        run, st = launch(tmp, name, base + slow)
        w, b = line_weights(run)
        assert abs(w - 3) < 0.05 and abs(b - 2) < 0.05, (name, w, b)
        assert st["workers_done"] == 2 and st["updates"] == 200, (name, st)

    # The maximum staleness grows with the slowdown. How stale the slow
    # trainer's pushes are depends on how many pushes of the fast one fall
    # within one of its steps, so the test makes that count large and
    # certain: the slow trainer sleeps 100 ms in each of its 10 steps, and
    # the fast one's 200 steps (a fraction of a second even in a sanitizer
    # build) all happen during them, within a few of its steps. Unslowed,
    # the slow trainer may finish before the fast one starts; staleness then
    # comes from scheduling alone.
    quick = async_with_straggler(tmp, "delay-0", 0)
    slow = async_with_straggler(tmp, "delay-100", 100)
    for st in (quick, slow):
        assert st["updates"] == 210 and st["workers_done"] == 2, st
    assert slow["staleness_max"] >= 50, slow
    assert slow["staleness_max"] > quick["staleness_max"], \
        (slow["staleness_max"], quick["staleness_max"])


@timeout(60)
def test_bye_does_not_block_bsp_or_ssp(tmp):
    """Trainers with unequal work: rank 0 trains 1 epoch, rank 1 three. Once
    rank 0 said bye, rank 1 goes on alone under bsp and ssp:1."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    rows, batch, epochs = 2000, 32, (1, 3)
    for mode in ("bsp", "ssp:1"):
        d = os.path.join(tmp, mode.replace(":", ""))
        os.makedirs(d)
        stats = os.path.join(d, "server.json")
        with pslib.Procs() as procs:
            server, ep = pslib.start_server(procs, d, [
                "--workers", "2", "--lr", "0.1", "--consistency", mode,
                "--stats-out", stats, "--model-out", os.path.join(d, "model.bin"),
                "--idle-timeout", "20", "--eval-grace", "1"])
            trainers = [procs.start([
                pslib.WORKER, "--connect", ep, "--model", "linear",
                "--data", "synthetic-linear:%d" % rows, "--rank", str(r),
                "--workers", "2", "--batch", str(batch), "--epochs", str(epochs[r]),
                "--timeout", "15"], os.path.join(d, "worker-%d.log" % r))
                for r in range(2)]
            for r, p in enumerate(trainers):
                rc = pslib.wait(p, 30, "%s worker %d" % (mode, r))
                assert rc == 0, "%s worker %d exit status %d:\n%s" % (
                    mode, r, rc, pslib.read_text(os.path.join(d, "worker-%d.log" % r)))
            rc = pslib.wait(server, 20, "%s ps-server" % mode)
            assert rc == 0, pslib.read_text(os.path.join(d, "server.log"))
        st = pslib.read_json(stats)
        per_rank = [steps(rows, 2, r, batch, epochs[r]) for r in range(2)]
        assert st["workers_done"] == 2, (mode, st)
        assert all(w["done"] for w in st["per_worker"]), (mode, st)
        assert [w["pushes"] for w in st["per_worker"]] == per_rank, (mode, st, per_rank)
        assert st["rejected"]["total"] == 0, (mode, st)
        if mode == "bsp":
            assert st["bsp_steps"] == st["updates"] == max(per_rank), (st, per_rank)
        else:
            assert st["updates"] == sum(per_rank) and st["clock_lead_max"] <= 1, st


@timeout(60)
def test_downpour_intervals(tmp):
    rows, batch, epochs, n_fetch, n_push = 4000, 32, 3, 4, 2
    run, st = launch(tmp, "downpour", [
        "--model", "linear", "--data", "synthetic-linear:%d" % rows, "--workers", "2",
        "--epochs", str(epochs), "--batch", str(batch), "--lr", "0.05",
        "--lr-schedule", "const", "--fetch-every", str(n_fetch),
        "--push-every", str(n_push)])
    w, b = line_weights(run)
    assert abs(w - 3) < 0.1 and abs(b - 2) < 0.1, (w, b)
    # One push per n_push steps, and one more for a remainder at the end.
    per_rank = [steps(rows, 2, r, batch, epochs) for r in range(2)]
    want = sum(-(-s // n_push) for s in per_rank)
    assert st["pushes"] == st["updates"] == want, (st, per_rank, want)
    assert [x["pushes"] for x in st["per_worker"]] == [-(-s // n_push) for s in per_rank], st
    assert st["samples"] == rows * epochs, st

    # bsp needs a pull between pushes: the launcher refuses the options
    # before it starts anything.
    bad = os.path.join(tmp, "bad")
    rc, out, err, summary = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:100", "--consistency",
         "bsp", "--fetch-every", "4", "--push-every", "2", "--quiet"], bad, timeout=20)
    assert rc == 2 and "--fetch-every" in err, output(rc, out, err)
    assert not os.path.exists(os.path.join(bad, "server.log"))


@timeout(60)
def test_staleness_lr_and_dc_asgd_run(tmp):
    base = ["--model", "linear", "--data", "synthetic-linear:4000", "--workers", "2",
            "--epochs", "3", "--batch", "32", "--lr", "0.1", "--lr-schedule", "const"]
    run, st = launch(tmp, "staleness-lr", base + ["--staleness-lr"])
    assert st["staleness_lr"] is True and st["dc_lambda"] == 0, st
    w, b = line_weights(run)
    assert abs(w - 3) < 0.05 and abs(b - 2) < 0.05, ("staleness-lr", w, b)

    run, st = launch(tmp, "dc-asgd", base + ["--dc-lambda", "0.5", "--slow-worker", "0:1"])
    assert st["staleness_lr"] is False and st["dc_lambda"] == 0.5, st
    w, b = line_weights(run)
    assert abs(w - 3) < 0.05 and abs(b - 2) < 0.05, ("dc-asgd", w, b)


@timeout(60)
def test_prefetch_overlaps_with_one_step_of_staleness(tmp):
    rows, batch, epochs = 4000, 32, 3
    run, st = launch(tmp, "prefetch", [
        "--model", "linear", "--data", "synthetic-linear:%d" % rows, "--workers", "1",
        "--epochs", str(epochs), "--batch", str(batch), "--lr", "0.1",
        "--lr-schedule", "const", "--prefetch"])
    w, b = line_weights(run)
    assert abs(w - 3) < 0.05 and abs(b - 2) < 0.05, (w, b)
    # One trainer that computes on the weights it asked for before its
    # previous push: every push but the first is exactly one update stale.
    n = steps(rows, 1, 0, batch, epochs)
    assert st["pushes"] == n, st
    assert st["staleness_histogram"]["0"] == 1, st
    assert st["staleness_histogram"]["1"] == n - 1, st
    assert st["staleness_max"] == 1, st

    bad = os.path.join(tmp, "bad")
    rc, out, err, summary = pslib.run_launcher(
        ["--model", "linear", "--data", "synthetic-linear:100", "--consistency",
         "bsp", "--prefetch", "--quiet"], bad, timeout=20)
    assert rc == 2 and "--prefetch" in err, output(rc, out, err)


@timeout(90)
def test_shared_memory_equals_sequential_sgd(tmp):
    # An MLP of 5123 weights (20 KB, above the 16 KB from which a local
    # run lends tensors through shared memory): every push and every pull
    # reply with weights travels as a segment, and the run is still
    # sequential SGD bit for bit, also when the prefetching trainer adds
    # its own push into the weights it took over from the server's
    # segment. --no-shm sends the same bytes through the socket, and so
    # does a trainer started with --shm whose server was not: the Welcome
    # says the server takes no shared tensors.
    pslib.need(pslib.SERVER, pslib.WORKER, ORACLE)
    common = ["--model", "mlp", "--hidden", "128", "--data", write_idx(tmp, 600, 6, 3, 9),
              "--epochs", "2", "--batch", "20", "--lr", "0.1", "--lr-schedule", "const",
              "--workers", "1", "--seed", "4"]
    want = oracle(tmp, "oracle", common)
    for name, extra in (("shm", []), ("shm-prefetch", ["--prefetch"]),
                        ("no-shm", ["--no-shm"]), ("trainer-shm", None)):
        if extra is None:
            run = os.path.join(tmp, name)
            rc, out, err, _ = pslib.run_launcher(
                common + ["--no-shm", "--no-eval", "--quiet", "--", "--shm"], run,
                timeout=40)
            assert rc == 0, "%s: %s" % (name, output(rc, out, err))
            assert "--shm" in pslib.read_text(os.path.join(run, "options.json")), name
            st = pslib.read_json(os.path.join(run, "server.json"))
        else:
            run, st = launch(tmp, name, common + extra)
        assert_same_model(os.path.join(run, "model.bin"), want, name)
        last = pslib.read_text(os.path.join(run, "server.metrics.jsonl")).splitlines()[-1]
        m = json.loads(last)
        replies = m["pulls"] - st["pulls_unchanged"]
        if name in ("no-shm", "trainer-shm"):
            assert m["msgs_shared_in"] == m["msgs_shared_out"] == 0, (name, m)
        else:
            assert st["pushes"] == 60 and replies > 0, (name, st, m)
            assert m["msgs_shared_in"] == st["pushes"], (name, st, m)
            assert m["msgs_shared_out"] == replies, (name, st, m)
