/* The per-VM control socket server: runtime directory, name lock, one poll() thread serving many non-blocking clients. */
#define _GNU_SOURCE
#include "control/control.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "control/control_client.h"
#include "control/control_internal.h"
#include "control/control_json.h"
#include "core/error_text.h"
#include "core/log.h"
#include "core/vm.h"
#include "core/sandbox.h"

#define CONTROL_IDLE_MS 60000 /* an idle connection (nothing pending) is closed after this */
#define CONTROL_OUTPUT_MAX_BYTES (1u << 20)    /* unread replies beyond this close a client */
#define CONTROL_CONSOLE_MAX_BYTES (256u << 10) /* console output a slow client may lag */
#define CONTROL_BACKLOG_BYTES 4096u	       /* recent console output replayed on attach */
#define CONTROL_DOMID_MAX 32752u	       /* Xen's DOMID_FIRST_RESERVED */

enum client_mode {
	CLIENT_REQUESTS, /* line requests and replies */
	CLIENT_CONSOLE,	 /* raw byte stream to and from the guest console */
	CLIENT_WAIT,	 /* waits for the VM to end ('wait') */
};

struct control_client {
	int fd;
	enum client_mode mode;
	bool closing; /* close once out is flushed */
	char in[CONTROL_REQUEST_MAX_BYTES + 1];
	size_t in_len;
	char *out; /* pending output (server->lock) */
	size_t out_len, out_cap;
	uint64_t deadline_ms; /* monotonic; 0 = none */
	uint64_t console_dropped_bytes;
	bool busy; /* its background verb runs: later requests wait */
	/* Its last request was JSON: replies (also connection-level errors
	 * and the end-of-VM reply of 'wait') are JSON lines, with this id. */
	bool json;
	char json_id[CONTROL_JSON_ID_MAX + 1];
};

/*
 * A background verb (control_register_background_verb) running on its own
 * thread.  The worker fills err/payload/error and sets done; everything
 * else belongs to the control thread.
 */
struct control_job {
	bool active;
	pthread_t thread;
	struct control_server *server;
	struct control_client *client; /* NULL once the client has gone */
	control_verb_fn fn;
	char line[CONTROL_REQUEST_MAX_BYTES + 1]; /* the request's strings point here */
	struct control_request request;
	bool wait_after;
	int done; /* atomic */
	int err;
	char *payload;
	size_t payload_len;
	char error[1024];
};

struct control_server {
	struct kapsel_vm *vm; /* NULL until control_server_attach */
	char name[VM_CONFIG_NAME_MAX];
	bool bound; /* the socket file is ours to unlink */
	char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char lock_path[4096];
	char domid_path[4096];
	int lock_fd, domid_fd, listen_fd, wake_fd;
	unsigned domid;
	pthread_t thread;
	bool thread_started;
	int stopping;	      /* atomic */
	pthread_mutex_t lock; /* clients' out buffers, backlog */
	struct control_client *clients[CONTROL_MAX_CLIENTS];
	unsigned client_count;
	uint64_t shutdown_deadline_ns; /* control thread only; 0 = none */
	uint64_t shutdown_generation;  /* boot the deadline applies to */
	bool destroyed;		       /* ended by destroy or a shutdown deadline */
	uint64_t started_unix;
	uint8_t backlog[CONTROL_BACKLOG_BYTES];
	uint64_t backlog_head; /* free-running */
	struct control_job job;
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Runtime directory and locks ---------------------------------------- */

static int make_runtime_dir(const char *dir, char *error, size_t error_len)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		/* $XDG_RUNTIME_DIR/kapsel etc.: one level is created, not more. */
		return kapsel_fail(
			error, error_len, -errno,
			"cannot create the runtime directory '%s': %s; set KAPSEL_RUNTIME_DIR to a writable directory or run with --no-control",
			dir, strerror(errno));
	}
	struct stat st;
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return kapsel_fail(
			error, error_len, -ENOTDIR,
			"runtime directory '%s' is not a directory; remove it or set KAPSEL_RUNTIME_DIR",
			dir);
	if (st.st_uid != geteuid())
		return kapsel_fail(
			error, error_len, -EACCES,
			"runtime directory '%s' belongs to uid %u, not to you (uid %u); set KAPSEL_RUNTIME_DIR to a directory of your own",
			dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if ((st.st_mode & 0777) != 0700 && chmod(dir, 0700) < 0)
		return kapsel_fail(error, error_len, -errno,
				   "cannot make runtime directory '%s' owner-only (0700): %s", dir,
				   strerror(errno));
	return 0;
}

/*
 * Take an exclusive lock on path (created if needed) without blocking.
 * Returns the locked fd, -EWOULDBLOCK when another process holds it, or
 * another negative errno.  A holder unlinks the file before it releases
 * the lock, so after locking we check the path still names our file.
 */
