#!/usr/bin/python3
"""torch_mlp.py: the PyTorch reference for the benchmark "time to a target
test accuracy on Fashion-MNIST for the MLP 784-256-10, batch 64".

Run with /usr/bin/python3 (Debian's python3-torch and python3-numpy;
install them with scripts/install-deps --bench). Standard library, torch
and numpy only.

    /usr/bin/python3 scripts/bench/torch_mlp.py --procs 1 --repeat 3
    /usr/bin/python3 scripts/bench/torch_mlp.py --procs 2 --repeat 3

What is trained: nn.Sequential(Linear(784,256), ReLU, Linear(256,10)),
cross-entropy, plain SGD (no momentum, no weight decay, constant --lr),
batch 64, pixels scaled to [0,1] as float32, no other preprocessing.
torch.set_num_threads(1) in every process, and OPENBLAS_NUM_THREADS=1
(also OMP_/MKL_NUM_THREADS=1) unless already set in the environment,
because Debian's torch multiplies matrices with the system OpenBLAS, whose
own thread pool set_num_threads does not limit: every process computes on
one thread, like one pserver trainer. Each epoch visits a fresh
random permutation of the training examples (the last short batch of an
epoch is kept). Run i of --repeat uses seed --seed + i for the weights and
the shuffling, so repeats show seed variance as well as timing noise.

Modes:
  --procs 1  one process trains and evaluates.
  --procs N  Hogwild (N >= 2): the model's parameters are put in shared
             memory (model.share_memory()); N torch.multiprocessing
             ('spawn') children each own one N-th of a shuffled split of
             the training set, reshuffle their part every epoch, and
             update the shared parameters without locks. The parent does
             not train: it evaluates.

Evaluation: accuracy on the full 10k test set, every --eval-every seconds
(default 0.5) of training time. The target is "reached" at the moment the
evaluated parameters were taken, so time_to_target_s is the training time
until then, and epochs_to_target is the number of training samples
processed until then divided by 60000.

Fairness decisions (the other side, pserver, evaluates from a separate
evaluator process while its trainers keep going):
  * Data loading (reading and decoding the IDX .gz files), model set-up
    and process start-up are outside the clock. In Hogwild mode the
    children start, build their optimizer and wait on a barrier; the
    clock starts when all have passed it.
  * --procs 1: evaluation time is EXCLUDED. The clock is stopped while the
    single process evaluates (it checks the clock after every step and
    evaluates once --eval-every seconds of training have passed since the
    last evaluation), so the result is as if a free evaluator had looked
    at the parameters at those instants.
  * --procs N: evaluation runs CONCURRENTLY in the parent, as pserver's
    evaluator does: the parent copies the shared parameters (a Hogwild
    snapshot, taken without stopping the children) and evaluates the copy
    while the children keep training, on wall-clock time. Its CPU use
    (about 50 ms of one core every --eval-every seconds here) competes with
    the trainers on a machine with few cores, just as pserver's evaluator
    does.
  * samples_per_second is training samples per second of the clock above,
    over the whole run (until the target or until --max-epochs); for
    --procs N it is the sum over the children, so it includes the effect
    of the concurrent evaluator.
  * The training stops as soon as the target is reached; final_accuracy is
    the accuracy of the last evaluation (the one that reached the target,
    or the one after --max-epochs epochs when it never was reached, in
    which case time_to_target_s and epochs_to_target are null).
  * The time resolution is --eval-every: a run that reaches the target
    between two evaluations is only seen at the next one.

Output: one JSON object on stdout. With --repeat K (K > 1) the top-level
time_to_target_s, samples_per_second, epochs_to_target and final_accuracy
are medians over the K runs (a run that never reached the target counts
as infinitely slow; a null median means most runs did not reach it);
"runs" lists every run, with its cpu_share (CPU seconds the trainers got
per trainer per clock second; well below 1 means other load took their
cores, so the run's figures are pessimistic). Progress goes to stderr.
Exit status: 0 on success, 1 when torch or the dataset is missing, 2 for
bad options.
"""
import argparse
import gzip
import json
import math
import os
import statistics
import struct
import sys
import time

