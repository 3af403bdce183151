#!/usr/bin/env python3
"""mlp_time_to_acc.py: the benchmark "time to 0.88 test accuracy on
Fashion-MNIST for the MLP 784-256-10, batch 64, with 1 and 2 workers,
median of several runs, against PyTorch with the same number of
processes, reported as a ratio". `make bench` runs it.

    scripts/bench/mlp_time_to_acc.py                  # K=3, workers 1 and 2
    scripts/bench/mlp_time_to_acc.py --repeat 5 --out runs/bench-x
    scripts/bench/mlp_time_to_acc.py --skip-torch --workers 2
    scripts/bench/mlp_time_to_acc.py --transport tcp,mpi   # both, same runs

pserver side: for each repetition i and each worker count W,
    scripts/ps-launch --model mlp --hidden 256 --batch 64 --workers W
        --epochs E --lr LR --lr-schedule const --seed S+i
        --transport T --progress-every 0.5 --stop-at-accuracy TARGET --quiet
        --run-dir OUT/pserver-T-wW-rI
(1 server, W trainers, 1 evaluator; T is each of --transport, default tcp,
the launcher's default; with several, each is its own row "pserver/T"). Its time to the target is the
train_seconds of the first metrics.jsonl line whose test_accuracy reaches
the target: the server's training clock (seconds since the first trainer
said hello, so data loading and process start-up are excluded) at the
moment the evaluator pulled the weights it measured. The evaluation that
sees the target stops the run (--stop-at-accuracy), so a run trains at
most E epochs and usually far fewer; samples/s is summary.json's
samples_per_second over the run, until that stop, like PyTorch's.

PyTorch side: scripts/bench/torch_mlp.py --procs W --repeat 1 --seed S+i
--lr LR --target T --eval-every 0.5 --max-epochs E, run with
/usr/bin/python3 (see its docstring for its fairness rules: one compute
thread per process, data loading off the clock, Hogwild for W >= 2 with a
concurrent evaluator in the parent). Its samples/s counts until the target.

Both sides train the same algorithm: plain SGD (no momentum, no weight
decay) with the SAME constant learning rate (--lr, default 0.2), batch 64,
the same for every worker count, so the ratio compares systems, not
hyperparameters. A constant rate because the reference has no schedule;
0.2 because in a quick tuning (docs/EXPERIMENTS.md) it took both sides
fewer epochs to 0.88 than torch_mlp.py's default 0.1 (and about as few as
0.3 or the launcher's MLP default, exp decay from 0.2). The runs
are interleaved (pserver W=1 on each transport, pytorch 1, pserver W=2,
pytorch 2, then the next repetition), so that a change in the machine's load hits both sides
alike. Medians count a run that never reached the target as infinitely
slow. ratio = pytorch median / pserver median for the same number of
training processes: above 1 means pserver is faster. samples/s ratio =
pserver's median samples/s / pytorch's: the same comparison in
throughput, which spreads far less from run to run.

Writes OUT/results.json (options, machine, every run, medians, ratios),
OUT/runs.csv (one row per run), OUT/summary.csv (one row per
implementation and process count) and OUT/table.md (the table); OUT defaults to runs/bench-<time>/.
Exit status: 0 on success (even when a run missed the target), 1 when a
launcher run failed or torch is missing with --require-torch, 2 for bad
options. Python 3 standard library only.
"""
import argparse
import csv
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, "scripts", "ps-launch")
TORCH_SCRIPT = os.path.join(ROOT, "scripts", "bench", "torch_mlp.py")
TORCH_PYTHON = "/usr/bin/python3"
INSTALL_HINT = "install with scripts/install-deps --bench"
TRAIN_SAMPLES = 60000
BATCH = 64
HIDDEN = "256"