static int lock_file(const char *path)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (fd < 0)
			return -errno;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			int err = -errno;
			close(fd);
			return err == -EAGAIN ? -EWOULDBLOCK : err;
		}
		struct stat held, named;
		if (fstat(fd, &held) == 0 && stat(path, &named) == 0 &&
		    held.st_dev == named.st_dev && held.st_ino == named.st_ino)
			return fd;
		close(fd); /* the previous holder removed it meanwhile: retry */
	}
	return -EAGAIN;
}

static void unlock_file(const char *path, int fd)
{
	if (fd < 0)
		return;
	unlink(path);
	close(fd);
}

static int take_domid(struct control_server *server, const char *dir)
{
	for (unsigned id = 1; id < CONTROL_DOMID_MAX; id++) {
		int n = snprintf(server->domid_path, sizeof(server->domid_path),
				 "%s/.domid-%u.lock", dir, id);
		if (n < 0 || (size_t)n >= sizeof(server->domid_path))
			return -ENAMETOOLONG;
		int fd = lock_file(server->domid_path);
		if (fd == -EWOULDBLOCK)
			continue;
		if (fd < 0)
			return fd;
		char text[96];
		int len = snprintf(text, sizeof(text), "%s\n", server->name);
		if (ftruncate(fd, 0) < 0 || write(fd, text, (size_t)len) != len)
			kapsel_debug("cannot record the VM name in '%s'", server->domid_path);
		server->domid = id;
		server->domid_fd = fd;
		return 0;
	}
	return -ENOSPC;
}

/* ---- Client output ------------------------------------------------------- */

/* Append to a client's output; caller holds server->lock. */
static void client_append_locked(struct control_client *client, const void *data, size_t len)
{
	if (client->closing && client->mode != CLIENT_REQUESTS)
		return;
	if (client->out_len + len > client->out_cap) {
		size_t cap = client->out_cap ? client->out_cap : 1024;
		while (cap < client->out_len + len)
			cap *= 2;
		char *bigger = realloc(client->out, cap);
		if (!bigger) {
			client->closing = true;
			return;
		}
		client->out = bigger;
		client->out_cap = cap;
	}
	memcpy(client->out + client->out_len, data, len);
	client->out_len += len;
}

static void client_append(struct control_server *server, struct control_client *client,
			  const void *data, size_t len)
{
	pthread_mutex_lock(&server->lock);
	client_append_locked(client, data, len);
	pthread_mutex_unlock(&server->lock);
}

/* "error ENAME message\n", the message made one line; or its JSON form. */
static void reply_error(struct control_server *server, struct control_client *client, int err,
			const char *message)
{
	char line[1024];
	int n;
	if (client->json) {
		FILE *f = fmemopen(line, sizeof(line), "w");
		if (!f)
			return;
		control_json_reply_error(f, client->json_id, err, message);
		long length = ftell(f);
		fclose(f);
		if (length <= 0 || (size_t)length >= sizeof(line) || line[length - 1] != '\n') {
			/* A message too long for one line: send it cut. */
			char cut[600];
			snprintf(cut, sizeof(cut), "%.500s", message);
			f = fmemopen(line, sizeof(line), "w");
			if (!f)
				return;
			control_json_reply_error(f, client->json_id, err, cut);
			length = ftell(f);
			fclose(f);
		}
		if (length > 0 && (size_t)length < sizeof(line))
			client_append(server, client, line, (size_t)length);
		return;
	}
	n = snprintf(line, sizeof(line), "error %s %s", control_errno_name(err), message);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line) - 1)
		n = (int)sizeof(line) - 2;
	for (int i = 0; i < n; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	line[n++] = '\n';
	client_append(server, client, line, (size_t)n);
}

/* "ok N" and the payload lines; for a JSON client one JSON line whose
 * "result" is the payload (payload_is_json) or whose "lines" are. */
static void reply_ok(struct control_server *server, struct control_client *client, const char *verb,
		     const char *payload, size_t len, bool payload_is_json)
{
	if (client->json) {
		char *text = NULL;
		size_t text_len = 0;
		FILE *f = open_memstream(&text, &text_len);
		if (!f) {
			reply_error(server, client, ENOMEM, "out of memory");
			return;
		}
		control_json_reply_ok(f, client->json_id, verb, payload, len, payload_is_json);
		fclose(f);
		client_append(server, client, text, text_len);
		free(text);
		return;
	}
	unsigned lines = 0;
	for (size_t i = 0; i < len; i++)
		lines += payload[i] == '\n';
	bool unterminated = len && payload[len - 1] != '\n';
	char header[32];
	int n = snprintf(header, sizeof(header), "ok %u\n", lines + unterminated);
	pthread_mutex_lock(&server->lock);
	client_append_locked(client, header, (size_t)n);
	client_append_locked(client, payload, len);
	if (unterminated)
		client_append_locked(client, "\n", 1);
	pthread_mutex_unlock(&server->lock);
}