DATA_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = "install with scripts/install-deps --bench"
TRAIN_SAMPLES = 60000
BATCH = 64

# One compute thread per process. torch.set_num_threads(1) only limits
# torch's OpenMP pool; Debian's torch does its matrix products in the BLAS
# behind libblas.so.3, which with libopenblas-dev installed (a pserver
# build dependency) is the pthreads OpenBLAS with a thread pool of its own
# (one thread per core). Left alone, "one process" uses both cores and the
# Hogwild children oversubscribe them. Must be set before torch loads;
# spawned children inherit it.
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

try:
    import numpy as np
    import torch
    import torch.multiprocessing as mp
    from multiprocessing import connection as mp_connection
    import torch.nn as nn
    import torch.nn.functional as F
    _IMPORT_ERROR = None
except ImportError as e:  # reported by main(), with the fix
    _IMPORT_ERROR = e


def die(msg, status=1):
    print("torch_mlp: " + msg, file=sys.stderr)
    sys.exit(status)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="torch_mlp.py",
        description="PyTorch reference: time to a target test accuracy on "
        "Fashion-MNIST for the MLP 784-256-10, batch 64, plain SGD.")
    p.add_argument("--procs", type=int, default=1, metavar="N",
                   help="1: one process; N >= 2: Hogwild with N training "
                   "processes (default 1)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default 0.1)")
    p.add_argument("--target", type=float, default=0.88,
                   help="target test accuracy (default 0.88)")
    p.add_argument("--eval-every", type=float, default=0.5, metavar="SECONDS",
                   help="evaluate every SECONDS of training time (default 0.5)")
    p.add_argument("--max-epochs", type=float, default=20,
                   help="give up after this many epochs (default 20)")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="run K times and report medians (default 1)")
    p.add_argument("--seed", type=int, default=1, help="base seed (default 1)")
    p.add_argument("--data-dir", default=DATA_DIR,
                   help="directory with the Fashion-MNIST IDX .gz files (default %(default)s)")
    a = p.parse_args(argv)
    if a.procs < 1:
        p.error("--procs must be >= 1")
    if a.repeat < 1:
        p.error("--repeat must be >= 1")
    if not a.eval_every > 0 or not a.max_epochs > 0 or not a.lr > 0:
        p.error("--eval-every, --max-epochs and --lr must be > 0")
    if not 0 < a.target <= 1:
        p.error("--target must be in (0, 1]")
    return a


# ---------------------------------------------------------------- data

