/*
 * ps_error: the one list of error codes every fallible pserver function
 * returns, and their messages. Foreign errors (errno, zmq_errno(), MPI
 * codes, zlib) are translated into these where they happen.
 */
#ifndef PS_ERROR_H
#define PS_ERROR_H

#define PS_WUR __attribute__((warn_unused_result))

/* X-macro: name, message. PS_OK is 0; all others are negative. */
#define PS_ERROR_MAP(X)                                                        \
	X(ENOMEM, "out of memory")                                             \
	X(EINVAL, "invalid argument")                                          \
	X(EPROTO, "malformed or unexpected message")                           \
	X(EVERSION, "protocol version mismatch")                               \
	X(ETIMEDOUT, "timed out")                                              \
	X(EIO, "input/output error")                                           \
	X(ENOENT, "no such file")                                              \
	X(EFORMAT, "bad file format")                                          \
	X(ETRUNC, "file or message truncated")                                 \
	X(ERANGE, "value out of range")                                        \
	X(ENONFINITE, "non-finite value (NaN or Inf)")                         \
	X(EADDRINUSE, "address already in use")                                \
	X(ETRANSPORT, "transport failure")                                     \
	X(EUNKNOWN_WORKER, "unknown worker")                                   \
	X(ESHUTDOWN, "peer is shutting down")                                  \
	X(EAUTH, "security handshake refused (CURVE keys)")                    \
	X(EINTR, "interrupted")

enum ps_error {
	PS_OK = 0,
#define PS_ERROR_ENUM_(name, msg) PS_##name,
	PS_ERROR_FIRST_ = -1000,
	PS_ERROR_MAP(PS_ERROR_ENUM_)
#undef PS_ERROR_ENUM_
	PS_ERROR_LAST_
};

/* Human-readable message for an error code (PS_OK included). Never NULL;
 * an unknown code gets "unknown error". Borrowed static string. */
const char *ps_strerror(int err);

/* Detail of a failure, for the one-line message a user sees: functions
 * that can fail for reasons worth explaining take a `ps_err *` (which may
 * be NULL) beside returning the code. Plain value record. */
typedef struct ps_err {
	int code;
	char msg[256];
} ps_err;

/* Record code and a printf-style detail in e (if e is not NULL) and
 * return code, so that callers can write `return ps_err_set(e, ...)`. */
int ps_err_set(ps_err *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
#ifdef __clang_analyzer__
/* The static analyzer (make lint) looks at one file at a time and does
 * not follow variadic calls: tell it that the result is code, or every
 * `rc = ps_err_set(e, PS_ENOMEM, ...); goto out;` looks like success on
 * some path. The macro does not expand inside itself. */
#define ps_err_set(e, code, ...) (ps_err_set((e), (code), __VA_ARGS__), (code))
#endif

/* Symbolic name of an error code ("PS_EINVAL"), for logs and tests. */
const char *ps_errname(int err);

#endif
