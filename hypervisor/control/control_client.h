/* Client side of the control protocol: find VMs' sockets, send a request, read the framed reply (CLI and libkapsel-xenctrl). */
#ifndef KAPSEL_CONTROL_CLIENT_H
#define KAPSEL_CONTROL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

/* One reply (docs/control.md): "ok N" + N lines, or "error ENAME message". */
struct control_reply {
	int errnum;    /* 0 for ok, else the positive errno named in the reply */
	char *message; /* error message (NULL for ok) */
	char *payload; /* the N payload lines, '\n'-terminated, NUL-terminated */
	size_t payload_len;
	unsigned lines;
};

/*
 * Send one request line (without newline; it must not contain one) on a
 * connected control socket and read its reply within timeout_ms (-1: no
 * limit).  Returns 0 when a well-formed reply was read (check
 * reply->errnum), or a negative errno for I/O errors, -ETIMEDOUT, or
 * -EPROTO for a malformed reply.  Free the reply with control_reply_free.
 */
int control_client_request(int fd, const char *request, struct control_reply *reply,
			   int timeout_ms);

/* Read one reply (as above) without sending anything (the 'wait' verb). */
int control_client_read_reply(int fd, struct control_reply *reply, int timeout_ms);

void control_reply_free(struct control_reply *reply);

/*
 * The name of the running VM a reference that is not a name stands for:
 * its domain id (decimal, as `kapsel list` prints it) or its UUID (as
 * `kapsel info` prints it, any case), found by asking each running VM.
 * A VM's own name always wins: control_connect tries the name first.
 * Returns 0 with name set, or -ENOENT.
 */
#define CONTROL_RESOLVE_TIMEOUT_MS 2000
int control_resolve(const char *ref, char *name, size_t name_len);

/*
 * Which running VM of this user has the file at path as a disk (compared
 * by device and inode, so any path to it matches): writes "VM 'NAME'
 * (domain id N)" into who and returns true, else false.  Fits
 * disk_lock_holder_fn (devices/block/disk.h).
 */
bool control_find_disk_holder(const char *path, char *who, size_t who_len);

/*
 * Connect to VM name, send request, read the reply and close.  Returns as
 * control_client_request, plus control_connect's errors.
 */
int control_call(const char *name, const char *request, struct control_reply *reply,
		 int timeout_ms);

/*
 * The names of the VMs with a control socket in the runtime directory,
 * sorted.  Stale sockets of dead VMs are removed on the way (and their
 * names not listed).  Returns the count (>= 0) and sets *names (free each
 * and the array with control_free_names), or a negative errno.
 */
int control_list_names(char ***names);
void control_free_names(char **names, int count);

/*
 * The VMs of this user waiting for an incoming migration
 * (control_incoming_register): one "key value" payload per VM, in the
 * order of their PIDs.  Files of dead processes are removed on the way.
 * Returns the count (>= 0) and sets *entries (free with
 * control_free_names), or a negative errno.
 */
int control_list_incoming(char ***entries);

/*
 * Value of "key" in a payload of "key value" lines: a pointer into a
 * static-per-call buffer copy in value (value_len bytes).  Returns true
 * when the key was found.
 */
bool control_payload_get(const char *payload, const char *key, char *value, size_t value_len);

/*
 * Remove the stale socket of name if (and only if) no live VM holds its
 * name lock.  Returns 0 (removed or absent) or -EBUSY (a live VM holds it).
 */
int control_remove_stale(const char *name);

#endif