def read_idx(path, magic, ndim):
    """Read one gzipped IDX file; returns a uint8 numpy array."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        die("Fashion-MNIST not found: %s is missing; %s" % (path, INSTALL_HINT))
    except OSError as e:
        die("cannot read %s: %s" % (path, e))
    hdr = 4 + 4 * ndim
    if len(raw) < hdr or struct.unpack(">I", raw[:4])[0] != magic:
        die("%s: not an IDX file with magic 0x%08x" % (path, magic))
    dims = struct.unpack(">" + "I" * ndim, raw[4:hdr])
    arr = np.frombuffer(raw, dtype=np.uint8, offset=hdr)
    if arr.size != math.prod(dims):
        die("%s: %d values, header says %s" % (path, arr.size, dims))
    return arr.reshape(dims)


def load_fashion_mnist(d):
    """Returns (x_train, y_train, x_test, y_test) as torch tensors:
    float32 [n, 784] in [0, 1] and int64 [n]."""
    def images(name):
        a = read_idx(os.path.join(d, name), 0x803, 3)
        return torch.from_numpy(a.reshape(a.shape[0], -1).astype(np.float32) / 255.0)

    def labels(name):
        return torch.from_numpy(read_idx(os.path.join(d, name), 0x801, 1).astype(np.int64))

    xtr, ytr = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    xte, yte = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    if xtr.shape != (TRAIN_SAMPLES, 784) or xte.shape[1] != 784 or \
            len(ytr) != len(xtr) or len(yte) != len(xte):
        die("unexpected Fashion-MNIST shapes %s %s %s %s in %s" %
            (tuple(xtr.shape), tuple(ytr.shape), tuple(xte.shape), tuple(yte.shape), d))
    return xtr, ytr, xte, yte


# ---------------------------------------------------------------- model

def make_model():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


def train_steps(model, opt, x, y, idx, gen):
    """Generator: one SGD step per iteration over a fresh permutation of idx
    (a 1-D int64 tensor of example indices) per epoch; yields the batch size."""
    n = len(idx)
    while True:
        order = idx[torch.randperm(n, generator=gen)]
        for s in range(0, n, BATCH):
            b = order[s:s + BATCH]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[b]), y[b]).backward()
            opt.step()
            yield len(b)


# ---------------------------------------------------------------- one process

def run_single(a, data, seed):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    limit = int(a.max_epochs * TRAIN_SAMPLES)
    steps = train_steps(model, opt, xtr, ytr, torch.arange(TRAIN_SAMPLES), gen)

    samples = 0
    train_s = 0.0           # training clock: evaluation excluded
    cpu_s = 0.0             # CPU time of the training alone
    next_eval = a.eval_every
    evals = 0
    hit = None
    acc = None
    t, c = time.perf_counter(), time.process_time()
    while True:
        samples += next(steps)
        now = time.perf_counter()
        train_s += now - t
        t = now
        done = samples >= limit
        if train_s >= next_eval or done:
            cpu_s += time.process_time() - c
            acc = accuracy(model, xte, yte)
            evals += 1
            if acc >= a.target:
                hit = (train_s, samples)
                done = True
            next_eval = train_s + a.eval_every
            t, c = time.perf_counter(), time.process_time()  # evaluation off the clock
        if done:
            break
    return result(a, hit, acc, samples, train_s, evals, cpu_s)


# ---------------------------------------------------------------- Hogwild

def hogwild_child(rank, a, seed, model, xtr, ytr, idx, counters, ends, cpus, barrier, stop):
    torch.set_num_threads(1)
    torch.manual_seed(seed * 1000 + rank + 1)
    gen = torch.Generator().manual_seed(seed * 1000 + rank + 1)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)
    limit = int(a.max_epochs * len(idx))
    steps = train_steps(model, opt, xtr, ytr, idx, gen)
    barrier.wait()
    c = time.process_time()
    n = 0
    while n < limit and not stop.is_set():
        n += next(steps)
        counters[rank] = n
    ends[rank] = time.perf_counter()   # CLOCK_MONOTONIC: same clock in every process
    cpus[rank] = time.process_time() - c


def run_hogwild(a, data, seed):
    xtr, ytr, xte, yte = data
    ctx = mp.get_context("spawn")
    torch.manual_seed(seed)
    model = make_model()
    model.share_memory()
    snapshot = make_model()
    perm = torch.randperm(TRAIN_SAMPLES, generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(perm, a.procs)
    counters = ctx.Array("q", a.procs, lock=False)
    ends = ctx.Array("d", a.procs, lock=False)
    cpus = ctx.Array("d", a.procs, lock=False)
    barrier = ctx.Barrier(a.procs + 1)
    stop = ctx.Event()
    kids = [ctx.Process(target=hogwild_child,
                        args=(r, a, seed, model, xtr, ytr, parts[r].clone(),
                              counters, ends, cpus, barrier, stop), daemon=True)
            for r in range(a.procs)]
    for k in kids:
        k.start()
    try:
        barrier.wait(timeout=120)
    except Exception:
        stop.set()
        die("Hogwild children did not start (see errors above)")
    t0 = time.perf_counter()

    evals = 0
    hit = None
    acc = None
    next_eval = t0 + a.eval_every
    while True:
        # Sleep until the next evaluation, waking early if every child is done.
        while True:
            alive = [k.sentinel for k in kids if k.is_alive()]
            left = next_eval - time.perf_counter()
            if not alive or left <= 0:
                break
            mp_connection.wait(alive, timeout=left)
        finished = not any(k.is_alive() for k in kids)
        ts = time.perf_counter()
        seen = sum(counters)
        with torch.no_grad():       # Hogwild snapshot: children keep writing
            for d, s in zip(snapshot.parameters(), model.parameters()):
                d.copy_(s)
        acc = accuracy(snapshot, xte, yte)
        evals += 1
        if acc >= a.target:
            hit = (ts - t0, seen)
            finished = True
        next_eval = ts + a.eval_every
        if finished:
            break
    stop.set()
    for k in kids:
        k.join(timeout=30)
        if k.exitcode != 0:
            die("a Hogwild child exited with status %s" % k.exitcode)
    # Training clock: until the last child stopped (within one step of the
    # stop signal, or at the end of its --max-epochs).
    return result(a, hit, acc, sum(counters), max(ends) - t0, evals, sum(cpus))


# ---------------------------------------------------------------- report

def result(a, hit, acc, samples, clock_s, evals, cpu_s):
    return {
        "impl": "pytorch",
        "procs": a.procs,
        "target": a.target,
        "time_to_target_s": round(hit[0], 3) if hit else None,
        "samples_per_second": round(samples / clock_s, 1) if clock_s > 0 else None,
        "epochs_to_target": round(hit[1] / TRAIN_SAMPLES, 3) if hit else None,
        "final_accuracy": round(acc, 4),
        "train_samples": samples,
        "clock_s": round(clock_s, 3),
        "evaluations": evals,
        # CPU seconds the trainers got per trainer per clock second: well
        # below 1 means other load on the machine took their cores.
        "cpu_share": round(cpu_s / (a.procs * clock_s), 3) if clock_s > 0 else None,
    }


def median_or_none(vals):
    """Median where None means 'never reached' (infinitely slow)."""
    xs = sorted(math.inf if v is None else v for v in vals)
    m = statistics.median(xs)
    return None if math.isinf(m) else round(m, 3)


def main(argv):
    a = parse_args(argv)
    if _IMPORT_ERROR is not None:
        die("cannot import torch/numpy with %s (%s); %s, and run with /usr/bin/python3"
            % (sys.executable, _IMPORT_ERROR, INSTALL_HINT))
    torch.set_num_threads(1)
    t = time.perf_counter()
    data = load_fashion_mnist(a.data_dir)
    if a.procs > 1:
        for tsr in data:
            tsr.share_memory_()   # passed to the spawned children without copies
    print("torch_mlp: data loaded in %.1f s (not timed)" % (time.perf_counter() - t),
          file=sys.stderr)

    runs = []
    for i in range(a.repeat):
        r = (run_single if a.procs == 1 else run_hogwild)(a, data, a.seed + i)
        r["seed"] = a.seed + i
        runs.append(r)
        print("torch_mlp: run %d/%d: %s" % (i + 1, a.repeat, json.dumps(r)), file=sys.stderr)

    out = {"impl": "pytorch", "procs": a.procs, "target": a.target}
    if a.repeat == 1:
        out.update({k: runs[0][k] for k in ("time_to_target_s", "samples_per_second",
                                             "epochs_to_target", "final_accuracy")})
    else:
        out["time_to_target_s"] = median_or_none([r["time_to_target_s"] for r in runs])
        out["samples_per_second"] = round(statistics.median(
            r["samples_per_second"] for r in runs), 1)
        out["epochs_to_target"] = median_or_none([r["epochs_to_target"] for r in runs])
        out["final_accuracy"] = round(statistics.median(r["final_accuracy"] for r in runs), 4)
        out["median_time_to_target_s"] = out["time_to_target_s"]
        out["reached"] = sum(r["time_to_target_s"] is not None for r in runs)
    out.update({
        "torch_version": torch.__version__,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "lr": a.lr,
        "batch": BATCH,
        "eval_every_s": a.eval_every,
        "max_epochs": a.max_epochs,
        "repeat": a.repeat,
        "runs": runs,
    })
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