def say(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="mlp_time_to_acc.py",
        description="Time to a target test accuracy on Fashion-MNIST for the MLP "
        "784-256-10, batch 64: pserver (ps-launch) against PyTorch with the same "
        "number of training processes; medians of --repeat runs.")
    p.add_argument("--repeat", type=int, default=3, metavar="K",
                   help="runs per implementation and process count (default 3)")
    p.add_argument("--target", type=float, default=0.88,
                   help="target test accuracy (default 0.88)")
    p.add_argument("--transport", default="tcp", metavar="LIST",
                   help="comma-separated ps-launch transports to run, each its own "
                   "row: tcp, ipc, mpi, each optionally with +prefetch (trainers "
                   "overlap the next pull with the gradient) and, for tcp and ipc, "
                   "+noshm (every tensor through the socket, ps-launch --no-shm), "
                   "e.g. tcp,tcp+prefetch,tcp+prefetch+noshm (default tcp)")
    p.add_argument("--workers", default="1,2", metavar="LIST",
                   help="comma-separated worker / process counts (default 1,2)")
    p.add_argument("--skip-torch", action="store_true",
                   help="run only the pserver side")
    p.add_argument("--require-torch", action="store_true",
                   help="fail (exit 1) when PyTorch is not installed instead of "
                   "running only the pserver side")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="results directory (default runs/bench-<time>)")
    p.add_argument("--lr", type=float, default=0.2,
                   help="constant SGD learning rate, both sides (default 0.2)")
    p.add_argument("--epochs", type=int, default=15, metavar="E",
                   help="pserver: epochs per run; pytorch: --max-epochs (default 15)")
    p.add_argument("--eval-every", type=float, default=0.5, metavar="SECONDS",
                   help="seconds between evaluations, both sides (default 0.5)")
    p.add_argument("--seed", type=int, default=1,
                   help="run i uses seed SEED+i on both sides (default 1)")
    p.add_argument("--build", default=os.path.join(ROOT, "build"), metavar="DIR",
                   help="pserver build directory holding bin/ (default build)")
    p.add_argument("--time-limit", type=float, default=300, metavar="SECONDS",
                   help="per pserver run (default 300)")
    a = p.parse_args(argv)
    try:
        a.workers = [int(w) for w in a.workers.split(",") if w.strip()]
    except ValueError:
        p.error("--workers takes a comma-separated list of integers, e.g. 1,2")
    if not a.workers or min(a.workers) < 1:
        p.error("--workers: every count must be >= 1")
    a.transport = [t.strip() for t in a.transport.split(",") if t.strip()]
    if not a.transport or any(t.split("+")[0] not in ("tcp", "ipc", "mpi")
                              or t.split("+")[1:] not in ([], ["prefetch"], ["noshm"],
                                                          ["prefetch", "noshm"])
                              or (t.startswith("mpi") and t.endswith("+noshm"))
                              for t in a.transport):
        p.error("--transport takes a comma-separated list of tcp, ipc, mpi, "
                "each optionally followed by +prefetch, and tcp and ipc by +noshm")
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    if not 0 < a.target <= 1:
        p.error("--target must be in (0, 1]")
    if not a.lr > 0 or not a.eval_every > 0 or a.epochs < 1:
        p.error("--lr and --eval-every must be > 0, --epochs >= 1")
    if a.skip_torch and a.require_torch:
        p.error("--skip-torch and --require-torch contradict each other")
    return a


# ---------------------------------------------------------------- helpers

def median_or_none(vals):
    """Median where None (never reached) counts as infinitely slow."""
    if not vals:
        return None
    m = statistics.median(math.inf if v is None else v for v in vals)
    return None if math.isinf(m) else round(m, 3)


