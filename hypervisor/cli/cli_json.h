/* The CLI's --json plumbing: JSON requests to a VM's control socket and printing JSON documents. */
#ifndef KAPSEL_CLI_JSON_H
#define KAPSEL_CLI_JSON_H

#include <jansson.h>
#include <stdbool.h>

/*
 * Send {"version":1,"verb":verb} to VM name (a name, domain id or UUID)
 * and read its one-line JSON reply.  On an ok reply, returns 0 with
 * *result set to the reply's "result" (a new reference; json_decref it).
 * Otherwise returns a negative errno: a failure to reach the VM
 * (control_connect's errors, -ETIMEDOUT, -ECONNRESET, -EPROTO for a reply
 * that is not JSON), or the error the VM answered, whose message is
 * copied into message (message_len bytes).
 */
int cli_json_request(const char *name, const char *verb, json_t **result, char *message,
		     size_t message_len);

/*
 * Send the JSON request object to VM name and read its one-line reply:
 * returns 0 with *reply set (any reply object, ok or error; json_decref
 * it), or a negative errno as cli_json_request (-E2BIG: the request is
 * longer than a request line may be).
 */
int cli_json_exchange(const char *name, json_t *request, json_t **reply);

/* cli_json_request, printing any failure on stderr as the text verbs do;
 * returns 0 or the exit status 1. */
int cli_json_call(const char *name, const char *verb, json_t **result);

/* Print value on stdout, indented, with a final newline (compact, one
 * line, when one_line: kapsel stats --watch --json). */
void cli_json_print(json_t *value, bool one_line);

#endif