/* Try to send pending output; returns false when the client is gone. */
static bool client_flush(struct control_server *server, struct control_client *client)
{
	bool alive = true;
	pthread_mutex_lock(&server->lock);
	while (client->out_len) {
		ssize_t n =
			send(client->fd, client->out, client->out_len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			alive = errno == EAGAIN || errno == EWOULDBLOCK;
			break;
		}
		memmove(client->out, client->out + n, client->out_len - (size_t)n);
		client->out_len -= (size_t)n;
	}
	pthread_mutex_unlock(&server->lock);
	return alive;
}

/* ---- Console fan-out ------------------------------------------------------ */

static void console_tap(void *opaque, const void *data, size_t length)
{
	struct control_server *server = opaque;
	const uint8_t *bytes = data;
	bool any = false;
	pthread_mutex_lock(&server->lock);
	for (size_t i = 0; i < length; i++)
		server->backlog[server->backlog_head++ % CONTROL_BACKLOG_BYTES] = bytes[i];
	for (unsigned i = 0; i < server->client_count; i++) {
		struct control_client *client = server->clients[i];
		if (client->mode != CLIENT_CONSOLE || client->closing)
			continue;
		if (client->out_len + length > CONTROL_CONSOLE_MAX_BYTES) {
			/* A slow reader loses output; the guest never waits for it. */
			client->console_dropped_bytes += length;
			continue;
		}
		client_append_locked(client, data, length);
		any = true;
	}
	pthread_mutex_unlock(&server->lock);
	if (any) {
		uint64_t one = 1;
		ssize_t n = write(server->wake_fd, &one, sizeof(one));
		(void)n;
	}
}

static void console_attach(struct control_server *server, struct control_client *client)
{
	reply_ok(server, client, "console", "", 0, false);
	pthread_mutex_lock(&server->lock);
	uint64_t head = server->backlog_head;
	uint64_t start = head > CONTROL_BACKLOG_BYTES ? head - CONTROL_BACKLOG_BYTES : 0;
	for (uint64_t i = start; i < head; i++)
		client_append_locked(client, &server->backlog[i % CONTROL_BACKLOG_BYTES], 1);
	client->mode = CLIENT_CONSOLE;
	client->deadline_ms = 0;
	pthread_mutex_unlock(&server->lock);
}

/* ---- Background verbs ---------------------------------------------------- */

static void *job_main(void *opaque)
{
	struct control_job *job = opaque;
	FILE *out = open_memstream(&job->payload, &job->payload_len);
	if (!out) {
		job->err = -ENOMEM;
		snprintf(job->error, sizeof(job->error), "out of memory");
	} else {
		job->err = job->fn(job->server->vm, &job->request, out, job->error,
				   sizeof(job->error));
		fclose(out);
	}
	__atomic_store_n(&job->done, 1, __ATOMIC_SEQ_CST);
	uint64_t one = 1;
	ssize_t n = write(job->server->wake_fd, &one, sizeof(one));
	(void)n;
	return NULL;
}

/*
 * Run a background verb on its own thread.  request's strings point into
 * line (the client's input buffer, reused for the next request): they are
 * copied with the line and moved to the copy.
 */
static void job_start(struct control_server *server, struct control_client *client,
		      control_verb_fn fn, const struct control_request *request, const char *line,
		      bool wait_after)
{
	struct control_job *job = &server->job;
	if (job->active) {
		char error[200];
		snprintf(error, sizeof(error),
			 "'%s' is already in progress; one save, snapshot or migrate runs at a time: wait for it to end",
			 job->request.verb);
		reply_error(server, client, EBUSY, error);
		return;
	}
	memset(job, 0, sizeof(*job));
	memcpy(job->line, line, sizeof(job->line));
	job->request = *request;
#define JOB_REBASE(p)                                              \
	do {                                                       \
		if ((p) >= line && (p) < line + sizeof(job->line)) \
			(p) = job->line + ((p)-line);              \
	} while (0)
	JOB_REBASE(job->request.verb);
	for (unsigned i = 0; i < job->request.arg_count; i++) {
		JOB_REBASE(job->request.args[i].key);
		JOB_REBASE(job->request.args[i].value);
	}
#undef JOB_REBASE
	job->server = server;
	job->client = client;
	job->fn = fn;
	job->wait_after = wait_after;
	/* The thread inherits the control thread's mask: all signals blocked. */
	int rc = pthread_create(&job->thread, NULL, job_main, job);
	if (rc) {
		char error[160];
		snprintf(error, sizeof(error), "cannot start a thread for '%s': %s", request->verb,
			 strerror(rc));
		reply_error(server, client, rc, error);
		return;
	}
	job->active = true;
	client->busy = true;
	client->deadline_ms = 0; /* a migration may take minutes */
}

static void client_process_lines(struct control_server *server, struct control_client *client);

/* The worker has ended: send its reply, let its client go on.  final
 * (the server stops): wait for the worker, answer, take no more requests. */
