/*
 * ps-server: parse options, listen, run the server's event loop, and on
 * the way out write the trained model and the run's figures.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cblas.h>

#include "ps_checkpoint.h"
#include "ps_cli.h"
#include "ps_cluster.h"
#include "ps_curve.h"
#include "ps_mpi.h"
#include "ps_log.h"
#include "ps_modelfile.h"
#include "ps_server.h"
#include "ps_server_metrics.h"
#include "ps_transport.h"

static volatile int stop_flag;

/* The run's checkpoint directory and this shard's under it. */
static int make_checkpoint_dirs(const char *root, uint32_t num_shards,
				uint32_t shard, ps_err *e)
{
	char dir[4096];
	int rc = ps_checkpoint_dir(root, num_shards, shard, dir, sizeof dir, e);

	if (rc != PS_OK)
		return rc;
	/* root, then each level below it that the shard's path adds. */
	for (char *p = dir + strlen(root); ; p++) {
		char c = *p;
		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return ps_err_set(e, PS_EIO, "cannot create %s: %s", dir,
					  strerror(errno));
		*p = c;
		if (c == '\0')
			break;
	}
	return PS_OK;
}

/* "500" (updates) or "30s" (seconds) into one of the two. */
static int parse_every(const char *text, uint64_t *updates, double *seconds,
		       ps_err *e)
{
	char *end = NULL;
	double v;

	*updates = 0;
	*seconds = 0;
	if (text[0] < '0' || text[0] > '9')
		goto bad;
	v = strtod(text, &end);
	if (end == text || !(v > 0 && v <= 1e15))
		goto bad;
	if (strcmp(end, "s") == 0) {
		*seconds = v;
		return PS_OK;
	}
	if (*end == '\0' && v == (double)(uint64_t)v) {
		*updates = (uint64_t)v;
		return PS_OK;
	}
bad:
	return ps_err_set(e, PS_EINVAL,
			  "--checkpoint-every '%s': expected a number of "
			  "updates (500) or of seconds (30s), above 0",
			  text);
}

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

/* Write text to path through a temporary file and rename, so that a
 * reader polling for the file never sees it half written. */
static int write_file_atomic(const char *path, const char *text)
{
	char tmp[4096];
	FILE *f;
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
		return -1;
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fputs(text, f);
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		return -1;
	return 0;
}

/* The endpoint workers should use: the bound one, with its host replaced
 * by `host` when given (tcp only). */
static int advertised_endpoint(const char *bound, const char *host,
			       char *out, size_t len, ps_err *e)
{
	const char *port;

	if (!host) {
		snprintf(out, len, "%s", bound);
		return PS_OK;
	}
	port = strrchr(bound, ':');
	if (strncmp(bound, "tcp://", 6) != 0 || !port)
		return ps_err_set(e, PS_EINVAL,
				  "--advertise applies to tcp endpoints, not %s",
				  bound);
	if ((size_t)snprintf(out, len, "tcp://%s%s", host, port) >= len)
		return ps_err_set(e, PS_EINVAL, "--advertise: host name too long");
	return PS_OK;
}

/* --curve-secret and --curve-authorized: both or neither. Loads the
 * server's secret key and the authorized client keys into *c (*authorized
 * owned by the caller) and says so in the log. */
static int load_curve(const char *secret, const char *dir,
		      ps_transport_curve *c, ps_curve_keyset **authorized,
		      ps_err *e)
{
	uint8_t pub[PS_CURVE_KEY_LEN];
	char z85[PS_CURVE_Z85_LEN + 1];
	unsigned warnings = 0;
	int rc;

	if (!secret != !dir)
		return ps_err_set(e, PS_EINVAL,
				  "--curve-secret and --curve-authorized go "
				  "together: the server's secret key and the "
				  "directory of the clients' public keys");
	rc = ps_curve_key_read(c->secret_key, secret, PS_CURVE_SECRET,
			       &warnings, e);
	if (rc != PS_OK)
		return rc;
	if (warnings & PS_CURVE_WARN_MODE)
		ps_log_warn("%s may be read by other users: chmod 600 it",
			    secret);
	rc = ps_curve_keyset_load_dir(authorized, dir, e);
	if (rc != PS_OK)
		return rc;
	c->authorized = *authorized;
	rc = ps_transport_curve_public(pub, c->secret_key, e);
	if (rc != PS_OK)
		return rc;
	ps_curve_z85_encode(z85, pub);
	ps_log_info("CURVE: server public key %s, %zu authorized client "
		    "key(s) from %s",
		    z85, ps_curve_keyset_count(*authorized), dir);
	return PS_OK;
}

