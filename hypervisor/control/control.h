/* The per-VM control socket: a Unix socket server with a line protocol (docs/control.md) and its verb table. */
#ifndef KAPSEL_CONTROL_H
#define KAPSEL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct kapsel_vm;

/* Limits of the wire protocol (docs/control.md). */
#define CONTROL_REQUEST_MAX_BYTES 4096u /* one request line, newline included */
#define CONTROL_MAX_ARGS 16u		/* key=value pairs per request */
#define CONTROL_VERB_MAX 32u		/* verb name length, without NUL */
#define CONTROL_CLIENT_DEADLINE_MS 5000 /* a client must send a whole request in this */
#define CONTROL_MAX_CLIENTS 64u

/*
 * One parsed request: "VERB key=value key=value ...".  Strings point into
 * the request line buffer and stay valid only during the verb's call.
 * Values are plain tokens (no spaces); docs/control.md lists the escapes
 * (%20 for a space, %25 for '%') that the parser decodes.
 */
struct control_arg {
	const char *key;
	const char *value;
};

struct control_request {
	const char *verb;
	/* The request came in JSON (docs/control.md) and the verb was
	 * registered with control_register_json_verb: write one JSON value
	 * (core/json_writer.h, compact) instead of text lines. */
	bool json;
	unsigned arg_count;
	struct control_arg args[CONTROL_MAX_ARGS];
};

/*
 * A verb handler.  Runs on the VM's control thread (never the vCPU
 * thread), one request at a time per VM, so a handler that takes long
 * (saving memory, migrating) delays other control clients of the same VM
 * but never the guest itself unless the handler pauses it.
 *
 *   vm       the running VM (vm->state may be RUNNING or PAUSED; use
 *            vm_pause / vm_resume to stop the vCPU before reading state)
 *   request  the parsed request; look arguments up with control_request_arg
 *   out      the reply payload: write zero or more '\n'-terminated lines
 *            (fprintf(out, ...)); the server frames them (docs/control.md)
 *   error    on failure, write a one-line message naming the thing and
 *            the fix here (at most error_len bytes, NUL-terminated)
 *
 * Returns 0 for "ok" (payload from out is sent) or a negative errno for
 * "error <ERRNO-NAME> <error>" (payload is discarded).
 */
typedef int (*control_verb_fn)(struct kapsel_vm *vm, const struct control_request *request,
			       FILE *out, char *error, size_t error_len);

/*
 * Add a verb to the process-wide verb table served by every control
 * socket of this process.  name: 1..CONTROL_VERB_MAX characters from
 * [a-z0-9-]; help: one line "VERB [key=value ...]  what it does" shown by
 * the 'help' verb (the string must outlive the process's servers, e.g. a
 * literal).  Thread-safe; may be called before or after
 * control_server_start.  Returns 0, -EEXIST (the name is taken, also by a
 * built-in verb), -EINVAL (bad name or NULL fn) or -ENOSPC (table full).
 */
int control_register_verb(const char *name, control_verb_fn fn, const char *help);

/*
 * The same for a verb that may take long (save, migrate): it runs on a
 * worker thread of its own, so that the control socket keeps answering
 * (info, stats, pause) meanwhile; its reply comes when it ends.  One such
 * verb runs at a time per VM: another is refused with -EBUSY, and so is
 * 'resume' (it would let the vCPU run under a save's or a migration's
 * final copy).  The handler runs concurrently with the other verbs, so it
 * may touch the VM only through thread-safe calls (vm_pause/vm_resume).
 */
int control_register_background_verb(const char *name, control_verb_fn fn, const char *help);

/*
 * The same for a verb that also answers JSON requests natively: when
 * request->json is set, its handler writes one JSON object with a
 * "schema" member ("kapsel.VERB/N") as its payload, which becomes the
 * reply's "result".  Other verbs' text lines become a JSON reply's
 * "lines".
 */
int control_register_json_verb(const char *name, control_verb_fn fn, const char *help);

/*
 * The value of argument key in request, or NULL when it is absent.
 * Precondition: request comes from the parser (control_request_parse).
 */
const char *control_request_arg(const struct control_request *request, const char *key);

/*
 * Parse a duration/count argument helpers for handlers: a decimal u64
 * (control_arg_u64) or a boolean yes/no/true/false/on/off/1/0
 * (control_arg_bool).  Absent keys leave *value unchanged and return 0.
 * Return -EINVAL with a message in error naming the key on bad text.
 */
int control_arg_u64(const struct control_request *request, const char *key, uint64_t *value,
		    char *error, size_t error_len);