static void job_finish(struct control_server *server, bool final)
{
	struct control_job *job = &server->job;
	if (!job->active || (!final && !__atomic_load_n(&job->done, __ATOMIC_SEQ_CST)))
		return;
	pthread_join(job->thread, NULL);
	job->active = false;
	struct control_client *client = job->client;
	if (client) {
		if (job->err < 0) {
			reply_error(server, client, -job->err,
				    job->error[0] ? job->error : strerror(-job->err));
		} else {
			reply_ok(server, client, job->request.verb, job->payload, job->payload_len,
				 job->request.json);
			if (job->wait_after) {
				client->mode = CLIENT_WAIT;
				client->deadline_ms = 0;
			}
		}
		client->busy = false;
		if (client->mode == CLIENT_REQUESTS)
			client->deadline_ms =
				now_ms() +
				(client->in_len ? CONTROL_CLIENT_DEADLINE_MS : CONTROL_IDLE_MS);
		if (!final)
			client_process_lines(server, client); /* requests sent meanwhile */
	}
	free(job->payload);
	job->payload = NULL;
}

/* ---- Requests ------------------------------------------------------------ */

static void handle_request(struct control_server *server, struct control_client *client, char *line)
{
	struct control_request request;
	char error[1024] = "";
	/* A JSON request's strings are unpacked here; a background verb's
	 * job copies this buffer as it copies a text request's line. */
	char json_strings[CONTROL_REQUEST_MAX_BYTES + 1];
	int err;
	client->json = line[strspn(line, " \t")] == '{';
	if (client->json) {
		err = control_json_request_parse(line, json_strings, sizeof(json_strings), &request,
						 client->json_id, sizeof(client->json_id), error,
						 sizeof(error));
		line = json_strings;
	} else {
		err = control_request_parse(line, &request, error, sizeof(error));
	}
	if (err) {
		reply_error(server, client, -err, error);
		return;
	}
	if (strcmp(request.verb, "console") == 0 || strcmp(request.verb, "wait") == 0 ||
	    strcmp(request.verb, "quit") == 0) {
		static const char *const none[] = { NULL };
		err = control_request_check_keys(&request, none, error, sizeof(error));
		if (err) {
			reply_error(server, client, -err, error);
		} else if (request.verb[0] == 'c') {
			console_attach(server, client);
		} else if (request.verb[0] == 'w') {
			client->mode = CLIENT_WAIT; /* answered when the VM ends */
			client->deadline_ms = 0;
		} else {
			reply_ok(server, client, "quit", "", 0, false);
			client->closing = true;
		}
		return;
	}
	/* wait=yes on any request: after its ok reply, the connection waits
	 * for the VM's end (no race with a VM that ends at once). */
	bool wait_after = false;
	err = control_arg_bool(&request, "wait", &wait_after, error, sizeof(error));
	if (err) {
		reply_error(server, client, -err, error);
		return;
	}
	for (unsigned i = 0; i < request.arg_count; i++) {
		if (strcmp(request.args[i].key, "wait") == 0) {
			memmove(&request.args[i], &request.args[i + 1],
				(request.arg_count - i - 1) * sizeof(request.args[0]));
			request.arg_count--;
			break;
		}
	}
	control_verb_fn fn = control_find_verb(request.verb);
	if (!fn) {
		snprintf(error, sizeof(error), "unknown request '%s'; send 'help' for the list",
			 request.verb);
		reply_error(server, client, ENOSYS, error);
		return;
	}
	if (server->job.active && strcmp(request.verb, "resume") == 0) {
		snprintf(error, sizeof(error),
			 "'%s' is in progress and holds the VM paused while it copies; resume after it ends",
			 server->job.request.verb);
		reply_error(server, client, EBUSY, error);
		return;
	}
	request.json = client->json && control_verb_is_json(request.verb);
	if (control_verb_is_background(request.verb)) {
		job_start(server, client, fn, &request, line, wait_after);
		return;
	}
	char *payload = NULL;
	size_t payload_len = 0;
	FILE *out = open_memstream(&payload, &payload_len);
	if (!out) {
		reply_error(server, client, ENOMEM, "out of memory");
		return;
	}
	err = fn(server->vm, &request, out, error, sizeof(error));
	fclose(out);
	if (err < 0) {
		reply_error(server, client, -err, error[0] ? error : strerror(-err));
	} else {
		reply_ok(server, client, request.verb, payload, payload_len, request.json);
		if (wait_after) {
			client->mode = CLIENT_WAIT;
			client->deadline_ms = 0;
		}
	}
	free(payload);
}

/* Answer the complete request lines in client->in, in order; stop while
 * the client's background verb runs. */
