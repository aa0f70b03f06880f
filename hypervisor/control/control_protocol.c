/* The control protocol's pure parts: request parser, argument helpers, errno names and the verb table. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control.h"
#include "control/control_internal.h"
#include "core/error_text.h"

static bool is_verb_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

static bool is_key_char(char c)
{
	return is_verb_char(c) || c == '_';
}

static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Decode %XX escapes in place; refuses NUL and control characters. */
static int decode_value(char *value, const char *key, char *error, size_t error_len)
{
	char *out = value;
	for (const char *in = value; *in; in++) {
		if (*in != '%') {
			*out++ = *in;
			continue;
		}
		int hi = hex_digit(in[1]), lo = hi < 0 ? -1 : hex_digit(in[2]);
		if (hi < 0 || lo < 0)
			return kapsel_fail(
				error, error_len, -EINVAL,
				"argument '%s' has a bad escape; write %%XX with two hex digits (%%20 is a space, %%25 a '%%')",
				key);
		char c = (char)(hi << 4 | lo);
		if ((unsigned char)c < 0x20 || c == 0x7f)
			return kapsel_fail(
				error, error_len, -EINVAL,
				"argument '%s' escapes a control character; only printable characters are allowed",
				key);
		*out++ = c;
		in += 2;
	}
	*out = '\0';
	return 0;
}

int control_line_finish(char *line, size_t line_len, char *error, size_t error_len)
{
	/* NULs are looked for before the CR is cut: cutting it writes one. */
	if (memchr(line, '\0', line_len))
		return kapsel_fail(error, error_len, -EINVAL,
				   "request contains a NUL byte; requests are printable ASCII lines");
	if (line_len && line[line_len - 1] == '\r')
		line_len--;
	line[line_len] = '\0';
	return 0;
}

int control_request_parse(char *line, struct control_request *request, char *error,
			  size_t error_len)
{
	memset(request, 0, sizeof(*request));
	for (const char *p = line; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c < 0x20 && c != '\t') || c >= 0x7f)
			return kapsel_fail(
				error, error_len, -EINVAL,
				"request contains byte 0x%02x at offset %zu; requests are printable ASCII lines",
				c, (size_t)(p - line));
	}
	char *save = NULL;
	char *verb = strtok_r(line, " \t", &save);
	if (!verb)
		return kapsel_fail(error, error_len, -EINVAL,
				   "empty request; send 'help' for the list of requests");
	size_t verb_len = strlen(verb);
	if (verb_len > CONTROL_VERB_MAX)
		return kapsel_fail(error, error_len, -EINVAL,
				   "request name is longer than %u characters", CONTROL_VERB_MAX);
	for (size_t i = 0; i < verb_len; i++)
		if (!is_verb_char(verb[i]))
			return kapsel_fail(
				error, error_len, -EINVAL,
				"'%.40s' is not a request name (lower-case letters, digits and '-'); send 'help'",
				verb);
	request->verb = verb;
	for (char *tok = strtok_r(NULL, " \t", &save); tok; tok = strtok_r(NULL, " \t", &save)) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok)
			return kapsel_fail(error, error_len, -EINVAL,
					   "argument '%.40s' is not key=value", tok);
		*eq = '\0';
		for (const char *k = tok; *k; k++)
			if (!is_key_char(*k))
				return kapsel_fail(
					error, error_len, -EINVAL,
					"argument name '%.40s' has characters other than a-z, 0-9, '-' and '_'",
					tok);
		if (request->arg_count == CONTROL_MAX_ARGS)
			return kapsel_fail(error, error_len, -EINVAL, "more than %u arguments",
					   CONTROL_MAX_ARGS);
		for (unsigned i = 0; i < request->arg_count; i++)
			if (strcmp(request->args[i].key, tok) == 0)
				return kapsel_fail(error, error_len, -EINVAL,
						   "argument '%.40s' is given twice", tok);
		int err = decode_value(eq + 1, tok, error, error_len);
		if (err)
			return err;
		request->args[request->arg_count].key = tok;
		request->args[request->arg_count].value = eq + 1;
		request->arg_count++;
	}
	return 0;
}

