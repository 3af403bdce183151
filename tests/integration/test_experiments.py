"""Integration tests of the experiment tools: the metrics files and the
status lines of ps-launch, ps-plot, and ps-sweep on a tiny grid
(synthetic data, a few seconds a run), with and without emulated links in
network namespaces (skipped, with the reason, where the machine does not
allow them). Each test gets a fresh temp dir and a hard timeout."""
import csv
import json
import os
import signal
import struct
import subprocess
import sys
import time

import pslib
from pslib import timeout

SCRIPTS = os.path.join(pslib.ROOT, "scripts")
SWEEP = os.path.join(SCRIPTS, "ps-sweep")
PLOT = os.path.join(SCRIPTS, "ps-plot")
TINY = ["--data", "synthetic-logistic:2000", "--model", "logistic", "--epochs", "2"]


def output(rc, out, err):
    return "exit status %s\n--- stdout\n%s--- stderr\n%s" % (rc, out, err)


def run(cmd, seconds):
    """Run cmd to the end under a timeout; (rc, stdout, stderr)."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        pslib.stop_tree(p)
        out, err = p.communicate()
        raise AssertionError("%s did not finish within %.0f s:\n%s%s"
                             % (cmd[0], seconds, out.decode("utf-8", "replace"),
                                err.decode("utf-8", "replace"))) from None
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def png_size(path):
    """(width, height) of a PNG file, checking its signature and that the
    first chunk is IHDR."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "%s: not a PNG" % path
    assert head[12:16] == b"IHDR", "%s: no IHDR chunk first" % path
    return struct.unpack(">II", head[16:24])


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@timeout(60)
def test_launcher_writes_metrics_and_aggregates(tmp):
    rd = os.path.join(tmp, "run")
    # Plain status lines every 0.3 s, and a last one at the end however
    # short the run.
    rc, out, err, s = pslib.run_launcher(
        ["--data", "synthetic-logistic:20000", "--model", "logistic", "--epochs", "3",
         "--workers", "2", "--metrics-every", "0.1", "--progress-every", "0.2",
         "--status", "plain", "--status-every", "0.3"], rd, timeout=45)
    assert rc == 0, output(rc, out, err)
    srv = read_jsonl(os.path.join(rd, "server.metrics.jsonl"))
    assert len(srv) >= 2, srv
    for key in ("time", "unix_time", "updates", "samples_per_second",
                "updates_per_second", "staleness_mean", "staleness_histogram",
                "rejected", "bytes_in", "bytes_out"):
        assert key in srv[-1], (key, srv[-1])
    assert srv[-1]["updates"] == s["updates"], (srv[-1], s["updates"])
    assert sum(srv[-1]["staleness_histogram"].values()) == s["server"]["pushes"]
    assert srv[-1]["rejected"] == 0
    trainers_out = 0
    for r in range(2):
        w = read_jsonl(os.path.join(rd, "worker-%d.metrics.jsonl" % r))
        last = w[-1]
        assert last["rank"] == r and last["steps"] == last["steps_total"] > 0, last
        assert last["epoch"] == last["epochs"] == 3, last
        assert any(x["loss"] is not None for x in w), w
        trainers_out += last["bytes_out"]
    # What the trainers sent, the server received (plus the evaluator's).
    assert srv[-1]["bytes_in"] >= trainers_out > 0, (srv[-1], trainers_out)
    ev = read_jsonl(os.path.join(rd, "metrics.jsonl"))
    assert all("test_accuracy" in x and "bytes_in" in x for x in ev), ev
    assert s["bytes_in"] > 0 and s["bytes_out"] > 0, s
    assert set(s["bytes_by_process"]) == {"server", "eval", "worker-0", "worker-1"}
    assert s["train_loss_final"] is not None and s["train_loss_final"] < 0.7, s
    assert s["peak_samples_per_second"] > 0, s
    # Not a terminal: plain status lines between the evaluator's lines,
    # which keep their format.
    assert "\r" not in out, repr(out)
    status = [l for l in out.splitlines() if l.startswith("ps-launch: status [")]
    assert status and "epoch" in out and "upd/s" in status[-1], out
    assert any(l.startswith("[") and "test_acc" in l for l in out.splitlines()), out