static void client_process_lines(struct control_server *server, struct control_client *client)
{
	char *newline;
	while (client->mode == CLIENT_REQUESTS && !client->closing && !client->busy &&
	       (newline = memchr(client->in, '\n', client->in_len))) {
		size_t line_len = (size_t)(newline - client->in);
		char line_error[128];
		if (control_line_finish(client->in, line_len, line_error, sizeof(line_error)) < 0)
			reply_error(server, client, EINVAL, line_error);
		else
			handle_request(server, client, client->in);
		size_t rest = client->in_len - line_len - 1;
		memmove(client->in, newline + 1, rest);
		client->in_len = rest;
		if (!client->busy)
			client->deadline_ms =
				now_ms() + (rest ? CONTROL_CLIENT_DEADLINE_MS : CONTROL_IDLE_MS);
	}
	if (client->mode == CLIENT_CONSOLE && client->in_len) {
		/* Bytes typed right after 'console' go to the guest. */
		console_inject_input(&server->vm->console, client->in, client->in_len);
		client->in_len = 0;
	}
}

static void client_read(struct control_server *server, struct control_client *client)
{
	for (;;) {
		if (client->mode == CLIENT_CONSOLE) {
			char buf[1024];
			ssize_t n = recv(client->fd, buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			if (n <= 0) {
				client->closing = true;
				client->out_len = 0;
				return;
			}
			console_inject_input(&server->vm->console, buf, (size_t)n);
			continue;
		}
		if (client->mode == CLIENT_WAIT || client->closing) {
			/* Nothing more is read; EOF is noticed through POLLHUP. */
			char sink[256];
			ssize_t n = recv(client->fd, sink, sizeof(sink), MSG_DONTWAIT);
			if (n == 0 ||
			    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
				client->closing = true;
				client->out_len = 0;
			}
			if (n <= 0)
				return;
			continue;
		}
		size_t room = CONTROL_REQUEST_MAX_BYTES - client->in_len;
		ssize_t n = recv(client->fd, client->in + client->in_len, room, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			/* EOF: answer what is complete, then close. */
			client->closing = true;
			if (n < 0)
				client->out_len = 0;
			return;
		}
		if (client->in_len == 0 && !client->busy)
			client->deadline_ms = now_ms() + CONTROL_CLIENT_DEADLINE_MS;
		client->in_len += (size_t)n;
		client_process_lines(server, client);
		if (client->mode == CLIENT_REQUESTS && !client->closing &&
		    client->in_len == CONTROL_REQUEST_MAX_BYTES) {
			char message[160];
			snprintf(message, sizeof(message),
				 "request longer than %u bytes; closing the connection",
				 CONTROL_REQUEST_MAX_BYTES - 1);
			/* Answered in the form the overlong request began in. */
			client->in[client->in_len] = '\0';
			client->json = client->in[strspn(client->in, " \t")] == '{';
			snprintf(client->json_id, sizeof(client->json_id), "null");
			reply_error(server, client, E2BIG, message);
			client->closing = true;
			client->in_len = 0;
		}
		if (client->mode != CLIENT_REQUESTS)
			continue;
		if (client->closing)
			return;
	}
}

/* ---- The server thread --------------------------------------------------- */

static void client_free(struct control_client *client)
{
	close(client->fd);
	free(client->out);
	free(client);
}

static void remove_client(struct control_server *server, unsigned index)
{
	pthread_mutex_lock(&server->lock);
	struct control_client *client = server->clients[index];
	server->clients[index] = server->clients[--server->client_count];
	pthread_mutex_unlock(&server->lock);
	if (server->job.client == client)
		server->job.client = NULL; /* the verb runs on; nobody hears its reply */
	client_free(client);
}

static void refuse(int fd, const char *line)
{
	ssize_t n = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)n;
	close(fd);
}

static void accept_clients(struct control_server *server)
{
	for (;;) {
		int fd = accept4(server->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return; /* EAGAIN, or a client gone before we took it */
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			refuse(fd,
			       "error EACCES unauthenticated: cannot read the peer's credentials\n");
			continue;
		}
		if (cred.uid != geteuid() && cred.uid != 0) {
			char line[200];
			snprintf(line, sizeof(line),
				 "error EACCES unauthenticated: uid %u may not control this VM; only its owner (uid %u) and root may\n",
				 (unsigned)cred.uid, (unsigned)geteuid());
			kapsel_warn("control socket: refused a client of uid %u",
				    (unsigned)cred.uid);
			refuse(fd, line);
			continue;
		}
		if (server->client_count == CONTROL_MAX_CLIENTS) {
			refuse(fd, "error EBUSY too many control clients; try again later\n");
			continue;
		}
		struct control_client *client = calloc(1, sizeof(*client));
		if (!client) {
			refuse(fd, "error ENOMEM out of memory\n");
			continue;
		}
		client->fd = fd;
		client->mode = CLIENT_REQUESTS;
		client->deadline_ms = now_ms() + CONTROL_IDLE_MS;
		pthread_mutex_lock(&server->lock);
		server->clients[server->client_count++] = client;
		pthread_mutex_unlock(&server->lock);
	}
}