const char *control_request_arg(const struct control_request *request, const char *key)
{
	for (unsigned i = 0; i < request->arg_count; i++)
		if (strcmp(request->args[i].key, key) == 0)
			return request->args[i].value;
	return NULL;
}

int control_arg_u64(const struct control_request *request, const char *key, uint64_t *value,
		    char *error, size_t error_len)
{
	const char *text = control_request_arg(request, key);
	if (!text)
		return 0;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (!*text || *text == '-' || *text == '+' || *end || errno)
		return kapsel_fail(error, error_len, -EINVAL, "%s='%.40s' is not a whole number",
				   key, text);
	*value = v;
	return 0;
}

int control_arg_bool(const struct control_request *request, const char *key, bool *value,
		     char *error, size_t error_len)
{
	const char *text = control_request_arg(request, key);
	if (!text)
		return 0;
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	for (size_t i = 0; i < 4; i++) {
		if (strcmp(text, yes[i]) == 0) {
			*value = true;
			return 0;
		}
		if (strcmp(text, no[i]) == 0) {
			*value = false;
			return 0;
		}
	}
	return kapsel_fail(error, error_len, -EINVAL, "%s='%.40s' is not yes or no", key, text);
}

int control_request_check_keys(const struct control_request *request, const char *const *allowed,
			       char *error, size_t error_len)
{
	for (unsigned i = 0; i < request->arg_count; i++) {
		bool found = false;
		for (const char *const *a = allowed; *a && !found; a++)
			found = strcmp(*a, request->args[i].key) == 0;
		if (found)
			continue;
		char list[256] = "";
		size_t used = 0;
		for (const char *const *a = allowed; *a; a++) {
			int n = snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "",
					 *a);
			if (n < 0 || (size_t)n >= sizeof(list) - used)
				break;
			used += (size_t)n;
		}
		if (!allowed[0])
			return kapsel_fail(error, error_len, -EINVAL,
					   "%s takes no arguments (got '%s')", request->verb,
					   request->args[i].key);
		return kapsel_fail(error, error_len, -EINVAL,
				   "unknown argument '%s' for %s; it takes %s",
				   request->args[i].key, request->verb, list);
	}
	return 0;
}

const char *control_errno_name(int errnum)
{
	static const struct {
		int errnum;
		const char *name;
	} names[] = {
		{ EPERM, "EPERM" },
		{ ENOENT, "ENOENT" },
		{ ESRCH, "ESRCH" },
		{ EINTR, "EINTR" },
		{ EIO, "EIO" },
		{ E2BIG, "E2BIG" },
		{ EBADF, "EBADF" },
		{ EAGAIN, "EAGAIN" },
		{ ENOMEM, "ENOMEM" },
		{ EACCES, "EACCES" },
		{ EFAULT, "EFAULT" },
		{ EBUSY, "EBUSY" },
		{ EEXIST, "EEXIST" },
		{ ENODEV, "ENODEV" },
		{ EINVAL, "EINVAL" },
		{ ENOSPC, "ENOSPC" },
		{ EROFS, "EROFS" },
		{ ERANGE, "ERANGE" },
		{ EDEADLK, "EDEADLK" },
		{ ENAMETOOLONG, "ENAMETOOLONG" },
		{ ENOSYS, "ENOSYS" },
		{ ENOTSUP, "ENOTSUP" },
		{ ETIMEDOUT, "ETIMEDOUT" },
		{ EALREADY, "EALREADY" },
		{ EPROTO, "EPROTO" },
		{ ECONNREFUSED, "ECONNREFUSED" },
		{ ECANCELED, "ECANCELED" },
		{ EMSGSIZE, "EMSGSIZE" },
		/* migrate: the VM is not here, running (docs/migration.md) */
		{ EINPROGRESS, "EINPROGRESS" },
		{ ENOTRECOVERABLE, "ENOTRECOVERABLE" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].errnum == errnum)
			return names[i].name;
	return "EIO";
}