@timeout(40)
def test_plot_renders_pngs_and_refuses_empty_runs(tmp):
    rd = os.path.join(tmp, "run")
    rc, out, err, _ = pslib.run_launcher(TINY + ["--workers", "1", "--progress-every",
                                                 "0.2", "--quiet"], rd, timeout=30)
    assert rc == 0, output(rc, out, err)
    pngs = os.path.join(tmp, "png")
    rc, out, err = run([PLOT, rd, "--out", pngs], 20)
    assert rc == 0, output(rc, out, err)
    for name in ("accuracy-time", "accuracy-updates", "loss-time", "loss-updates"):
        assert png_size(os.path.join(pngs, name + ".png")) == (800, 500)
    empty = os.path.join(tmp, "empty")
    os.mkdir(empty)
    rc, out, err = run([PLOT, empty], 10)
    assert rc == 2 and "no evaluator metrics" in err, output(rc, out, err)
    rc, out, err = run([PLOT, os.path.join(tmp, "missing")], 10)
    assert rc == 2 and "no such run directory" in err, output(rc, out, err)


@timeout(90)
def test_sweep_tiny_grid_writes_csv_and_plots(tmp):
    pslib.need(pslib.SERVER, pslib.WORKER)
    out_dir = os.path.join(tmp, "sweep")
    rc, out, err = run([SWEEP, "--workers", "1,2", "--consistency", "async,bsp",
                        "--transport", "tcp", "--target-accuracy", "0.7",
                        "--run-time-limit", "30", "--budget", "200",
                        "--eval-every", "0.2", "--out", out_dir,
                        "--build", pslib.BUILD, "--"] + TINY, 80)
    assert rc == 0, output(rc, out, err)
    rows = read_csv(os.path.join(out_dir, "runs.csv"))
    assert len(rows) == 4, rows
    for col in ("workers", "servers", "consistency", "transport", "link", "rep",
                "status", "samples_per_second", "updates", "time_to_target",
                "staleness_mean", "staleness_max", "final_accuracy", "wall_seconds"):
        assert col in rows[0], (col, rows[0])
    assert {(r["workers"], r["consistency"]) for r in rows} == \
        {("1", "async"), ("2", "async"), ("1", "bsp"), ("2", "bsp")}, rows
    for r in rows:
        assert r["status"] == "ok" and r["link"] == "none", r
        assert float(r["samples_per_second"]) > 0 and int(r["updates"]) > 0, r
        assert float(r["final_accuracy"]) >= 0.7, r
        assert 0 < float(r["time_to_target"]) < 30, r
        if r["consistency"] == "bsp":
            # Lockstep: every push is computed on the newest weights.
            assert float(r["staleness_max"]) == 0, r
    summary = read_csv(os.path.join(out_dir, "summary.csv"))
    assert len(summary) == 4 and all(s["ok"] == "1" for s in summary), summary
    for name in ("throughput", "time-to-target", "staleness"):
        w, h = png_size(os.path.join(out_dir, name + ".png"))
        assert (w, h) == (800, 500), (name, w, h)
    # Plotted again from the CSV alone.
    again = os.path.join(tmp, "again")
    rc, out, err = run([SWEEP, "--plot-from", out_dir, "--out", again], 20)
    assert rc == 0, output(rc, out, err)
    assert len(read_csv(os.path.join(again, "summary.csv"))) == 4
    assert png_size(os.path.join(again, "throughput.png")) == (800, 500)


@timeout(60)
def test_sweep_over_server_shards(tmp):
    # The servers axis: each run's own summary says how many shards served
    # it, and the rows carry that count.
    pslib.need(pslib.SERVER, pslib.WORKER)
    out_dir = os.path.join(tmp, "sweep")
    rc, out, err = run([SWEEP, "--workers", "2", "--servers", "1,2",
                        "--run-time-limit", "30", "--budget", "100",
                        "--out", out_dir, "--no-plots", "--build", pslib.BUILD,
                        "--"] + TINY, 50)
    assert rc == 0, output(rc, out, err)
    assert "2 servers" in out, out
    rows = read_csv(os.path.join(out_dir, "runs.csv"))
    assert sorted(r["servers"] for r in rows) == ["1", "2"], rows
    for r in rows:
        assert r["status"] == "ok" and float(r["final_accuracy"]) >= 0.7, r
        summary = pslib.read_json(os.path.join(out_dir, r["run_dir"], "summary.json"))
        assert len(summary.get("shards", [None])) == int(r["servers"]), summary


