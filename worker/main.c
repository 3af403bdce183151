/*
 * ps-worker: parse options and run one client role, a trainer (default)
 * or an evaluator, against a ps-server.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

#include "ps_cli.h"
#include "ps_cluster.h"
#include "ps_curve.h"
#include "ps_mpi.h"
#include "ps_log.h"
#include "ps_transport.h"
#include "ps_worker.h"

static volatile int stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

/* --curve-secret and --curve-server-key: both or neither. */
static int load_curve(const char *secret, const char *server_key,
		      ps_transport_curve *c, ps_err *e)
{
	unsigned warnings = 0;
	int rc;

	if (!secret != !server_key)
		return ps_err_set(e, PS_EINVAL,
				  "--curve-secret and --curve-server-key go "
				  "together: this client's secret key and the "
				  "server's public key");
	rc = ps_curve_key_read(c->secret_key, secret, PS_CURVE_SECRET,
			       &warnings, e);
	if (rc == PS_OK)
		rc = ps_curve_key_read(c->server_key, server_key,
				       PS_CURVE_PUBLIC, NULL, e);
	if (rc == PS_OK && (warnings & PS_CURVE_WARN_MODE))
		ps_log_warn("%s may be read by other users: chmod 600 it",
			    secret);
	return rc;
}

int main(int argc, char **argv)
{
	static const char *const roles[] = {"train", "eval", NULL};
	static const char *const models[] = {"softmax", "linear", "mlp",
					     "logistic", NULL};
	static const char *const activations[] = {"relu", "tanh", NULL};
	static const char *const levels[] = {"error", "warn", "info", "debug",
					     NULL};
	const char *endpoint = "tcp://127.0.0.1:5555";
	const char *data = NULL, *result_out = NULL, *metrics_out = NULL;
	const char *model_out = NULL;
	double metrics_every = 1, link_delay_ms = 0;
	int shm = 0;
	const char *hidden = "256";
	int activation = 0;
	int role = 0, model = 0, level = 2, rank = 0, workers = 1;
	int classes = 0, epochs = 1, batch = 64, inflight = 4;
	uint64_t seed = 1;
	double timeout = 30, progress = 2, clip_norm = 0, clip_value = 0;
	double val_fraction = 0;
	const char *val_data = NULL;
	int patience = 0;
	double stop_at_accuracy = 0;
	int check = 0;
	ps_cluster cluster;
	int in_cluster = 0;
	char mpi_endpoint[4096] = "";
	uint64_t crash_after = 0;
	int fetch_every = 1, push_every = 1;
	int prefetch = 0;
	int stale_prefetch = 0;
	double step_delay_ms = 0;
	/* CURVE (docs/SECURITY.md) */
	const char *curve_secret = NULL, *curve_server_key = NULL;
	ps_transport_curve curve;
	const ps_cli_opt opts[] = {
		{"connect", PS_CLI_STRING, &endpoint, "ENDPOINT",
		 "server endpoint (tcp://HOST:PORT or ipc://PATH); with several "
		 "server shards, all of theirs separated by commas", 0, -1, NULL},
		{"role", PS_CLI_CHOICE, &role, "ROLE",
		 "train on a shard, or evaluate the server's weights", 0, -1,
		 roles},
		{"data", PS_CLI_STRING, &data, "SPEC",
		 "dataset: fashion-mnist:train|test, idx:IMAGES,LABELS, synthetic-linear:N[:SEED]",
		 0, -1, NULL},
		{"model", PS_CLI_CHOICE, &model, "NAME", "model to train", 0,
		 -1, models},
		{"hidden", PS_CLI_STRING, &hidden, "LIST",
		 "mlp only: hidden layer widths, e.g. 256 or 256,128", 0, -1,
		 NULL},
		{"activation", PS_CLI_CHOICE, &activation, "NAME",
		 "mlp only: activation of the hidden layers", 0, -1,
		 activations},
		{"classes", PS_CLI_INT, &classes, "K",
		 "number of classes; 0 takes it from the data", 0, 1 << 20,
		 NULL},
		{"rank", PS_CLI_INT, &rank, "R",
		 "this worker's rank: it trains on data shard R", 0, 65534,
		 NULL},
		{"workers", PS_CLI_INT, &workers, "N",
		 "number of training workers (data shards)", 1, 65535, NULL},
		{"epochs", PS_CLI_INT, &epochs, "E",
		 "passes over this worker's shard", 0, 1000000, NULL},
		{"batch", PS_CLI_INT, &batch, "B", "minibatch size", 1,
		 1 << 20, NULL},
		{"clip-norm", PS_CLI_DOUBLE, &clip_norm, "C",
		 "rescale each minibatch gradient to L2 norm at most C before the push; 0: off",
		 0, 1e30, NULL},
		{"clip-value", PS_CLI_DOUBLE, &clip_value, "V",
		 "clamp each gradient element into [-V, V] before the push; 0: off",
		 0, 1e30, NULL},
		{"seed", PS_CLI_U64, &seed, "S",
		 "seed of the weight initialization and the shuffling", 0,
		 -1, NULL},
		{"timeout", PS_CLI_DOUBLE, &timeout, "SECONDS",
		 "give up when the server has not answered for this long",
		 0.01, 1e6, NULL},
		{"max-inflight", PS_CLI_INT, &inflight, "K",
		 "pushes sent before their acknowledgement arrives", 1, 1024,
		 NULL},
		{"progress-every", PS_CLI_DOUBLE, &progress, "SECONDS",
		 "seconds between progress lines (evaluator: between evaluations)",
		 0.01, 1e6, NULL},
		{"val-fraction", PS_CLI_DOUBLE, &val_fraction, "F",
		 "hold out the last fraction F of the training data for validation "
		 "(trainers skip it; give trainers and evaluator the same F)",
		 0, 0.9, NULL},
		{"val-data", PS_CLI_STRING, &val_data, "SPEC",
		 "evaluator: the training data, whose held-out rows it measures",
		 0, -1, NULL},
		{"patience", PS_CLI_INT, &patience, "P",
		 "evaluator: stop training once the validation loss has not improved "
		 "for P evaluations, keeping the best weights; 0: never",
		 0, 1000000, NULL},
		{"stop-at-accuracy", PS_CLI_DOUBLE, &stop_at_accuracy, "A",
		 "evaluator: stop training once an evaluation's test accuracy is "
		 "at least A (a classifier; 0: never)",
		 0, 1, NULL},
		{"result-out", PS_CLI_STRING, &result_out, "PATH",
		 "evaluator: write the final test loss and accuracy here (JSON)",
		 0, -1, NULL},
		{"metrics-out", PS_CLI_STRING, &metrics_out, "PATH",
		 "write one JSON line of measurements here: evaluator per "
		 "evaluation, trainer every --metrics-every seconds", 0, -1,
		 NULL},
		{"model-out", PS_CLI_STRING, &model_out, "PATH",
		 "evaluator: write the final weights here, the whole model assembled "
		 "from every shard (a model file, as ps-server --model-out)", 0, -1,
		 NULL},
		{"metrics-every", PS_CLI_DOUBLE, &metrics_every, "SECONDS",
		 "trainer: seconds between metrics lines (default 1)", 0.01, 1e6,
		 NULL},
		{"link-delay-ms", PS_CLI_DOUBLE, &link_delay_ms, "MS",
		 "emulated link: hold every outgoing message this long before "
		 "sending it (default 0: off)", 0, 10000, NULL},
		{"shm", PS_CLI_FLAG, &shm, NULL,
		 "ZeroMQ: lend tensors of 16 KB or more to the server through shared "
		 "memory instead of sending the bytes, and take its, when the server "
		 "runs on this machine with --shm as this user (otherwise plain "
		 "messages; ps-launch sets it); not with CURVE or MPI", 0, 0, NULL},
		{"fetch-every", PS_CLI_INT, &fetch_every, "N",
		 "pull the weights every N steps (Downpour n_fetch)", 1, 1000000,
		 NULL},
		{"push-every", PS_CLI_INT, &push_every, "N",
		 "push the sum of N steps' gradients (Downpour n_push)", 1,
		 1000000, NULL},
		{"prefetch", PS_CLI_FLAG, &prefetch, NULL,
		 "overlap communication with computation: request the next weights "
		 "right after each push and compute meanwhile on the ones in hand, "
		 "adding this worker's own newest gradient to them when the server "
		 "runs plain SGD (not with --fetch-every/--push-every)",
		 0, -1, NULL},
		{"stale-prefetch", PS_CLI_FLAG, &stale_prefetch, NULL,
		 "with --prefetch: compute on the prefetched weights as they came, "
		 "without this worker's own newest gradient (one step more staleness)",
		 0, -1, NULL},
		{"step-delay-ms", PS_CLI_DOUBLE, &step_delay_ms, "MS",
		 "sleep this long every step: a slow worker, for experiments",
		 0, 1e6, NULL},
		{"crash-after", PS_CLI_U64, &crash_after, "STEPS",
		 "testing aid: exit abruptly (status 3, no bye) after STEPS steps; 0: never",
		 0, -1, NULL},
		{"curve-secret", PS_CLI_STRING, &curve_secret, "FILE",
		 "CURVE: this client's secret key (NAME.key_secret from ps-keygen; "
		 "the server must hold NAME.key in its --curve-authorized directory)",
		 0, -1, NULL},
		{"curve-server-key", PS_CLI_STRING, &curve_server_key, "FILE",
		 "CURVE: the server's public key (NAME.key); needs --curve-secret",
		 0, -1, NULL},
		{"check", PS_CLI_FLAG, &check, NULL,
		 "check the options, the data and the model, then exit (no server needed)",
		 0, -1, NULL},
		{"log-level", PS_CLI_CHOICE, &level, "LEVEL", "log verbosity",
		 0, -1, levels},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_worker_config cfg = {0};
	ps_err e = {0};
	struct sigaction sa;
	char tag[32];
	int rc;

	rc = ps_cli_parse("ps-worker",
			  "A parameter-server client: trains on one shard of the data (pull,\n"
			  "gradient, push), or evaluates the server's weights on held-out data.",
			  opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc == PS_OK && !data)
		rc = ps_err_set(&e, PS_EINVAL, "--data is required (try --help)");
	if (rc == PS_OK && role == 0 && rank >= workers)
		rc = ps_err_set(&e, PS_EINVAL,
				"--rank %d must be below --workers %d", rank,
				workers);
	if (rc == PS_OK && role == 1 && (val_data != NULL) != (val_fraction > 0))
		rc = ps_err_set(&e, PS_EINVAL,
				"--val-data and --val-fraction go together");
	if (rc == PS_OK && prefetch && (fetch_every > 1 || push_every > 1))
		rc = ps_err_set(&e, PS_EINVAL,
				"--prefetch works with a pull and a push every step");
	if (rc == PS_OK && stale_prefetch && !prefetch)
		rc = ps_err_set(&e, PS_EINVAL, "--stale-prefetch needs --prefetch");
	if (rc == PS_OK && stop_at_accuracy > 0 && role != 1)
		rc = ps_err_set(&e, PS_EINVAL,
				"--stop-at-accuracy is for the evaluator (--role eval)");
	if (rc == PS_OK && patience > 0 && !val_data)
		rc = ps_err_set(&e, PS_EINVAL,
				"--patience needs --val-data and --val-fraction");
	if (rc != PS_OK) {
		fprintf(stderr, "ps-worker: %s\n", e.msg);
		return 2;
	}
	if (!check && ps_mpi_launched()) {
		/* Under mpirun the job says who trains which shard and where
		 * the server is; --rank, --workers and --connect are not
		 * needed. */
		rc = ps_cluster_join(&cluster,
				     role == 0 ? PS_CLUSTER_TRAINER
					       : PS_CLUSTER_EVALUATOR,
				     &e);
		if (rc == PS_OK)
			rc = ps_cluster_share_endpoint(&cluster, "", mpi_endpoint,
						       sizeof mpi_endpoint, &e);
		if (rc == PS_OK && mpi_endpoint[0] == '\0')
			rc = ps_err_set(&e, PS_ETRANSPORT,
					"the server rank failed to start");
		if (rc != PS_OK) {
			fprintf(stderr, "ps-worker: %s\n", e.msg);
			return 1;
		}
		in_cluster = 1;
		rank = (int)cluster.trainer_index;
		workers = (int)cluster.num_trainers;
		endpoint = mpi_endpoint;
	}
	if (role == 0)
		snprintf(tag, sizeof tag, "worker %d", rank);
	else
		snprintf(tag, sizeof tag, "eval");
	ps_log_setup(tag, (enum ps_log_level)level);
	if (shm && (curve_secret || curve_server_key ||
		    strncmp(endpoint, "mpi://", 6) == 0)) {
		fprintf(stderr, "ps-worker: --shm is for ZeroMQ without CURVE: "
				"CURVE's encryption would not cover the shared "
				"bytes, and MPI shares memory by itself\n");
		return in_cluster ? 1 : 2;
	}
	memset(&curve, 0, sizeof curve);
	if (curve_secret || curve_server_key) {
		rc = load_curve(curve_secret, curve_server_key, &curve, &e);
		if (rc == PS_OK && strncmp(endpoint, "mpi://", 6) == 0)
			rc = ps_err_set(&e, PS_EINVAL,
					"--curve-* apply to ZeroMQ endpoints; "
					"the MPI transport relies on the "
					"cluster's isolation (docs/SECURITY.md)");
		if (rc != PS_OK) {
			fprintf(stderr, "ps-worker: %s\n", e.msg);
			return in_cluster ? 1 : 2;
		}
		cfg.curve = &curve;
	}
	openblas_set_num_threads(1);
	ps_transport_setup_process();

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	cfg.endpoint = endpoint;
	cfg.data = data;
	cfg.model = models[model];
	cfg.hidden = hidden;
	cfg.activation = activations[activation];
	cfg.classes = (uint32_t)classes;
	cfg.rank = (uint32_t)rank;
	cfg.num_workers = (uint32_t)workers;
	cfg.seed = seed;
	cfg.epochs = (uint32_t)epochs;
	cfg.batch = (uint32_t)batch;
	cfg.timeout = timeout;
	cfg.max_inflight = inflight;
	cfg.progress_every = progress;
	cfg.val_fraction = val_fraction;
	cfg.val_data = val_data;
	cfg.patience = (uint32_t)patience;
	cfg.stop_at_accuracy = stop_at_accuracy;
	cfg.crash_after = crash_after;
	cfg.fetch_every = (uint32_t)fetch_every;
	cfg.push_every = (uint32_t)push_every;
	cfg.step_delay = step_delay_ms / 1000.0;
	cfg.prefetch = prefetch;
	cfg.stale_prefetch = stale_prefetch;
	cfg.clip_norm = clip_norm;
	cfg.clip_value = clip_value;
	cfg.result_out = result_out;
	cfg.metrics_out = metrics_out;
	cfg.model_out = model_out;
	cfg.metrics_every = metrics_every;
	ps_transport_set_default_delay(link_delay_ms / 1000.0);
	ps_transport_set_default_shm(shm);
	cfg.stop = &stop_flag;

	if (check)
		rc = ps_worker_check(&cfg, &e);
	else if (role == 0)
		rc = ps_worker_train(&cfg, &e);
	else
		rc = ps_worker_evaluate(&cfg, &e);
	if (rc != PS_OK && check) {
		/* A check that fails is an option problem. */
		fprintf(stderr, "ps-worker: %s\n", e.msg);
		return 2;
	}
	if (rc != PS_OK) {
		/* Under mpirun, exit without MPI_Finalize: mpirun then ends
		 * the whole job instead of waiting for this rank. */
		ps_log_error("%s", e.msg);
		return 1;
	}
	if (in_cluster)
		ps_cluster_leave();
	return 0;
}
