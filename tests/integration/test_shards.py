"""Integration tests of several server shards (ps-launch --servers S): the
ranges the shards own, bsp giving the same weights for S = 1, 2 and 3 as
synchronous SGD, asynchronous training across two shards, and the final
model assembled by the evaluator."""
import os
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