int control_arg_bool(const struct control_request *request, const char *key, bool *value,
		     char *error, size_t error_len);

/*
 * Check that every argument of request is one of the NULL-terminated
 * allowed keys.  Returns 0, or -EINVAL with "unknown argument 'k' for VERB;
 * it takes ..." in error.
 */
int control_request_check_keys(const struct control_request *request, const char *const *allowed,
			       char *error, size_t error_len);

/*
 * Make the line_len bytes received before a '\n' a C string for
 * control_request_parse: a NUL byte among them is refused (-EINVAL, with a
 * message in error) and one trailing '\r' (a CRLF line end) is dropped.
 * Precondition: line has room for line_len + 1 bytes (the '\n' is
 * overwritten).  Pure function: unit-tested.
 */
int control_line_finish(char *line, size_t line_len, char *error, size_t error_len);

/*
 * Parse one request line in place (line is modified; it has no trailing
 * newline and is NUL-terminated).  Returns 0, or -EINVAL with a message in
 * error for an empty line, a bad verb, a malformed argument, a duplicate
 * key, too many arguments or a bad %-escape.  Pure function: unit-tested.
 */
int control_request_parse(char *line, struct control_request *request, char *error,
			  size_t error_len);

/* The symbolic name of a positive errno ("EINVAL"), or "EIO" if unknown. */
const char *control_errno_name(int errnum);

/*
 * Runtime directory for control sockets, in this order: $KAPSEL_RUNTIME_DIR,
 * $XDG_RUNTIME_DIR/kapsel, /run/kapsel (root), /tmp/kapsel-$UID.  Writes
 * the path into buf.  Returns 0 or -ENAMETOOLONG.
 */
int control_runtime_dir(char *buf, size_t len);

/* buf = runtime dir + "/" + name + ".sock".  Returns 0 or -ENAMETOOLONG. */
int control_socket_path(const char *name, char *buf, size_t len);

/*
 * Connect to the control socket of VM name, or, when no VM has that name,
 * of the VM with that domain id or UUID (control_resolve).  Returns a
 * connected, blocking fd, or -ENOENT (no such VM), -ECONNREFUSED (a stale
 * socket of a dead VM), -EACCES or another negative errno.
 */
int control_connect(const char *ref);

struct control_server;

/*
 * Claim VM name on this host, before the VM is created: create the runtime
 * directory (0700), take the name's lock (refusing with -EEXIST and a
 * message in error when a live VM has the name), remove a stale socket of
 * a dead VM, and allocate a domain id.  On success *server is set; then
 * call control_server_attach once the VM exists, and control_server_stop
 * in any case.
 */
int control_server_start(struct control_server **server, const char *name, char *error,
			 size_t error_len);

/*
 * Serve vm on the claimed name: bind NAME.sock (0600), hook the console
 * and start the control thread.  Precondition: vm_create succeeded and
 * vm->config->name is the claimed name; vm_run is called afterwards.
 * Returns 0 or a negative errno with a message in error.
 */
int control_server_attach(struct control_server *server, struct kapsel_vm *vm, char *error,
			  size_t error_len);

/*
 * Stop the control thread, answer 'wait' clients with the VM's exit code,
 * close every client, unlink the socket and release the name.  NULL is
 * ignored.  Precondition: vm_run has returned (or never ran) and
 * vm_destroy has not run yet.
 */
void control_server_stop(struct control_server *server);

/*
 * A VM that waits for an incoming live migration has no control socket
 * yet (on the same host its name is still the source's), so it registers
 * in the runtime directory as CONTROL_INCOMING_FILE_PREFIX + PID instead:
 * a file it holds locked, with "key value" lines (name, state incoming,
 * pid, memory_bytes, vcpus, started_unix, listen ADDR:PORT).  'kapsel
 * list' shows it (control_list_incoming).  name may be empty (the stream
 * will name the VM).  Returns 0 with *incoming set, or a negative errno
 * with a message in error.  Unregister once the wait is over, whatever
 * its outcome (NULL is ignored).
 */
#define CONTROL_INCOMING_FILE_PREFIX ".incoming-"
struct control_incoming;
int control_incoming_register(struct control_incoming **incoming, const char *name,
			      uint64_t memory_bytes, unsigned vcpus, const char *listen,
			      char *error, size_t error_len);
void control_incoming_unregister(struct control_incoming *incoming);

/*
 * True if this VM was ended through its control socket: `destroy`, or a
 * `shutdown` whose deadline passed.  NULL gives false.  Precondition:
 * vm_run has returned (the flag is no longer written).
 */
bool control_server_destroyed(const struct control_server *server);

#endif