def median_of_known(vals):
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 1) if vals else None


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine():
    info = {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain",
                                "--untracked-files=no"], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True).stdout.strip()
        info["git"] = rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        info["git"] = None
    return info


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def torch_available():
    """None when /usr/bin/python3 can import torch and numpy, else why not."""
    if not os.access(TORCH_PYTHON, os.X_OK):
        return "%s not found" % TORCH_PYTHON
    p = subprocess.run([TORCH_PYTHON, "-c", "import torch, numpy"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        lines = p.stderr.strip().splitlines()
        return lines[-1] if lines else "cannot import torch"
    return None


# ---------------------------------------------------------------- the two sides

def pserver_impl(a, transport):
    return "pserver" if len(a.transport) == 1 else "pserver/" + transport


def run_pserver(a, transport, workers, seed, run_dir):
    cmd = [sys.executable, LAUNCHER, "--build", a.build, "--model", "mlp",
           "--hidden", HIDDEN, "--batch", str(BATCH), "--workers", str(workers),
           "--epochs", str(a.epochs), "--lr", repr(a.lr), "--lr-schedule", "const",
           "--optimizer", "sgd", "--seed", str(seed),
           "--transport", transport.split("+")[0],
           "--progress-every", repr(a.eval_every), "--time-limit", repr(a.time_limit),
           "--stop-at-accuracy", repr(a.target), "--quiet", "--run-dir", run_dir]
    if "+prefetch" in transport:
        cmd.append("--prefetch")
    if transport.endswith("+noshm"):
        cmd.append("--no-shm")
    load0 = loadavg()
    t = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    r = {"impl": pserver_impl(a, transport), "transport": transport, "procs": workers, "seed": seed, "target": a.target,
         "time_to_target_s": None, "epochs_to_target": None, "updates_to_target": None,
         "samples_per_second": None, "final_accuracy": None, "wall_s":
         round(time.monotonic() - t, 1), "loadavg_before": load0,
         "loadavg_after": loadavg(), "run_dir": run_dir, "status": p.returncode}
    if p.returncode != 0:
        lines = (p.stderr.strip() or p.stdout.strip()).splitlines()
        r["error"] = lines[0] if lines else "ps-launch exited with %d" % p.returncode
        return r
    try:
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            for line in f:
                m = json.loads(line)
                acc = m.get("test_accuracy")
                if acc is not None and acc >= a.target:
                    r["time_to_target_s"] = round(m["train_seconds"], 3)
                    r["updates_to_target"] = m["updates"]
                    # Updates are batches of 64 but for each shard's last
                    # batch of an epoch: close enough for a progress figure.
                    r["epochs_to_target"] = round(m["updates"] * BATCH / TRAIN_SAMPLES, 3)
                    break
    except (OSError, ValueError, KeyError) as e:
        r["error"] = "cannot read metrics.jsonl: %s" % e
    s = read_json(os.path.join(run_dir, "summary.json")) or {}
    r["samples_per_second"] = (round(s["samples_per_second"], 1)
                               if s.get("samples_per_second") is not None else None)
    r["final_accuracy"] = s.get("test_accuracy")
    r["staleness_mean"] = s.get("staleness_mean")
    return r


def run_torch(a, procs, seed):
    cmd = [TORCH_PYTHON, TORCH_SCRIPT, "--procs", str(procs), "--repeat", "1",
           "--seed", str(seed), "--lr", repr(a.lr), "--target", repr(a.target),
           "--eval-every", repr(a.eval_every), "--max-epochs", str(a.epochs)]
    load0 = loadavg()
    t = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    r = {"impl": "pytorch", "procs": procs, "seed": seed, "target": a.target,
         "time_to_target_s": None, "epochs_to_target": None, "updates_to_target": None,
         "samples_per_second": None, "final_accuracy": None,
         "wall_s": round(time.monotonic() - t, 1), "loadavg_before": load0,
         "loadavg_after": loadavg(), "status": p.returncode}
    out = None
    if p.returncode == 0:
        try:
            out = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    if out is None:
        lines = p.stderr.strip().splitlines()
        r["error"] = lines[-1] if lines else "torch_mlp.py exited with %d" % p.returncode
        return r
    run = out["runs"][0]
    for k in ("time_to_target_s", "epochs_to_target", "samples_per_second",
              "final_accuracy", "cpu_share"):
        r[k] = run.get(k)
    r["torch_version"] = out.get("torch_version")
    return r


# ---------------------------------------------------------------- report

def fmt_s(v):
    return "never" if v is None else "%.2f" % v


def summarize(runs, impls, workers):
    rows = []
    for w in workers:
        for impl in impls:
            rs = [r for r in runs if r["impl"] == impl and r["procs"] == w]
            if not rs:
                continue
            rows.append({
                "impl": impl, "procs": w, "runs": len(rs),
                "reached": sum(r["time_to_target_s"] is not None for r in rs),
                "median_time_to_target_s": median_or_none([r["time_to_target_s"] for r in rs]),
                "times_s": [r["time_to_target_s"] for r in rs],
                "median_epochs_to_target": median_or_none([r["epochs_to_target"] for r in rs]),
                "median_samples_per_second": median_of_known(
                    [r["samples_per_second"] for r in rs]),
            })
    ratios = {}
    for w in workers:
        pt = [x for x in rows if x["impl"] == "pytorch" and x["procs"] == w]
        for x in rows:
            if x["procs"] != w or x["impl"] == "pytorch":
                continue
            if pt and x["median_time_to_target_s"] and \
                    pt[0]["median_time_to_target_s"] is not None:
                ratio = round(pt[0]["median_time_to_target_s"] /
                              x["median_time_to_target_s"], 3)
            else:
                ratio = None
            x["ratio_pytorch_over_pserver"] = ratio
            ratios["%s %d" % (x["impl"], w)] = ratio
            # The same comparison in throughput, which spreads far less
            # from run to run than the time to the target.
            sps, ref = x["median_samples_per_second"], \
                pt[0]["median_samples_per_second"] if pt else None
            x["samples_ratio_pserver_over_pytorch"] = \
                round(sps / ref, 3) if sps and ref else None
    return rows, ratios


def print_table(rows, target, md_path):
    """The table on stdout, and as Markdown in md_path."""
    head = ("impl", "procs", "median to %g (s)" % target, "runs (s)",
            "epochs", "samples/s", "ratio", "samples/s ratio")
    lines = []
    for x in rows:
        ratio = x.get("ratio_pytorch_over_pserver")
        lines.append((x["impl"], str(x["procs"]), fmt_s(x["median_time_to_target_s"]),
                      " ".join(fmt_s(t) for t in x["times_s"]),
                      fmt_s(x["median_epochs_to_target"]),
                      "-" if x["median_samples_per_second"] is None
                      else "%.0f" % x["median_samples_per_second"],
                      "-" if ratio is None else "%.2f" % ratio,
                      "-" if x.get("samples_ratio_pserver_over_pytorch") is None
                      else "%.2f" % x["samples_ratio_pserver_over_pytorch"]))
    widths = [max(len(h), *(len(l[i]) for l in lines)) for i, h in enumerate(head)]
    fmt = "  ".join("%%-%ds" % wd for wd in widths)
    note = ("ratio = pytorch median / pserver median with the same number of "
            "training processes (> 1: pserver is faster); samples/s ratio = "
            "pserver median samples/s / pytorch's (> 1: pserver trains more "
            "samples a second)")
    print((fmt % head).rstrip())
    print((fmt % tuple("-" * wd for wd in widths)).rstrip())
    for l in lines:
        print((fmt % l).rstrip())
    print(note)
    with open(md_path, "w") as f:
        f.write("| %s |\n|%s\n" % (" | ".join(head), "---|" * len(head)))
        for l in lines:
            f.write("| %s |\n" % " | ".join(l))
        f.write("\n%s\n" % note)


def write_csv(path, rows, fields):
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (" ".join("" if v is None else str(v) for v in r[k])
                             if isinstance(r.get(k), list) else r.get(k))
                         for k in fields})


