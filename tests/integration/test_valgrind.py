"""Integration test under valgrind's memcheck: a short local cluster (a
server, two trainers and an evaluator over ZeroMQ tcp on 127.0.0.1) with
the server and one trainer under valgrind, which must report no invalid
read or write, no use of uninitialised memory and no definite leak.
valgrind is 20-50 times slower, so the model is tiny (an MLP 2-8-2 on 2000
synthetic rows, one epoch: 32 steps per trainer). Skipped without valgrind
and for a sanitizer build (valgrind cannot run AddressSanitizer binaries).
Suppressions live in tests/valgrind.supp (none are needed today)."""
import os
import re
import shutil

import pslib
from pslib import timeout

SUPP = os.path.join(pslib.ROOT, "tests", "valgrind.supp")
# valgrind's exit status when it found errors: apart from the programs' own.
VG_ERROR_EXIT = 97
MODEL = ["--model", "mlp", "--hidden", "8"]
TRAIN = MODEL + ["--data", "synthetic-logistic:2000", "--epochs", "1", "--batch", "32"]


def need_valgrind():
    path = shutil.which("valgrind")
    if not path:
        raise pslib.Skip("valgrind not found (Debian package valgrind)")
    if pslib.sanitizer_build():
        raise pslib.Skip("sanitizer build (%s): valgrind cannot run "
                         "AddressSanitizer binaries" % pslib.BUILD)
    pslib.need(pslib.SERVER, pslib.WORKER)
    return path


def valgrind(path, log):
    return [path, "--tool=memcheck", "--error-exitcode=%d" % VG_ERROR_EXIT,
            "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--num-callers=30",
            "--suppressions=" + SUPP, "--log-file=" + log]


def check_report(log, what):
    """memcheck's report in log: it ran to the end and found nothing."""
    text = pslib.read_text(log)
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    assert m, "%s: no memcheck summary in %s:\n%s" % (what, log, text[-3000:])
    bad = [l for l in text.splitlines()
           if re.search(r"Invalid (read|write|free)|uninitialised|"
                        r"definitely lost: [1-9]", l)]
    assert m.group(1) == "0" and not bad, "%s: memcheck found errors:\n%s" % (
        what, text[-6000:])


@timeout(300)
def test_server_and_trainer_clean_under_memcheck(tmp):
    vg = need_valgrind()
    server_vg = os.path.join(tmp, "server.vg")    # named after the logs
    worker_vg = os.path.join(tmp, "worker-0.vg")
    stats = os.path.join(tmp, "stats.json")
    with pslib.Procs() as procs:
        # valgrind takes seconds to start a process: a longer wait for
        # the endpoint file, and the evaluator announced, so that the
        # server waits for it after training.
        server, ep = pslib.start_server(
            procs, tmp, ["--workers", "2", "--evaluators", "1", "--eval-grace", "60",
                         "--optimizer", "adam", "--lr", "0.01", "--idle-timeout", "60",
                         "--stats-out", stats],
            start_timeout=60, prefix=valgrind(vg, server_vg))
        client = [pslib.WORKER, "--connect", ep, "--timeout", "60"]
        ev = procs.start(client + ["--role", "eval"] + MODEL + [
            "--data", "synthetic-logistic:500", "--progress-every", "0.5",
            "--result-out", os.path.join(tmp, "eval.json")],
            os.path.join(tmp, "eval.log"))
        w0 = procs.start(valgrind(vg, worker_vg) + client + [
            "--rank", "0", "--workers", "2"] + TRAIN, os.path.join(tmp, "worker-0.log"))
        w1 = procs.start(client + ["--rank", "1", "--workers", "2"] + TRAIN,
                         os.path.join(tmp, "worker-1.log"))
        for p, name in ((w1, "worker-1"), (w0, "worker-0"), (ev, "eval"),
                        (server, "server")):
            rc = pslib.wait(p, 200, name)
            if rc == VG_ERROR_EXIT:
                check_report(os.path.join(tmp, name + ".vg"), name)
            assert rc == 0, "%s exited with %d:\n%s" % (
                name, rc, pslib.read_text(os.path.join(tmp, name + ".log"))[-3000:])
    check_report(server_vg, "ps-server")
    check_report(worker_vg, "ps-worker")
    # The run did what it says: 32 pushes from each trainer applied.
    s = pslib.read_json(stats)
    assert s["updates"] == 64 and s["rejected"]["total"] == 0, s
    assert os.path.exists(os.path.join(tmp, "eval.json"))
