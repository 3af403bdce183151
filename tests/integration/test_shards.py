"""Integration tests of several server shards (ps-launch --servers S): the
ranges the shards own, bsp giving the same weights for S = 1, 2 and 3 as
synchronous SGD, asynchronous training across two shards, and the final
model assembled by the evaluator."""
import os
import re
import struct
import subprocess

import pslib
from pslib import timeout
from test_consistency import assert_same_model, oracle, output, steps, write_idx


def shard_ranges(n, s):
    """The cut of common/ps_shard.c, written out again: sizes differ by at
    most one, the first n mod s shards hold one more."""
    base, extra = divmod(n, s)
    out, b = [], 0
    for k in range(s):
        e = b + base + (1 if k < extra else 0)
        out.append([b, e])
        b = e
    return out


def run_shards(tmp, name, servers, args, seconds=60):
    run = os.path.join(tmp, name)
    rc, out, err, summary = pslib.run_launcher(
        list(args) + ["--servers", str(servers), "--quiet"], run, timeout=seconds)
    assert rc == 0, "%s: %s" % (name, output(rc, out, err))
    assert summary is not None, "%s: no summary.json" % name
    return run, summary


@timeout(90)
def test_prefetch_own_push_over_shards_equals_sequential_sgd(tmp):
    """One prefetching trainer over 2 and 3 shards adds its own newest
    push to each shard's part at the rate that shard announced: with a
    decaying rate and uneven ranges that is still sequential SGD, bit for
    bit."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    idx = write_idx(tmp, 500, 6, 3, 9)
    common = ["--model", "softmax", "--data", idx, "--epochs", "2", "--batch", "25",
              "--lr", "0.3", "--lr-schedule", "invsqrt", "--lr-decay-steps", "10",
              "--workers", "1", "--seed", "4"]
    want = oracle(tmp, "oracle", common)
    for servers in (2, 3):
        run, s = run_shards(tmp, "p%d" % servers, servers, common + ["--prefetch"])
        assert_same_model(os.path.join(run, "model.bin"), want,
                          "prefetch over %d shards" % servers)
        with open(os.path.join(run, "worker-0.log")) as f:
            log = f.read()
        pushes = steps(500, 1, 0, 25, 2)
        assert "own newest gradient added to %d of %d" % (pushes, pushes) in log, log
        # Each shard answered every pull after the first step's
        # "unchanged": the trainer's part of it was exactly the shard's.
        assert "%d pull replies \"unchanged\"" % (servers * pushes) in log, log


@timeout(120)
def test_bsp_same_weights_for_one_two_three_shards(tmp):
    """bsp with fixed seeds: S = 1, 2 and 3 shards give the synchronous-SGD
    oracle's weights bit for bit (softmax with momentum and a decaying
    rate: optimizer state and schedule are per shard)."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    idx = write_idx(tmp, 600, 6, 3, 5)
    common = ["--model", "softmax", "--data", idx, "--epochs", "2", "--batch", "20",
              "--lr", "0.05", "--lr-schedule", "exp", "--lr-decay-steps", "20",
              "--lr-gamma", "0.5", "--optimizer", "momentum", "--momentum", "0.9",
              "--workers", "2", "--seed", "3"]
    want = oracle(tmp, "oracle", common)
    n = 6 * 6 * 3 + 3
    for servers in (1, 2, 3):
        run, s = run_shards(tmp, "s%d" % servers, servers,
                            common + ["--consistency", "bsp"])
        assert_same_model(os.path.join(run, "model.bin"), want, "%d shard(s)" % servers)
        shards = s["shards"]
        assert [sh["range"] for sh in shards] == shard_ranges(n, servers), shards
        per_rank = [steps(600, 2, r, 20, 2) for r in range(2)]
        for sh in shards:
            assert sh["updates"] == max(per_rank) and sh["rejected"] == 0, sh
        if servers > 1:
            # Each shard wrote its own figures and log.
            for k in range(servers):
                st = pslib.read_json(os.path.join(run, "server-%d.json" % k))
                assert st["shard"] == k and st["num_shards"] == servers, st
                assert st["num_params"] == n and st["apply_seconds"] >= 0, st


