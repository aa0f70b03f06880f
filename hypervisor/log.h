/* Diagnostics: one-line messages to stderr, prefixed with the program name. */
#ifndef KAPSEL_LOG_H
#define KAPSEL_LOG_H

#include <stdbool.h>

/* Print "kapsel: error: ..." to stderr. */
void kapsel_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "kapsel: warning: ..." to stderr. */
void kapsel_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "kapsel: ..." to stderr when verbose logging is on. */
void kapsel_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Turn --verbose logging on or off (off by default). */
void kapsel_log_set_verbose(bool verbose);
/* Silence warnings (used by unit tests that provoke them on purpose). */
void kapsel_log_set_quiet(bool quiet);

#endif