static void check_shutdown_deadline(struct control_server *server)
{
	if (!server->shutdown_deadline_ns || vm_clock_ns(server->vm) < server->shutdown_deadline_ns)
		return;
	server->shutdown_deadline_ns = 0;
	/* A guest that rebooted (on request or on_poweroff=restart) did
	 * what it was asked; the deadline was for the boot that was asked. */
	if (server->vm->state == VM_STATE_STOPPED ||
	    __atomic_load_n(&server->vm->generation, __ATOMIC_RELAXED) !=
		    server->shutdown_generation)
		return;
	kapsel_warn("VM '%s' did not power off before its shutdown deadline; destroying it",
		    server->vm->config->name);
	server->destroyed = true;
	vm_request_stop(server->vm);
}

static void *control_main(void *opaque)
{
	struct control_server *server = opaque;
	sigset_t all;
	/* Signals (stop, stats, kicks) belong to the vCPU thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	sandbox_thread_role(SANDBOX_ROLE_CONTROL);

	struct pollfd fds[CONTROL_MAX_CLIENTS + 2];
	while (!__atomic_load_n(&server->stopping, __ATOMIC_SEQ_CST)) {
		uint64_t now = now_ms();
		int timeout = 1000;
		unsigned count = server->client_count;
		fds[0] = (struct pollfd){ .fd = server->wake_fd, .events = POLLIN };
		fds[1] = (struct pollfd){ .fd = server->listen_fd, .events = POLLIN };
		for (unsigned i = 0; i < count; i++) {
			struct control_client *client = server->clients[i];
			pthread_mutex_lock(&server->lock);
			bool pending = client->out_len > 0;
			pthread_mutex_unlock(&server->lock);
			fds[2 + i] = (struct pollfd){ .fd = client->fd,
						      .events = (short)(POLLIN |
									(pending ? POLLOUT : 0)) };
			if (client->deadline_ms) {
				int left = client->deadline_ms > now
						   ? (int)(client->deadline_ms - now)
						   : 0;
				if (left < timeout)
					timeout = left;
			}
		}
		if (server->shutdown_deadline_ns) {
			uint64_t clock = vm_clock_ns(server->vm);
			uint64_t left_ms =
				server->shutdown_deadline_ns > clock
					? (server->shutdown_deadline_ns - clock) / 1000000u + 1
					: 0;
			if (left_ms < (uint64_t)timeout)
				timeout = (int)left_ms;
		}
		int ready = poll(fds, 2 + count, timeout);
		if (ready < 0 && errno != EINTR)
			break;
		if (fds[0].revents & POLLIN) {
			uint64_t drained;
			ssize_t n = read(server->wake_fd, &drained, sizeof(drained));
			(void)n;
		}
		check_shutdown_deadline(server);
		job_finish(server, false);
		now = now_ms();
		/* Walk backwards: remove_client moves the last client into i. */
		for (unsigned i = count; i-- > 0;) {
			struct control_client *client = server->clients[i];
			short revents = ready > 0 ? fds[2 + i].revents : 0;
			if (revents & (POLLIN | POLLHUP | POLLERR))
				client_read(server, client);
			if (client->deadline_ms && now >= client->deadline_ms &&
			    client->mode == CLIENT_REQUESTS && !client->closing) {
				reply_error(server, client, ETIMEDOUT,
					    client->in_len
						    ? "request not completed in time; closing the connection"
						    : "idle connection; closing it");
				client->closing = true;
			}
			bool alive = client_flush(server, client);
			pthread_mutex_lock(&server->lock);
			bool done = client->closing && client->out_len == 0;
			/* A client that does not read its replies is dropped. */
			bool stuck = client->out_len > CONTROL_OUTPUT_MAX_BYTES ||
				     (client->closing && client->deadline_ms &&
				      now >= client->deadline_ms + CONTROL_CLIENT_DEADLINE_MS);
			pthread_mutex_unlock(&server->lock);
			if (!alive || done || stuck)
				remove_client(server, i);
		}
		if (fds[1].revents & POLLIN)
			accept_clients(server);
	}
	return NULL;
}

/* ---- Start and stop ------------------------------------------------------ */

/* ---- A VM waiting for an incoming migration --------------------------------- */

struct control_incoming {
	char path[4200];
	int fd;
};

