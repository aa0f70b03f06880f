/* The comma-separated option lists of --disk and --net: splitting, numbers and the unknown-option message. */
#ifndef KAPSEL_CONFIG_OPTIONS_H
#define KAPSEL_CONFIG_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

/*
 * The next non-empty comma-separated field of the list *cursor points into
 * (empty fields are skipped), NUL-terminated in place, or NULL at the end.
 * Start with *cursor = a writable copy of the list.
 */
char *config_next_field(char **cursor);

/*
 * config_next_field split at its first '=': returns the key and sets
 * *value to the text after '=' (NULL when there is no '=').
 */
char *config_next_option(char **cursor, char **value);

/* A decimal number without sign.  Returns 0, or -EINVAL for NULL, empty,
 * negative, out-of-range or trailing text (then *value is unchanged). */
int config_parse_u64(const char *text, uint64_t *value);

/*
 * The message for an option nobody understood, "FLAG 'TEXT': option
 * 'KEY[=VALUE]' is unknown or lacks a valid value; HELP", into error;
 * returns -EINVAL.  text is the whole list as the user gave it; value may
 * be NULL.
 */
int config_unknown_option(char *error, size_t error_len, const char *flag, const char *text,
			  const char *key, const char *value, const char *help);

#endif