@timeout(120)
def test_async_two_shards_reach_the_short_run_target(tmp):
    """The short Fashion-MNIST run (test_launcher.py) across two shards:
    the same accuracy target, every push applied by both shards, and the
    evaluator's model file holds the whole model."""
    pslib.need_fashion_mnist()
    run, s = run_shards(tmp, "run", 2, ["--workers", "2", "--epochs", "3", "--lr", "0.2",
                                        "--lr-decay-steps", "1000"], 105)
    assert s["test_accuracy"] >= 0.80, "test accuracy %.4f" % s["test_accuracy"]
    made = sum(steps(60000, 2, r, 64, 3) for r in range(2))
    for sh in s["shards"]:
        assert sh["updates"] == made, (sh, made)
        # Per-shard figures: traffic and apply time, each its own.
        assert sh["bytes_in"] > 4 * 3925 * made and sh["bytes_out"] > 0, sh
        assert sh["apply_seconds"] > 0, sh
    assert [sh["range"] for sh in s["shards"]] == [[0, 3925], [3925, 7850]], s["shards"]
    m = pslib.read_model(os.path.join(run, "model.bin"))
    assert m["name"] == "softmax" and m["num_params"] == 7850, m
    figures = pslib.read_json(os.path.join(run, "eval.json"))
    assert figures["test_accuracy"] == s["test_accuracy"], figures