@timeout(30)
def test_sweep_refuses_bad_grids(tmp):
    out_dir = os.path.join(tmp, "sweep")
    rc, out, err = run([SWEEP, "--workers", "1,2,4", "--consistency", "async,bsp",
                        "--repeat", "3", "--run-time-limit", "600", "--budget", "3600",
                        "--out", out_dir], 20)
    assert rc == 2 and "10800 s" in err and "--budget 3600" in err, output(rc, out, err)
    assert not os.path.exists(out_dir), "a refused grid ran"
    rc, out, err = run([SWEEP, "--servers", "1,0", "--out", out_dir], 20)
    assert rc == 2 and "--servers" in err, output(rc, out, err)
    rc, out, err = run([SWEEP, "--consistency", "eventual"], 20)
    assert rc == 2 and "eventual" in err, output(rc, out, err)
    rc, out, err = run([SWEEP, "--netns", "--transport", "ipc"], 20)
    assert rc == 2 and "tcp only" in err, output(rc, out, err)


def namespaces():
    r = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=10)
    return {l.split()[0] for l in r.stdout.decode().splitlines() if l.strip()}


def need_netns():
    """Skip, saying why, where network namespaces cannot be made."""
    if os.geteuid() != 0:
        raise pslib.Skip("network namespaces need root")
    name = "psxprobe%d" % os.getpid()
    try:
        r = subprocess.run(["ip", "netns", "add", name], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=10)
    except OSError as err:
        raise pslib.Skip("no ip command: %s" % err)
    if r.returncode != 0:
        raise pslib.Skip("ip netns add fails here: %s"
                         % r.stderr.decode("utf-8", "replace").strip())
    subprocess.run(["ip", "netns", "del", name], stdin=subprocess.DEVNULL, timeout=10)


@timeout(75)
def test_sweep_netns_links_and_cleanup(tmp):
    need_netns()
    pslib.need(pslib.SERVER, pslib.WORKER)
    before = namespaces()
    out_dir = os.path.join(tmp, "sweep")
    rc, out, err = run([SWEEP, "--netns", "--link-rate", "100mbit",
                        "--link-delay-ms", "1", "--workers", "2",
                        "--run-time-limit", "30", "--budget", "60", "--no-plots",
                        "--eval-every", "0.2", "--out", out_dir,
                        "--build", pslib.BUILD, "--"] + TINY, 60)
    assert rc == 0, output(rc, out, err)
    rows = read_csv(os.path.join(out_dir, "runs.csv"))
    assert len(rows) == 1 and rows[0]["status"] == "ok", rows
    assert rows[0]["link"] == "100mbit/1ms", rows
    assert float(rows[0]["final_accuracy"]) >= 0.7, rows
    # The server really was in its own namespace, on the bridge's subnet.
    with open(os.path.join(out_dir, rows[0]["run_dir"], "endpoint")) as f:
        assert f.read().startswith("tcp://10.213.0.1:")
    assert namespaces() == before, (before, namespaces())

    # Ctrl-C in the middle of a run: everything it made is gone.
    p = subprocess.Popen([SWEEP, "--netns", "--workers", "1", "--run-time-limit", "30",
                          "--budget", "60", "--no-plots", "--out", out_dir + "2",
                          "--build", pslib.BUILD, "--", "--data",
                          "synthetic-logistic:200000", "--model", "logistic",
                          "--epochs", "50"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        pslib.wait_for(lambda: os.path.exists(os.path.join(
            out_dir + "2", "runs", "w1-s1-async-tcp-r1", "worker-0.metrics.jsonl")),
            30, "the run's trainer to start", proc=p)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            pslib.stop_tree(p)
    assert p.returncode == 130, output(p.returncode, out.decode(), err.decode())
    assert namespaces() == before, (before, namespaces())