/* A fault-injection setting from the environment: unset or empty is off
 * (0); otherwise a number above 0. -1, with a message, when it is not. */
static int fault_every(const char *name, const char *value, uint64_t *out)
{
	char *end = NULL;

	*out = 0;
	if (!value || !*value)
		return 0;
	*out = strtoull(value, &end, 10);
	if (*end != '\0' || *out == 0 || value[0] == '-') {
		fprintf(stderr, "ps-server: %s='%s': expected a number above 0\n",
			name, value);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *listen = NULL, *advertise = NULL;
	int transport = 0;
	static const char *const transports[] = {"zmq", "mpi", NULL};
	const char *endpoint_file = NULL, *model_out = NULL, *stats_out = NULL;
	int check = 0;
	ps_cluster cluster;
	int in_cluster = 0;
	char published[300];
	const char *consistency = "async";
	int staleness_lr = 0;
	double dc_lambda = 0;
	int workers = 0, optimizer = 0, level = 2;
	double lr = 0.1, idle_timeout = 120, eval_grace = 30;
	int evaluators = 0;
	double worker_timeout = 10, heartbeat = 2;
	const char *checkpoint_dir = NULL, *checkpoint_every = NULL;
	int checkpoint_keep = 2, resume = 0;
	int shard = 0, shards = 1;
	const char *drop_acks = getenv("PS_FAULT_DROP_ACK_EVERY");
	const char *drop_pulls = getenv("PS_FAULT_DROP_PULL_EVERY");
	double decay_steps = 1000, gamma = 0.5, warmup = 0;
	double momentum = 0.9, beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
	       rho = 0.9, weight_decay = 0, l1 = 0;
	char optim_desc[256];
	ps_optim *optim_check = NULL;
	int schedule = 0;
	int64_t max_message = 1LL << 30;
	double max_message_mb = 1024;
	const char *metrics_out = NULL;
	double metrics_every = 1, link_delay_ms = 0;
	int shm = 0;
	ps_server_metrics *metrics = NULL;
	static const char *const levels[] = {"error", "warn", "info", "debug",
					     NULL};
	/* CURVE (docs/SECURITY.md) */
	const char *curve_secret = NULL, *curve_authorized = NULL;
	ps_transport_curve curve;
	ps_curve_keyset *authorized = NULL;
	const ps_cli_opt opts[] = {
		{"transport", PS_CLI_CHOICE, &transport, "NAME",
		 "zmq (tcp:// or ipc://), or mpi (under mpirun: MPI point-to-point)",
		 0, -1, transports},
		{"listen", PS_CLI_STRING, &listen, "ENDPOINT",
		 "where to listen: tcp://HOST:PORT (PORT * picks a free one) or ipc://PATH "
		 "(default tcp://127.0.0.1:5555; under mpirun tcp://127.0.0.1:*)",
		 0, -1, NULL},
		{"advertise", PS_CLI_STRING, &advertise, "HOST",
		 "the host name workers use to reach a tcp endpoint bound to another "
		 "address (e.g. --listen tcp://0.0.0.0:* --advertise node1)",
		 0, -1, NULL},
		{"endpoint-file", PS_CLI_STRING, &endpoint_file, "PATH",
		 "write the endpoint actually bound here once listening", 0, -1,
		 NULL},
		{"workers", PS_CLI_INT, &workers, "N",
		 "training workers to expect; the run ends when all said bye "
		 "(0: 1, or under mpirun the number of trainer ranks)",
		 0, 65535, NULL},
		{"optimizer", PS_CLI_CHOICE, &optimizer, "NAME",
		 "server-side optimizer; state per weight: none (sgd), 1 float "
		 "(momentum, nesterov, adagrad, rmsprop), 2 floats (adam, adamw)",
		 0, -1, ps_optim_names},
		{"lr", PS_CLI_DOUBLE, &lr, "RATE", "learning rate", 1e-12, 1e6,
		 NULL},
		{"lr-schedule", PS_CLI_CHOICE, &schedule, "NAME",
		 "learning-rate schedule over the update count t: const; invsqrt "
		 "lr/sqrt(1+t/D); exp lr*G^(t/D); step lr*G^floor(t/D)",
		 0, -1, ps_lr_schedule_names},
		{"lr-decay-steps", PS_CLI_DOUBLE, &decay_steps, "D",
		 "updates per decay period of the schedule", 1e-9, 1e18, NULL},
		{"lr-gamma", PS_CLI_DOUBLE, &gamma, "G",
		 "decay factor per period (exp, step)", 1e-12, 1, NULL},
		{"lr-warmup", PS_CLI_DOUBLE, &warmup, "W",
		 "ramp the rate up linearly over the first W updates", 0, 1e18,
		 NULL},
		{"momentum", PS_CLI_DOUBLE, &momentum, "MU",
		 "momentum, nesterov: v = MU*v + g, in [0, 1)", 0, 1, NULL},
		{"beta1", PS_CLI_DOUBLE, &beta1, "B1",
		 "adam, adamw: decay of the gradient mean, in [0, 1)", 0, 1,
		 NULL},
		{"beta2", PS_CLI_DOUBLE, &beta2, "B2",
		 "adam, adamw: decay of the squared-gradient mean, in [0, 1)",
		 0, 1, NULL},
		{"rho", PS_CLI_DOUBLE, &rho, "RHO",
		 "rmsprop: decay of the squared-gradient mean, in [0, 1)", 0, 1,
		 NULL},
		{"eps", PS_CLI_DOUBLE, &eps, "EPS",
		 "adagrad, rmsprop, adam, adamw: added to the root in the "
		 "denominator, > 0",
		 1e-30, 1, NULL},
		{"weight-decay", PS_CLI_DOUBLE, &weight_decay, "WD",
		 "every optimizer: L2, adds WD*w to the gradient; adamw: "
		 "decoupled, w -= lr*WD*w",
		 0, 1e6, NULL},
		{"l1", PS_CLI_DOUBLE, &l1, "L1",
		 "every optimizer: L1, adds L1*sign(w) to the gradient", 0, 1e6,
		 NULL},
		{"model-out", PS_CLI_STRING, &model_out, "PATH",
		 "write the trained model here at the end", 0, -1, NULL},
		{"stats-out", PS_CLI_STRING, &stats_out, "PATH",
		 "write the run's figures here as JSON at the end", 0, -1,
		 NULL},
		{"idle-timeout", PS_CLI_DOUBLE, &idle_timeout, "SECONDS",
		 "give up (exit 1) after this long without any message; 0 waits forever",
		 0, 1e9, NULL},
		{"evaluators", PS_CLI_INT, &evaluators, "N",
		 "evaluators to wait for after training (within --eval-grace), even "
		 "if they have not connected yet; under mpirun the job's evaluator ranks",
		 0, 16, NULL},
		{"eval-grace", PS_CLI_DOUBLE, &eval_grace, "SECONDS",
		 "after training, how long evaluators may take to fetch the final weights",
		 0, 1e6, NULL},
		{"shard", PS_CLI_INT, &shard, "K",
		 "this server is shard K (0-based) of --shards: it owns the K-th of S "
		 "contiguous ranges of the weights, balanced by size", 0, 65535, NULL},
		{"shards", PS_CLI_INT, &shards, "S",
		 "server shards the model is cut into (workers connect to all)",
		 1, 65536, NULL},
		{"worker-timeout", PS_CLI_DOUBLE, &worker_timeout, "SECONDS",
		 "drop a trainer not heard from for this long (crashed, killed, cut "
		 "off): nothing waits for it any more; 0 never drops one",
		 0, 1e6, NULL},
		{"heartbeat", PS_CLI_DOUBLE, &heartbeat, "SECONDS",
		 "a client waiting this long for a reply sends a heartbeat (told to "
		 "clients at registration); below --worker-timeout",
		 0.01, 1e5, NULL},
		{"checkpoint-dir", PS_CLI_STRING, &checkpoint_dir, "DIR",
		 "write checkpoints (weights, optimizer state, counters) here: "
		 "periodically with --checkpoint-every, and when the run ends or is "
		 "stopped", 0, -1, NULL},
		{"checkpoint-every", PS_CLI_STRING, &checkpoint_every, "N|Ns",
		 "checkpoint after every N updates (500) or every N seconds (30s)",
		 0, -1, NULL},
		{"checkpoint-keep", PS_CLI_INT, &checkpoint_keep, "K",
		 "keep the newest K checkpoints", 1, 1000, NULL},
		{"resume", PS_CLI_FLAG, &resume, NULL,
		 "start from the newest valid checkpoint in --checkpoint-dir (a "
		 "corrupt one is refused and the next older tried)", 0, -1, NULL},
		{"max-message-mb", PS_CLI_DOUBLE, &max_message_mb, "MB",
		 "largest frame accepted (envelope or tensor); a peer sending a larger one is disconnected, "
		 "and over ZeroMQ a model whose weights are larger is refused at hello",
		 0.001, 1e6, NULL},
		{"consistency", PS_CLI_STRING, &consistency, "MODE",
		 "async (apply pushes on arrival), bsp (one combined step per clock), "
		 "or ssp:S (no trainer more than S clocks ahead of the slowest)",
		 0, -1, NULL},
		{"staleness-lr", PS_CLI_FLAG, &staleness_lr, NULL,
		 "scale each push's step by 1/max(1, staleness) (async, ssp)",
		 0, -1, NULL},
		{"dc-lambda", PS_CLI_DOUBLE, &dc_lambda, "LAMBDA",
		 "delay-compensated ASGD: g + LAMBDA*g*g*(w_now - w_pulled); 0: off "
		 "(keeps one copy of the weights per trainer)",
		 0, 1e6, NULL},
		{"metrics-out", PS_CLI_STRING, &metrics_out, "PATH",
		 "write one JSON line of measurements here every --metrics-every "
		 "seconds (and a last one at the end)", 0, -1, NULL},
		{"metrics-every", PS_CLI_DOUBLE, &metrics_every, "SECONDS",
		 "seconds between metrics lines (default 1)", 0.01, 1e6, NULL},
		{"link-delay-ms", PS_CLI_DOUBLE, &link_delay_ms, "MS",
		 "emulated link: hold every outgoing message this long before "
		 "sending it, without blocking the loop (default 0: off)", 0,
		 10000, NULL},
		{"shm", PS_CLI_FLAG, &shm, NULL,
		 "ZeroMQ: lend tensors of 16 KB or more to the peers through shared "
		 "memory instead of sending the bytes, and take theirs, with peers on "
		 "this machine started with --shm as this user (others get plain "
		 "messages; ps-launch sets it); not with CURVE or MPI", 0, 0, NULL},
		{"curve-secret", PS_CLI_STRING, &curve_secret, "FILE",
		 "CURVE: encrypt and authenticate every connection with this server "
		 "secret key (NAME.key_secret from ps-keygen); needs --curve-authorized",
		 0, -1, NULL},
		{"curve-authorized", PS_CLI_STRING, &curve_authorized, "DIR",
		 "CURVE: let in only clients whose public key file (NAME.key) is in DIR; "
		 "others are refused, logged and counted (rejected.unauthorized)",
		 0, -1, NULL},
		{"check", PS_CLI_FLAG, &check, NULL,
		 "check the options, then exit without listening", 0, -1,
		 NULL},
		{"log-level", PS_CLI_CHOICE, &level, "LEVEL", "log verbosity",
		 0, -1, levels},
		{NULL, 0, NULL, NULL, NULL, 0, 0, NULL},
	};
	ps_server_config cfg = {0};
	ps_transport_opts topts = {0};
	ps_transport *t = NULL;
	ps_server *s = NULL;
	ps_err e = {0};
	struct sigaction sa;
	int rc, status = 1;

	rc = ps_cli_parse("ps-server",
			  "The parameter server: holds the model's weights, applies the gradients\n"
			  "workers push (asynchronous SGD), and answers their pulls.",
			  opts, argc, argv, &e);
	if (rc == PS_CLI_HELP)
		return 0;
	if (rc != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		return 2;
	}
	ps_log_setup("server", (enum ps_log_level)level);
	/* One process per role already fills the cores: BLAS threads would
	 * only fight the workers. */
	openblas_set_num_threads(1);
	ps_transport_setup_process();

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	max_message = (int64_t)(max_message_mb * 1024 * 1024);
	topts.max_message = max_message;
	topts.linger_ms = 1000;
	cfg.optim.kind = (enum ps_optim_kind)optimizer;
	cfg.optim.lr = lr;
	cfg.optim.schedule = (enum ps_lr_schedule)schedule;
	cfg.optim.decay_steps = decay_steps;
	cfg.optim.gamma = gamma;
	cfg.optim.warmup = warmup;
	cfg.optim.momentum = momentum;
	cfg.optim.beta1 = beta1;
	cfg.optim.beta2 = beta2;
	cfg.optim.rho = rho;
	cfg.optim.eps = eps;
	cfg.optim.weight_decay = weight_decay;
	cfg.optim.l1 = l1;
	/* Settings the option ranges cannot express (beta < 1, nesterov
	 * needs momentum > 0) are bad options too: check them before
	 * listening, with no state (n = 0). */
	if (ps_optim_new(&optim_check, 0, &cfg.optim, &e) != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		return 2;
	}
	ps_optim_destroy(&optim_check);
	if (ps_consistency_parse(consistency, &cfg.consistency,
				 &cfg.ssp_bound, &e) != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		return 2;
	}
	cfg.staleness_lr = staleness_lr;
	cfg.dc_lambda = dc_lambda;
	if (shard >= shards) {
		fprintf(stderr, "ps-server: --shard %d of --shards %d: expected 0 to %d\n",
			shard, shards, shards - 1);
		return 2;
	}
	if (shards > 1 && model_out) {
		fprintf(stderr, "ps-server: --model-out needs the whole model: with "
				"several shards an evaluator writes it (ps-worker "
				"--role eval --model-out)\n");
		return 2;
	}
	cfg.shard = (uint32_t)shard;
	cfg.num_shards = (uint32_t)shards;
	cfg.worker_timeout = worker_timeout;
	cfg.heartbeat = heartbeat;
	if (worker_timeout > 0 && heartbeat >= worker_timeout) {
		fprintf(stderr, "ps-server: --heartbeat %g must be below "
				"--worker-timeout %g\n",
			heartbeat, worker_timeout);
		return 2;
	}
	if ((checkpoint_every || resume) && !checkpoint_dir) {
		fprintf(stderr, "ps-server: --%s needs --checkpoint-dir\n",
			resume ? "resume" : "checkpoint-every");
		return 2;
	}
	if (checkpoint_every &&
	    parse_every(checkpoint_every, &cfg.checkpoint_updates,
			&cfg.checkpoint_seconds, &e) != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		return 2;
	}
	cfg.checkpoint_dir = checkpoint_dir;
	cfg.checkpoint_keep = checkpoint_keep;
	if (fault_every("PS_FAULT_DROP_ACK_EVERY", drop_acks,
			&cfg.drop_ack_every) != 0 ||
	    fault_every("PS_FAULT_DROP_PULL_EVERY", drop_pulls,
			&cfg.drop_pull_every) != 0)
		return 2;
	if (shm && (curve_secret || curve_authorized || transport == 1 ||
		    (listen && strncmp(listen, "mpi://", 6) == 0))) {
		fprintf(stderr, "ps-server: --shm is for ZeroMQ without CURVE: "
				"CURVE's encryption would not cover the shared "
				"bytes, and MPI shares memory by itself\n");
		return 2;
	}
	memset(&curve, 0, sizeof curve);
	if (curve_secret || curve_authorized) {
		if (transport == 1 || (listen && strncmp(listen, "mpi://", 6) == 0)) {
			fprintf(stderr, "ps-server: --curve-* apply to ZeroMQ "
					"endpoints; the MPI transport relies on the "
					"cluster's isolation (docs/SECURITY.md)\n");
			return 2;
		}
		if (load_curve(curve_secret, curve_authorized, &curve,
			       &authorized, &e) != PS_OK) {
			fprintf(stderr, "ps-server: %s\n", e.msg);
			ps_curve_keyset_destroy(&authorized);
			return 2;
		}
		topts.curve = &curve;
	}
	if (check) {
		printf("ok: optimizer %s%s\n",
		       ps_optim_describe(&cfg.optim, optim_desc,
					 sizeof optim_desc),
		       topts.curve ? ", CURVE" : "");
		ps_curve_keyset_destroy(&authorized);
		return 0;
	}
	cfg.idle_timeout = idle_timeout;
	cfg.eval_grace = eval_grace;
	cfg.num_evaluators = (uint32_t)evaluators;
	/* Over ZeroMQ a model whose weights exceed a frame could never be
	 * pushed or pulled: refuse it at hello, before allocating. MPI peers
	 * are ranks of the job (and a frame there also holds a header). */
	if (!(transport == 1 || (listen && strncmp(listen, "mpi://", 6) == 0)))
		cfg.max_params = (uint64_t)max_message / sizeof(float);

	if (ps_mpi_launched()) {
		/* Under mpirun the job itself says how many trainers there
		 * are and tells them where this server is. */
		rc = ps_cluster_join(&cluster, PS_CLUSTER_SERVER, &e);
		if (rc != PS_OK) {
			fprintf(stderr, "ps-server: %s\n", e.msg);
			goto out;
		}
		in_cluster = 1;
		if (workers && (uint32_t)workers != cluster.num_trainers)
			ps_log_warn("--workers %d ignored: the job has %u trainer ranks",
				    workers, cluster.num_trainers);
		workers = (int)cluster.num_trainers;
		cfg.num_evaluators = cluster.num_evaluators;
		/* Server ranks are the shards, in rank order. */
		if (shards > 1 && ((uint32_t)shards != cluster.num_servers ||
				   (uint32_t)shard != cluster.server_index)) {
			fprintf(stderr, "ps-server: --shard %d --shards %d, but this "
					"is server rank %u of %u in the job\n",
				shard, shards, cluster.server_index,
				cluster.num_servers);
			goto out;
		}
		cfg.shard = cluster.server_index;
		cfg.num_shards = cluster.num_servers;
		if (transport == 1)
			listen = "mpi://*";
		else if (!listen)
			listen = "tcp://127.0.0.1:*";
	} else if (transport == 1 ||
		   (listen && strncmp(listen, "mpi://", 6) == 0)) {
		fprintf(stderr, "ps-server: --transport mpi needs a job started by mpirun\n");
		status = 2;
		goto out;
	}
	if (!listen)
		listen = "tcp://127.0.0.1:5555";
	if (!workers)
		workers = 1;
	cfg.num_workers = (uint32_t)workers;

	ps_transport_set_default_delay(link_delay_ms / 1000.0);
	ps_transport_set_default_shm(shm);
	rc = ps_transport_listen(&t, listen, &topts, &e);
	if (rc == PS_OK)
		rc = advertised_endpoint(ps_transport_endpoint(t), advertise,
					 published, sizeof published, &e);
	if (in_cluster) {
		/* Every rank waits in this exchange: take part even after a
		 * failure (publishing "") so that nobody hangs. */
		char unused[4096];
		int rc2 = ps_cluster_share_endpoint(
			&cluster, rc == PS_OK ? published : "", unused,
			sizeof unused, rc == PS_OK ? &e : NULL);
		if (rc == PS_OK)
			rc = rc2;
	}
	if (rc != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		goto out;
	}
	if (metrics_out) {
		rc = ps_server_metrics_open(&metrics, metrics_out,
					    metrics_every, &e);
		if (rc != PS_OK) {
			fprintf(stderr, "ps-server: %s\n", e.msg);
			goto out;
		}
		cfg.tick = ps_server_metrics_tick;
		cfg.tick_arg = metrics;
	}
	rc = ps_server_new(&s, &cfg, t, &e);
	if (rc != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		goto out;
	}
	if (checkpoint_dir &&
	    make_checkpoint_dirs(checkpoint_dir, cfg.num_shards, cfg.shard,
				 &e) != PS_OK) {
		fprintf(stderr, "ps-server: %s\n", e.msg);
		goto out;
	}
	if (resume) {
		ps_checkpoint ck;
		char path[4096];
		rc = ps_checkpoint_load_for(checkpoint_dir, cfg.num_shards,
					    cfg.shard, &ck, path, sizeof path,
					    &e);
		if (rc == PS_OK) {
			rc = ps_server_restore(s, &ck, &e);
			if (rc == PS_OK)
				ps_log_info("resumed from %s: version %llu, "
					    "%llu samples", path,
					    (unsigned long long)ck.version,
					    (unsigned long long)ck.samples);
			else {
				ps_err why = e;
				ps_err_set(&e, rc, "%s: %s", path, why.msg);
			}
			ps_checkpoint_release(&ck);
		}
		if (rc != PS_OK) {
			fprintf(stderr, "ps-server: cannot resume: %s\n", e.msg);
			goto out;
		}
	}
	if (cfg.drop_ack_every)
		ps_log_warn("fault injection: dropping every %llu-th ack "
			    "(PS_FAULT_DROP_ACK_EVERY)",
			    (unsigned long long)cfg.drop_ack_every);
	if (cfg.drop_pull_every)
		ps_log_warn("fault injection: not answering every %llu-th "
			    "pull of a trainer (PS_FAULT_DROP_PULL_EVERY)",
			    (unsigned long long)cfg.drop_pull_every);
	ps_log_info("listening on %s for %d worker(s), %s; optimizer %s",
		    published, workers, consistency,
		    ps_optim_describe(&cfg.optim, optim_desc,
				      sizeof optim_desc));
	if (endpoint_file) {
		char line[sizeof published + 2];
		snprintf(line, sizeof line, "%s\n", published);
		if (write_file_atomic(endpoint_file, line) != 0) {
			fprintf(stderr, "ps-server: cannot write %s\n",
				endpoint_file);
			goto out;
		}
	}

	rc = ps_server_run(s, &stop_flag, &e);
	if (rc == PS_OK) {
		status = 0;
	} else {
		ps_log_error("%s", e.msg);
		status = rc == PS_EINTR ? 0 : 1;
	}
	if (metrics && ps_server_metrics_final(metrics, s) != PS_OK)
		ps_log_error("cannot write %s", metrics_out);
	if (checkpoint_dir) {
		/* The last state, also after a signal: resume from here. */
		ps_server_stats st;
		ps_server_get_stats(s, &st);
		if (st.version == 0 && !st.resumed) {
			ps_log_info("no update applied: no final checkpoint");
		} else if (ps_server_checkpoint(s, &e) != PS_OK) {
			ps_log_error("final checkpoint failed: %s", e.msg);
			status = 1;
		} else {
			ps_log_info("final checkpoint at version %llu in %s",
				    (unsigned long long)st.version,
				    checkpoint_dir);
		}
	}

	if (model_out) {
		const float *w;
		uint64_t n;
		const ps_model_spec *spec;
		ps_server_stats st;
		ps_server_get_stats(s, &st);
		if (ps_server_weights(s, &w, &n, &spec) != PS_OK) {
			ps_log_warn("no worker ever said hello: no model to write");
		} else if (ps_modelfile_write(model_out, spec, st.model_version, w, n,
					      &e) != PS_OK) {
			ps_log_error("%s", e.msg);
			status = 1;
		} else {
			ps_log_info("model written to %s", model_out);
		}
	}
	if (stats_out) {
		FILE *f = fopen(stats_out, "w");
		if (!f) {
			ps_log_error("cannot write %s", stats_out);
			status = 1;
		} else {
			ps_server_write_stats_json(s, f);
			if (fclose(f) != 0)
				status = 1;
		}
	}
	{
		ps_server_stats st;
		ps_server_get_stats(s, &st);
		ps_log_info("summary: %llu updates, %llu samples in %.2f s "
			    "(%.0f samples/s), staleness mean %.2f max %llu, "
			    "%llu messages rejected",
			    (unsigned long long)st.version,
			    (unsigned long long)st.samples, st.train_seconds,
			    st.train_seconds > 0
				    ? (double)st.samples / st.train_seconds
				    : 0.0,
			    st.pushes_applied
				    ? st.staleness_sum / (double)st.pushes_applied
				       : 0.0,
			    (unsigned long long)st.staleness_max,
			    (unsigned long long)st.rejects_total);
	}
out:
	ps_server_metrics_close(&metrics);
	ps_server_destroy(&s);
	ps_transport_destroy(&t);
	ps_curve_keyset_destroy(&authorized);
	explicit_bzero(&curve, sizeof curve);
	/* On failure under mpirun, skip MPI_Finalize: mpirun then ends the
	 * whole job instead of waiting for this rank. */
	if (in_cluster && status == 0)
		ps_cluster_leave();
	return status;
}
