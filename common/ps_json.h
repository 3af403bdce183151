/*
 * ps_json: the two JSON value writers the output files need (strings with
 * escapes, numbers with NaN/Inf as null). The files themselves are laid
 * out by their writers with fprintf.
 */
#ifndef PS_JSON_H
#define PS_JSON_H

#include <stdio.h>

/* Write s as a JSON string, escaping '"', '\' and control characters;
 * NULL is written as null. */
void ps_json_string(FILE *f, const char *s);

/* Write v with 10 significant digits, or null when it is NaN or Inf
 * (JSON has no such numbers). */
void ps_json_number(FILE *f, double v);

#endif