int control_incoming_register(struct control_incoming **out, const char *name,
			      uint64_t memory_bytes, unsigned vcpus, const char *listen,
			      char *error, size_t error_len)
{
	*out = NULL;
	char dir[4096];
	int err = control_runtime_dir(dir, sizeof(dir));
	if (err)
		return kapsel_fail(error, error_len, err,
				   "the runtime directory's path is too long; set KAPSEL_RUNTIME_DIR");
	err = make_runtime_dir(dir, error, error_len);
	if (err)
		return err;
	struct control_incoming *incoming = calloc(1, sizeof(*incoming));
	if (!incoming)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	snprintf(incoming->path, sizeof(incoming->path), "%s/" CONTROL_INCOMING_FILE_PREFIX "%ld",
		 dir, (long)getpid());
	/* A 'kapsel list' that finds the file before we lock it takes it for
	 * a dead one's and removes it: then lock a new one. */
	int fd = -EWOULDBLOCK;
	for (int attempt = 0; attempt < 50 && fd == -EWOULDBLOCK; attempt++) {
		fd = lock_file(incoming->path);
		if (fd == -EWOULDBLOCK)
			usleep(10000);
	}
	if (fd < 0) {
		free(incoming);
		return kapsel_fail(error, error_len, fd, "cannot create '%s': %s", incoming->path,
				   strerror(-fd));
	}
	incoming->fd = fd;
	/* The address without the key file's path (',psk=...'). */
	size_t listen_len = strcspn(listen, ",");
	dprintf(fd,
		"name %s\nstate incoming\npid %ld\nmemory_bytes %llu\nvcpus %u\nstarted_unix %llu\nlisten %.*s\n",
		name && *name ? name : "-", (long)getpid(), (unsigned long long)memory_bytes, vcpus,
		(unsigned long long)time(NULL), (int)listen_len, listen);
	*out = incoming;
	return 0;
}

void control_incoming_unregister(struct control_incoming *incoming)
{
	if (!incoming)
		return;
	unlock_file(incoming->path, incoming->fd);
	free(incoming);
}

int control_server_start(struct control_server **server_out, const char *name, char *error,
			 size_t error_len)
{
	char dir[4096];
	/* The name becomes file names in the runtime directory. */
	int err = vm_config_check_name(name, error, error_len);
	if (err)
		return err;
	err = control_register_builtin_verbs();
	if (err)
		return kapsel_fail(error, error_len, err, "cannot register the control verbs: %s",
				   strerror(-err));
	struct control_server *server = calloc(1, sizeof(*server));
	if (!server)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	server->lock_fd = server->domid_fd = server->listen_fd = server->wake_fd = -1;
	pthread_mutex_init(&server->lock, NULL);
	server->started_unix = (uint64_t)time(NULL);
	snprintf(server->name, sizeof(server->name), "%s", name);

	err = control_runtime_dir(dir, sizeof(dir));
	if (!err)
		err = control_socket_path(name, server->socket_path, sizeof(server->socket_path));
	if (err) {
		err = kapsel_fail(
			error, error_len, err,
			"control socket path for VM '%s' is too long; set KAPSEL_RUNTIME_DIR to a shorter directory",
			name);
		goto fail;
	}
	err = make_runtime_dir(dir, error, error_len);
	if (err)
		goto fail;
	int n = snprintf(server->lock_path, sizeof(server->lock_path), "%s/%s.lock", dir, name);
	server->lock_fd = n < 0 || (size_t)n >= sizeof(server->lock_path)
				  ? -ENAMETOOLONG
				  : lock_file(server->lock_path);
	if (server->lock_fd == -EWOULDBLOCK) {
		err = kapsel_fail(
			error, error_len, -EEXIST,
			"a VM named '%s' is already running (control socket %s); choose another name, or stop it with 'kapsel destroy %s'",
			name, server->socket_path, name);
		goto fail;
	}
	if (server->lock_fd < 0) {
		err = kapsel_fail(error, error_len, server->lock_fd, "cannot lock '%s': %s",
				  server->lock_path, strerror(-server->lock_fd));
		goto fail;
	}
	/* We hold the name: a socket still there is a dead VM's, unless it
	 * answers (a VM started by a Kapsel that did not lock). */
	int probe = control_connect(name);
	if (probe >= 0) {
		close(probe);
		err = kapsel_fail(
			error, error_len, -EEXIST,
			"a VM named '%s' is already running (control socket %s answers); choose another name",
			name, server->socket_path);
		goto fail;
	}
	if (probe == -ECONNREFUSED) {
		kapsel_warn("removed the stale control socket %s of a VM that is no longer running",
			    server->socket_path);
		unlink(server->socket_path);
	} else if (probe != -ENOENT) {
		unlink(server->socket_path);
	}
	err = take_domid(server, dir);
	if (err) {
		err = kapsel_fail(error, error_len, err, "cannot allocate a domain id in '%s': %s",
				  dir, strerror(-err));
		goto fail;
	}
	*server_out = server;
	return 0;

fail:
	unlock_file(server->domid_path, server->domid_fd);
	unlock_file(server->lock_path, server->lock_fd);
	pthread_mutex_destroy(&server->lock);
	free(server);
	return err;
}

