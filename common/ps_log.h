/*
 * ps_log: one-line log records on stderr, "time role level: message",
 * with a process-wide role tag ("server", "worker 1") and level filter.
 */
#ifndef PS_LOG_H
#define PS_LOG_H

enum ps_log_level {
	PS_LOG_ERROR = 0,
	PS_LOG_WARN = 1,
	PS_LOG_INFO = 2,
	PS_LOG_DEBUG = 3,
};

/* Set the tag printed on every line (copied) and the most verbose level
 * printed. Call once at start-up, before other threads exist. */
void ps_log_setup(const char *tag, enum ps_log_level level);

/* Parse "error", "warn", "info", "debug". Returns -1 when unknown. */
int ps_log_level_parse(const char *s);

void ps_log(enum ps_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define ps_log_error(...) ps_log(PS_LOG_ERROR, __VA_ARGS__)
#define ps_log_warn(...) ps_log(PS_LOG_WARN, __VA_ARGS__)
#define ps_log_info(...) ps_log(PS_LOG_INFO, __VA_ARGS__)
#define ps_log_debug(...) ps_log(PS_LOG_DEBUG, __VA_ARGS__)

/* Seconds on a monotonic clock, for durations and rates. */
double ps_now(void);

#endif