@timeout(60)
def test_shard_options_are_checked(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER)
    run = os.path.join(tmp, "run")
    for args, words in ((["--servers", "0"], "--servers"),
                        (["--servers", "2", "--no-eval"], "evaluator"),
                        (["--servers", "2", "--listen", "tcp://127.0.0.1:5555"], "port")):
        rc, out, err, _ = pslib.run_launcher(["--model", "linear", "--data",
                                              "synthetic-linear:100"] + args, run, timeout=20)
        assert rc == 2 and words in err, (args, output(rc, out, err))
    p = subprocess.run([pslib.SERVER, "--shard", "2", "--shards", "2"],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
    assert p.returncode == 2 and b"--shard 2 of --shards 2" in p.stderr, p


def checkpoint_parts(path):
    """(weights, optimizer state floats, version) of a checkpoint file, as
    docs/PROTOCOL.md lays it out."""
    with open(path, "rb") as f:
        d = f.read()
    n = struct.unpack_from("<Q", d, 148)[0]
    w = list(struct.unpack_from("<%df" % n, d, 156))
    x = 156 + 4 * n + 8  # the server state
    workers = struct.unpack_from("<I", d, x + 4)[0]
    version, _, count = struct.unpack_from("<QQQ", d, x + 40)
    state = list(struct.unpack_from("<%df" % count, d, x + 200 + 48 * workers))
    return w, state, version


def newest(d):
    names = sorted(n for n in os.listdir(d) if n.endswith(".psck"))
    return os.path.join(d, names[-1])


def shard_files(run, servers):
    root = os.path.join(run, "checkpoints")
    if servers == 1:
        return [newest(root)]
    return [newest(os.path.join(root, "%d-shards" % servers, "shard-%d" % k))
            for k in range(servers)]


def assembled(run, servers):
    """The whole model's weights and optimizer state (first then second
    state float of every weight) from the newest checkpoint of each shard."""
    parts = [checkpoint_parts(p) for p in shard_files(run, servers)]
    versions = {v for _, _, v in parts}
    assert len(versions) == 1, versions
    w = [x for p in parts for x in p[0]]
    per = len(parts[0][1]) // len(parts[0][0])
    state = [x for j in range(per) for p in parts
             for x in p[1][j * len(p[0]):(j + 1) * len(p[0])]]
    return w, state, versions.pop()


@timeout(120)
def test_checkpoint_resumes_onto_other_shard_counts(tmp):
    """A run checkpointed by 2 shards, resumed onto 3 and then onto 1: the
    ranges are recut and the weights and optimizer state moved, bit for
    bit (no training after the resume: --epochs 0)."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    idx = write_idx(tmp, 400, 6, 3, 7)
    common = ["--model", "softmax", "--data", idx, "--batch", "20", "--workers", "2",
              "--optimizer", "adam", "--lr", "0.01", "--seed", "5"]
    run, s = run_shards(tmp, "run", 2, common + ["--epochs", "2"])
    want_w, want_state, version = assembled(run, 2)
    assert version == s["shards"][0]["updates"] > 0, (version, s["shards"])
    assert len(want_state) == 2 * len(want_w), "adam keeps two floats per weight"
    manifest = pslib.read_json(os.path.join(run, "checkpoints", "manifest.json"))
    assert manifest["num_shards"] == 2 and manifest["ranges"] == shard_ranges(111, 2)
    for servers in (3, 1):
        _, s2 = run_shards(tmp, "run", servers, common + ["--epochs", "0", "--resume"])
        for sh in s2["shards"]:
            assert sh["updates"] == version, (servers, sh)
        w, state, v = assembled(run, servers)
        assert v == version and w == want_w, "weights moved wrongly onto %d" % servers
        assert state == want_state, "optimizer state moved wrongly onto %d" % servers
        m = pslib.read_model(os.path.join(run, "model.bin"))
        assert m["weights"] == want_w and m["version"] == version, servers
        for k in range(servers):
            name = "server-%d" % k if servers > 1 else "server"
            assert re.search(r"resumed from .*(recut|ckpt-0*%d)" % version,
                             pslib.read_text(os.path.join(run, name + ".log"))), name


@timeout(90)
def test_killed_shard_is_reported_as_partial_updates(tmp):
    """kill -9 one of two shards: the launcher restarts it from its
    checkpoint and training completes, but the pushes the killed shard
    lost were applied by the other one only; the summary says how many."""
    pslib.need(pslib.SERVER, pslib.WORKER)
    from test_faults import launch_bg, finish, kill9, dropped_pushes, no_stragglers
    run = os.path.join(tmp, "run")
    rows, workers, epochs, batch = 8000, 2, 3, 16
    p = launch_bg(["--model", "linear", "--data", "synthetic-linear:%d" % rows,
                   "--workers", str(workers), "--epochs", str(epochs), "--batch", str(batch),
                   "--servers", "2", "--restart", "1", "--checkpoint-every", "100",
                   "--worker-timeout", "3", "--heartbeat", "0.3", "--quiet", "--",
                   "--step-delay-ms", "2"], run)
    ckdir = os.path.join(run, "checkpoints", "2-shards", "shard-1")
    pslib.wait_for(lambda: os.path.isdir(ckdir) and len(os.listdir(ckdir)) >= 2, 40,
                   "shard 1 checkpointed twice", p)
    kill9(p, "--shard 1 ")
    rc, out, err, s = finish(p, 70)
    assert rc == 0, "%s\n%s" % (out, err)
    made = sum(steps(rows, workers, r, batch, epochs) for r in range(workers))
    dropped = sum(dropped_pushes(run, "worker-%d" % r) for r in range(workers))
    sh0, sh1 = s["shards"]
    assert sh0["updates"] == made and sh0["resumed_version"] is None, sh0
    assert sh1["resumed_version"] is not None and sh1["resumed_version"] % 100 == 0, sh1
    # Every push is accounted for on the killed shard too.
    assert sh1["updates"] + sh1["updates_lost"] + dropped == made, (sh1, dropped, made)
    assert s["partial_updates"] == sh0["updates"] - sh1["updates"], s["partial_updates"]
    if s["partial_updates"]:
        assert "the shards disagree: %d update(s)" % s["partial_updates"] in out, out
    no_stragglers()


@timeout(60)
def test_shard_benchmark_runs(tmp):
    """make bench-shards in its shortest form: a row per shard count, with
    every shard's apply time."""
    bench = os.path.join(pslib.BIN, "ps-bench-shards")
    pslib.need(bench, pslib.SERVER)
    p = subprocess.run([bench, "--params", "100000", "--shards", "1,2,3", "--seconds", "0.3",
                        "--reps", "1", "--server", pslib.SERVER, "--out", tmp],
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=50)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, (p.returncode, out, p.stderr.decode("utf-8", "replace"))
    rows = [l.split() for l in out.splitlines()[1:]]
    assert [r[0] for r in rows] == ["1", "2", "3"], out
    for r in rows:
        assert len(r) == 3 + int(r[0]) and float(r[2]) > 0, out
    with open(os.path.join(tmp, "shards.csv")) as f:
        assert len(f.read().splitlines()) == 4
