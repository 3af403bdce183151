/*
 * ps_error: messages and names for the codes in ps_error.h.
 */
#include "ps_error.h"

#include <stdarg.h>
#include <stdio.h>

const char *ps_strerror(int err)
{
	switch (err) {
	case PS_OK:
		return "success";
#define PS_ERROR_STR_(name, msg)                                               \
	case PS_##name:                                                        \
		return msg;
		PS_ERROR_MAP(PS_ERROR_STR_)
#undef PS_ERROR_STR_
	default:
		return "unknown error";
	}
}

const char *ps_errname(int err)
{
	switch (err) {
	case PS_OK:
		return "PS_OK";
#define PS_ERROR_NAME_(name, msg)                                              \
	case PS_##name:                                                        \
		return "PS_" #name;
		PS_ERROR_MAP(PS_ERROR_NAME_)
#undef PS_ERROR_NAME_
	default:
		return "PS_E?";
	}
}

/* The name in parentheses: not the analyzer's macro of ps_error.h. */
int (ps_err_set)(ps_err *e, int code, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		e->code = code;
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
	}
	return code;
}