int control_errno_from_name(const char *name)
{
	for (int e = 1; e < 200; e++) {
		const char *n = control_errno_name(e);
		if (strcmp(n, name) == 0 && (e == EIO || strcmp(n, "EIO") != 0))
			return e;
	}
	return EIO;
}

/* ---- The verb table ------------------------------------------------------ */

struct control_verb {
	char name[CONTROL_VERB_MAX + 1];
	control_verb_fn fn;
	const char *help;
	bool background; /* runs on a worker thread (control_register_background_verb) */
	bool json;	 /* answers a JSON request with a JSON value (control_register_json_verb) */
};

static pthread_mutex_t verb_lock = PTHREAD_MUTEX_INITIALIZER;
static struct control_verb verbs[CONTROL_MAX_VERBS];
static unsigned verb_count;

/* Connection-level verbs control.c handles itself; registering them is refused. */
static const char *const reserved_verbs[] = { "console", "wait", "quit", NULL };

static int register_verb(const char *name, control_verb_fn fn, const char *help, bool background,
			 bool json)
{
	if (!name || !fn || !*name || strlen(name) > CONTROL_VERB_MAX)
		return -EINVAL;
	for (const char *p = name; *p; p++)
		if (!is_verb_char(*p))
			return -EINVAL;
	for (const char *const *r = reserved_verbs; *r; r++)
		if (strcmp(*r, name) == 0)
			return -EEXIST;
	int err = 0;
	pthread_mutex_lock(&verb_lock);
	for (unsigned i = 0; i < verb_count && !err; i++)
		if (strcmp(verbs[i].name, name) == 0)
			err = -EEXIST;
	if (!err && verb_count == CONTROL_MAX_VERBS)
		err = -ENOSPC;
	if (!err) {
		snprintf(verbs[verb_count].name, sizeof(verbs[verb_count].name), "%s", name);
		verbs[verb_count].fn = fn;
		verbs[verb_count].help = help ? help : name;
		verbs[verb_count].background = background;
		verbs[verb_count].json = json;
		verb_count++;
	}
	pthread_mutex_unlock(&verb_lock);
	return err;
}

int control_register_verb(const char *name, control_verb_fn fn, const char *help)
{
	return register_verb(name, fn, help, false, false);
}

int control_register_json_verb(const char *name, control_verb_fn fn, const char *help)
{
	return register_verb(name, fn, help, false, true);
}

int control_register_background_verb(const char *name, control_verb_fn fn, const char *help)
{
	return register_verb(name, fn, help, true, false);
}

bool control_verb_is_background(const char *name)
{
	bool background = false;
	pthread_mutex_lock(&verb_lock);
	for (unsigned i = 0; i < verb_count; i++)
		if (strcmp(verbs[i].name, name) == 0)
			background = verbs[i].background;
	pthread_mutex_unlock(&verb_lock);
	return background;
}

bool control_verb_is_json(const char *name)
{
	bool json = false;
	pthread_mutex_lock(&verb_lock);
	for (unsigned i = 0; i < verb_count; i++)
		if (strcmp(verbs[i].name, name) == 0)
			json = verbs[i].json;
	pthread_mutex_unlock(&verb_lock);
	return json;
}

control_verb_fn control_find_verb(const char *name)
{
	control_verb_fn fn = NULL;
	pthread_mutex_lock(&verb_lock);
	for (unsigned i = 0; i < verb_count && !fn; i++)
		if (strcmp(verbs[i].name, name) == 0)
			fn = verbs[i].fn;
	pthread_mutex_unlock(&verb_lock);
	return fn;
}

void control_print_verbs(FILE *out)
{
	pthread_mutex_lock(&verb_lock);
	for (unsigned i = 0; i < verb_count; i++)
		fprintf(out, "%s\n", verbs[i].help);
	pthread_mutex_unlock(&verb_lock);
}