int control_server_attach(struct control_server *server, struct kapsel_vm *vm, char *error,
			  size_t error_len)
{
	int err;
	server->vm = vm;
	server->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (server->listen_fd < 0)
		return kapsel_fail(error, error_len, -errno, "cannot create a socket: %s",
				   strerror(errno));
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	memcpy(addr.sun_path, server->socket_path, sizeof(addr.sun_path));
	/* Owner-only from the start (the directory is 0700 as well). */
	mode_t old_mask = umask(0177);
	int rc = bind(server->listen_fd, (struct sockaddr *)&addr, sizeof(addr));
	int bind_errno = errno;
	umask(old_mask);
	if (rc < 0)
		return kapsel_fail(error, error_len, -bind_errno,
				   "cannot bind control socket %s: %s", server->socket_path,
				   strerror(bind_errno));
	server->bound = true;
	if (chmod(server->socket_path, 0600) < 0 || listen(server->listen_fd, 64) < 0)
		return kapsel_fail(error, error_len, -errno,
				   "cannot listen on control socket %s: %s", server->socket_path,
				   strerror(errno));
	server->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (server->wake_fd < 0)
		return kapsel_fail(error, error_len, -errno, "eventfd: %s", strerror(errno));
	vm->control = server;
	console_set_output_tap(&vm->console, console_tap, server);
	rc = pthread_create(&server->thread, NULL, control_main, server);
	if (rc) {
		console_set_output_tap(&vm->console, NULL, NULL);
		vm->control = NULL;
		err = kapsel_fail(error, error_len, -rc, "cannot start the control thread: %s",
				  strerror(rc));
		return err;
	}
	server->thread_started = true;
	kapsel_debug("control socket %s (domain id %u)", server->socket_path, server->domid);
	return 0;
}

static const char *end_reason(struct control_server *server)
{
	if (server->destroyed)
		return "destroyed";
	switch (server->vm->shutdown_reason) {
	case KAPSEL_SHUTDOWN_REBOOT:
		return "reboot";
	case KAPSEL_SHUTDOWN_CRASH:
		return "crashed";
	default:
		/* Stopped from outside (a signal, a save with stop, a
		 * migration) rather than powered off by the guest. */
		if (__atomic_load_n(&server->vm->stop_requested, __ATOMIC_SEQ_CST) ||
		    server->vm->exit_code == KAPSEL_EXIT_VMM_ERROR)
			return "stopped";
		return "poweroff";
	}
}

bool control_server_destroyed(const struct control_server *server)
{
	return server && server->destroyed;
}

void control_server_stop(struct control_server *server)
{
	if (!server)
		return;
	struct kapsel_vm *vm = server->vm;
	if (vm)
		console_set_output_tap(&vm->console, NULL, NULL);
	__atomic_store_n(&server->stopping, 1, __ATOMIC_SEQ_CST);
	if (server->thread_started) {
		uint64_t one = 1;
		ssize_t n = write(server->wake_fd, &one, sizeof(one));
		(void)n;
		pthread_join(server->thread, NULL);
	}
	/* A migration that ended the VM is still replying to its client. */
	job_finish(server, true);
	/* The name is released first so that a client told "the VM ended" can
	 * start a new VM of the same name at once. */
	if (server->bound)
		unlink(server->socket_path);
	if (server->listen_fd >= 0)
		close(server->listen_fd);
	unlock_file(server->domid_path, server->domid_fd);
	unlock_file(server->lock_path, server->lock_fd);
	char final[160], final_json[100];
	if (vm) {
		snprintf(final, sizeof(final), "exit_code %d\nreason %s\n", vm->exit_code,
			 end_reason(server));
		snprintf(final_json, sizeof(final_json),
			 "{\"schema\":\"kapsel.wait/1\",\"exit_code\":%d,\"reason\":\"%s\"}",
			 vm->exit_code, end_reason(server));
	}
	for (unsigned i = 0; i < server->client_count; i++) {
		struct control_client *client = server->clients[i];
		if (client->mode == CLIENT_WAIT && vm) {
			if (client->json)
				reply_ok(server, client, "wait", final_json, strlen(final_json),
					 true);
			else
				reply_ok(server, client, "wait", final, strlen(final), false);
		}
		client_flush(server, client);
		client_free(client);
	}
	server->client_count = 0;
	if (server->wake_fd >= 0)
		close(server->wake_fd);
	if (vm)
		vm->control = NULL;
	pthread_mutex_destroy(&server->lock);
	free(server);
}

/* ---- Internal hooks for verbs -------------------------------------------- */

void control_server_set_deadline(struct kapsel_vm *vm, uint64_t deadline_ns)
{
	struct control_server *server = vm->control;
	if (server) {
		server->shutdown_deadline_ns = deadline_ns ? deadline_ns : 1;
		server->shutdown_generation = __atomic_load_n(&vm->generation, __ATOMIC_RELAXED);
	}
}

void control_server_mark_destroyed(struct kapsel_vm *vm)
{
	struct control_server *server = vm->control;
	if (server)
		server->destroyed = true;
}

uint64_t control_server_started_unix(struct kapsel_vm *vm)
{
	struct control_server *server = vm->control;
	return server ? server->started_unix : 0;
}

unsigned control_server_domid(struct kapsel_vm *vm)
{
	struct control_server *server = vm->control;
	return server ? server->domid : 0;
}