def main(argv):
    a = parse_args(argv)
    for b in ("ps-server", "ps-worker"):
        if not os.access(os.path.join(a.build, "bin", b), os.X_OK):
            say("%s not found in %s/bin: run 'make' first" % (b, a.build))
            return 1
    torch_ok = not a.skip_torch
    if torch_ok:
        why = torch_available()
        if why:
            say("PyTorch not usable with %s (%s): %s" % (TORCH_PYTHON, why, INSTALL_HINT))
            if a.require_torch:
                return 1
            say("running the pserver side only")
            torch_ok = False
    out = a.out or os.path.join(ROOT, "runs", "bench-" + time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    out = os.path.abspath(out)
    impls = [pserver_impl(a, t) for t in a.transport] + (["pytorch"] if torch_ok else [])
    info = machine()
    info["loadavg_start"] = loadavg()
    say("results in %s; %d run(s) each of %s with %s process(es); load average %s"
        % (out, a.repeat, " and ".join(impls), ",".join(map(str, a.workers)),
           info["loadavg_start"]))

    runs = []
    failed = 0
    t0 = time.monotonic()
    for i in range(a.repeat):
        seed = a.seed + i
        for w in a.workers:
            for t in a.transport:
                r = run_pserver(a, t, w, seed, os.path.join(
                    out, "pserver-%s-w%d-r%d" % (t, w, i + 1)))
                failed += r["status"] != 0
                runs.append(r)
                say("run %d/%d %s w%d: to target %s s, %s samples/s%s"
                    % (i + 1, a.repeat, r["impl"], w, fmt_s(r["time_to_target_s"]),
                       r["samples_per_second"],
                       "  (%s)" % r["error"] if "error" in r else ""))
            if torch_ok:
                r = run_torch(a, w, seed)
                runs.append(r)
                say("run %d/%d pytorch %d: to target %s s, %s samples/s%s"
                    % (i + 1, a.repeat, w, fmt_s(r["time_to_target_s"]),
                       r["samples_per_second"],
                       "  (%s)" % r["error"] if "error" in r else ""))
    info["loadavg_end"] = loadavg()
    info["bench_seconds"] = round(time.monotonic() - t0, 1)

    rows, ratios = summarize(runs, impls, a.workers)
    options = {k: v for k, v in vars(a).items()}
    options.update({"model": "mlp 784-%s-10" % HIDDEN, "batch": BATCH,
                    "launcher": LAUNCHER, "torch_script": TORCH_SCRIPT,
                    "optimizer": "sgd", "lr_schedule": "const"})
    results = {"benchmark": "time to %g test accuracy, Fashion-MNIST, MLP 784-%s-10, "
               "batch %d" % (a.target, HIDDEN, BATCH), "options": options,
               "machine": info, "summary": rows, "ratios_pytorch_over_pserver": ratios,
               "runs": runs}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    write_csv(os.path.join(out, "runs.csv"), runs,
              ["impl", "transport", "procs", "seed", "target", "time_to_target_s", "epochs_to_target",
               "samples_per_second", "final_accuracy", "wall_s", "loadavg_before",
               "loadavg_after", "status"])
    write_csv(os.path.join(out, "summary.csv"), rows,
              ["impl", "procs", "runs", "reached", "median_time_to_target_s", "times_s",
               "median_epochs_to_target", "median_samples_per_second",
               "ratio_pytorch_over_pserver", "samples_ratio_pserver_over_pytorch"])

    print("MLP 784-%s-10, batch %d, plain SGD lr %g, Fashion-MNIST; %d run(s) each; "
          "load average %s -> %s" % (HIDDEN, BATCH, a.lr, a.repeat,
                                     info["loadavg_start"], info["loadavg_end"]))
    print_table(rows, a.target, os.path.join(out, "table.md"))
    if not torch_ok:
        print("(no PyTorch reference: %s)" % ("--skip-torch" if a.skip_torch
                                               else INSTALL_HINT))
    print("results: %s/results.json, runs.csv, summary.csv, table.md" % out)
    if failed:
        say("%d pserver run(s) failed; their run directories are in %s" % (failed, out))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
