/* Client side of the control protocol and the runtime directory layout (used by the CLI, the server and libkapsel-xenctrl). */
#define _GNU_SOURCE
#include "control/control_client.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_internal.h"

int control_runtime_dir(char *buf, size_t len)
{
	const char *env = getenv("KAPSEL_RUNTIME_DIR");
	int n;
	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if ((env = getenv("XDG_RUNTIME_DIR")) && *env)
		n = snprintf(buf, len, "%s/kapsel", env);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "/run/kapsel");
	else
		n = snprintf(buf, len, "/tmp/kapsel-%u", (unsigned)geteuid());
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static int runtime_file(const char *name, const char *suffix, char *buf, size_t len)
{
	char dir[4096];
	/* A name is a file name in the runtime directory, never a path (the
	 * server checks names fully with vm_config_check_name; this library
	 * is also linked without config.c). */
	if (!name[0] || name[0] == '.' || strchr(name, '/'))
		return -EINVAL;
	int err = control_runtime_dir(dir, sizeof(dir));
	if (err)
		return err;
	int n = snprintf(buf, len, "%s/%s%s", dir, name, suffix);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int control_socket_path(const char *name, char *buf, size_t len)
{
	return runtime_file(name, ".sock", buf, len);
}

static int connect_by_name(const char *name)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int err = control_socket_path(name, addr.sun_path, sizeof(addr.sun_path));
	if (err)
		return err;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/* All decimal digits, as a domain id `kapsel list` prints. */
static bool looks_like_domid(const char *ref)
{
	size_t n = strlen(ref);
	return n > 0 && n <= 9 && strspn(ref, "0123456789") == n;
}

/* 8-4-4-4-12 hexadecimal digits, as `kapsel info` prints a UUID. */
static bool looks_like_uuid(const char *ref)
{
	if (strlen(ref) != 36)
		return false;
	for (unsigned i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? ref[i] != '-' : !isxdigit((unsigned char)ref[i]))
			return false;
	}
	return true;
}

/*
 * The first running VM whose `info` payload matches: asks each VM in turn
 * (CONTROL_RESOLVE_TIMEOUT_MS each at most) and calls match(payload,
 * opaque) until it returns true.  Returns the VM's name (malloc'd, the
 * caller frees it) and, when domid is not NULL, copies its domid, or NULL.
 */
static char *find_vm(bool (*match)(const char *payload, const void *opaque), const void *opaque,
		     char *domid, size_t domid_len)
{
	char **names;
	int count = control_list_names(&names);
	if (count < 0)
		return NULL;
	char *found = NULL;
	for (int i = 0; i < count && !found; i++) {
		int fd = connect_by_name(names[i]);
		if (fd < 0)
			continue;
		struct control_reply reply;
		int rc = control_client_request(fd, "info", &reply, CONTROL_RESOLVE_TIMEOUT_MS);
		close(fd);
		if (rc)
			continue;
		if (!reply.errnum && reply.payload && match(reply.payload, opaque)) {
			found = strdup(names[i]);
			if (domid && !control_payload_get(reply.payload, "domid", domid, domid_len))
				snprintf(domid, domid_len, "?");
		}
		control_reply_free(&reply);
	}
	control_free_names(names, count);
	return found;
}

static bool match_domid(const char *payload, const void *ref)
{
	char value[64];
	return control_payload_get(payload, "domid", value, sizeof(value)) &&
	       strtoul(value, NULL, 10) == strtoul(ref, NULL, 10);
}

static bool match_uuid(const char *payload, const void *ref)
{
	char value[64];
	return control_payload_get(payload, "uuid", value, sizeof(value)) &&
	       strcasecmp(value, ref) == 0;
}

int control_resolve(const char *ref, char *name, size_t name_len)
{
	bool domid = looks_like_domid(ref), uuid = looks_like_uuid(ref);
	if (!domid && !uuid)
		return -ENOENT;
	char *found = find_vm(domid ? match_domid : match_uuid, ref, NULL, 0);
	int err = found && strlen(found) < name_len ? 0 : -ENOENT;
	if (!err)
		snprintf(name, name_len, "%s", found);
	free(found);
	return err;
}

/* True if one of the "disk I ... path=PATH" lines of an info payload
 * names the same file (device and inode) as *target. */
static bool info_lists_disk(const char *payload, const void *opaque)
{
	const struct stat *target = opaque;
	for (const char *line = payload; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		const char *path = strstr(line, " path=");
		if (strncmp(line, "disk ", 5) == 0 && path && (size_t)(path - line) < len) {
			char copy[4096];
			size_t n = len - (size_t)(path + 6 - line);
			if (n < sizeof(copy)) {
				memcpy(copy, path + 6, n);
				copy[n] = '\0';
				struct stat st;
				if (stat(copy, &st) == 0 && st.st_dev == target->st_dev &&
				    st.st_ino == target->st_ino)
					return true;
			}
		}
		line = eol ? eol + 1 : NULL;
	}
	return false;
}

bool control_find_disk_holder(const char *path, char *who, size_t who_len)
{
	struct stat target;
	if (stat(path, &target) < 0)
		return false;
	char domid[32];
	char *name = find_vm(info_lists_disk, &target, domid, sizeof(domid));
	bool found = name != NULL;
	if (found)
		snprintf(who, who_len, "VM '%s' (domain id %s)", name, domid);
	free(name);
	return found;
}

int control_connect(const char *ref)
{
	int fd = connect_by_name(ref);
	if (fd != -ENOENT)
		return fd;
	/* No VM of that name: a domain id or a UUID names one too. */
	char name[256];
	if (control_resolve(ref, name, sizeof(name)) != 0)
		return -ENOENT;
	return connect_by_name(name);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Read one '\n'-terminated line (without it) byte-wise into a malloc'd string. */
static int read_line(int fd, char **line, uint64_t deadline_ms)
{
	size_t cap = 128, len = 0;
	char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (deadline_ms) {
			uint64_t now = now_ms();
			if (now >= deadline_ms) {
				free(buf);
				return -ETIMEDOUT;
			}
			struct pollfd pfd = { .fd = fd, .events = POLLIN };
			int rc = poll(&pfd, 1, (int)(deadline_ms - now));
			if (rc < 0 && errno == EINTR)
				continue;
			if (rc == 0)
				continue;
		}
		char c;
		ssize_t n = read(fd, &c, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			free(buf);
			return err;
		}
		if (n == 0) {
			free(buf);
			return len ? -EPROTO : -ECONNRESET;
		}
		if (c == '\n')
			break;
		if (len + 2 > cap) {
			if (cap > (1u << 24)) {
				free(buf);
				return -EPROTO;
			}
			char *bigger = realloc(buf, cap * 2);
			if (!bigger) {
				free(buf);
				return -ENOMEM;
			}
			buf = bigger;
			cap *= 2;
		}
		buf[len++] = c;
	}
	buf[len] = '\0';
	*line = buf;
	return 0;
}

int control_client_read_reply(int fd, struct control_reply *reply, int timeout_ms)
{
	memset(reply, 0, sizeof(*reply));
	uint64_t deadline = timeout_ms < 0 ? 0 : now_ms() + (uint64_t)timeout_ms;
	char *line = NULL;
	int err = read_line(fd, &line, deadline);
	if (err)
		return err;
	if (strncmp(line, "error ", 6) == 0) {
		char *name = line + 6, *space = strchr(name, ' ');
		if (space)
			*space = '\0';
		reply->errnum = control_errno_from_name(name);
		reply->message = strdup(space ? space + 1 : name);
		reply->payload = strdup("");
		free(line);
		return reply->message && reply->payload ? 0 : -ENOMEM;
	}
	char *end;
	unsigned long lines = strtoul(line + (strncmp(line, "ok ", 3) == 0 ? 3 : 0), &end, 10);
	if (strncmp(line, "ok ", 3) != 0 || *end || lines > 1000000) {
		free(line);
		return -EPROTO;
	}
	free(line);
	size_t cap = 256, len = 0;
	char *payload = malloc(cap);
	if (!payload)
		return -ENOMEM;
	payload[0] = '\0';
	for (unsigned long i = 0; i < lines; i++) {
		err = read_line(fd, &line, deadline);
		if (err) {
			free(payload);
			return err == -ECONNRESET ? -EPROTO : err;
		}
		size_t n = strlen(line);
		while (len + n + 2 > cap)
			cap *= 2;
		char *bigger = realloc(payload, cap);
		if (!bigger) {
			free(line);
			free(payload);
			return -ENOMEM;
		}
		payload = bigger;
		memcpy(payload + len, line, n);
		len += n;
		payload[len++] = '\n';
		payload[len] = '\0';
		free(line);
	}
	reply->payload = payload;
	reply->payload_len = len;
	reply->lines = (unsigned)lines;
	return 0;
}

int control_client_request(int fd, const char *request, struct control_reply *reply, int timeout_ms)
{
	size_t len = strlen(request);
	char *line = malloc(len + 2);
	if (!line)
		return -ENOMEM;
	memcpy(line, request, len);
	line[len++] = '\n';
	size_t done = 0;
	while (done < len) {
		ssize_t n = send(fd, line + done, len - done, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			free(line);
			return err;
		}
		done += (size_t)n;
	}
	free(line);
	return control_client_read_reply(fd, reply, timeout_ms);
}

void control_reply_free(struct control_reply *reply)
{
	free(reply->message);
	free(reply->payload);
	memset(reply, 0, sizeof(*reply));
}

int control_call(const char *name, const char *request, struct control_reply *reply, int timeout_ms)
{
	memset(reply, 0, sizeof(*reply));
	int fd = control_connect(name);
	if (fd < 0)
		return fd;
	int err = control_client_request(fd, request, reply, timeout_ms);
	close(fd);
	return err;
}

bool control_payload_get(const char *payload, const char *key, char *value, size_t value_len)
{
	size_t key_len = strlen(key);
	for (const char *line = payload; line && *line;) {
		const char *eol = strchr(line, '\n');
		size_t line_len = eol ? (size_t)(eol - line) : strlen(line);
		if (line_len > key_len && strncmp(line, key, key_len) == 0 &&
		    line[key_len] == ' ') {
			size_t n = line_len - key_len - 1;
			if (n >= value_len)
				n = value_len - 1;
			memcpy(value, line + key_len + 1, n);
			value[n] = '\0';
			return true;
		}
		if (line_len == key_len && strncmp(line, key, key_len) == 0) {
			value[0] = '\0';
			return true;
		}
		line = eol ? eol + 1 : NULL;
	}
	return false;
}

int control_remove_stale(const char *name)
{
	char sock[4096], lock[4096];
	int err = control_socket_path(name, sock, sizeof(sock));
	if (!err)
		err = runtime_file(name, ".lock", lock, sizeof(lock));
	if (err)
		return err;
	int fd = open(lock, O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			close(fd);
			return -EBUSY; /* a live VM holds the name */
		}
		/* Holding the lock: nobody can start under this name meanwhile. */
		unlink(sock);
		unlink(lock);
		close(fd);
		return 0;
	}
	/* No lock file: the socket cannot belong to a live VM of ours, but
	 * make sure with a connect. */
	int probe = control_connect(name);
	if (probe >= 0) {
		close(probe);
		return -EBUSY;
	}
	if (probe == -ECONNREFUSED)
		unlink(sock);
	return 0;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Every entry of the runtime directory that take() turns into a string
 * (malloc'd; NULL skips the entry), sorted with compare: the count, with
 * the array in *out (control_free_names), or a negative errno.
 */
static int collect_runtime_entries(char ***out, char *(*take)(DIR *dir, const char *entry),
				   int (*compare)(const void *, const void *))
{
	char dir_path[4096];
	int err = control_runtime_dir(dir_path, sizeof(dir_path));
	if (err)
		return err;
	*out = NULL;
	DIR *dir = opendir(dir_path);
	if (!dir)
		return errno == ENOENT ? 0 : -errno;
	char **items = NULL;
	int count = 0, cap = 0;
	struct dirent *entry;
	while ((entry = readdir(dir))) {
		char *item = take(dir, entry->d_name);
		if (!item)
			continue;
		if (count == cap) {
			cap = cap ? cap * 2 : 8;
			char **bigger = realloc(items, (size_t)cap * sizeof(*items));
			if (!bigger) {
				free(item);
				break;
			}
			items = bigger;
		}
		items[count++] = item;
	}
	closedir(dir);
	if (count)
		qsort(items, (size_t)count, sizeof(*items), compare);
	*out = items;
	return count;
}

/* NAME.sock of a VM that answers; a refused socket is a dead VM's, removed. */
static char *take_running_name(DIR *dir, const char *entry)
{
	(void)dir;
	size_t len = strlen(entry);
	if (len <= 5 || strcmp(entry + len - 5, ".sock") != 0)
		return NULL;
	char *name = strndup(entry, len - 5);
	if (!name)
		return NULL;
	int fd = control_connect(name);
	if (fd < 0) {
		if (fd == -ECONNREFUSED)
			control_remove_stale(name);
		free(name);
		return NULL;
	}
	close(fd);
	return name;
}

int control_list_names(char ***names_out)
{
	return collect_runtime_entries(names_out, take_running_name, compare_names);
}

static int compare_pids(const void *a, const void *b)
{
	char pa[32] = "0", pb[32] = "0";
	control_payload_get(*(char *const *)a, "pid", pa, sizeof(pa));
	control_payload_get(*(char *const *)b, "pid", pb, sizeof(pb));
	long x = strtol(pa, NULL, 10), y = strtol(pb, NULL, 10);
	return (x > y) - (x < y);
}

/* The text of a waiting incoming VM's file (CONTROL_INCOMING_FILE_PREFIX). */
static char *take_incoming(DIR *dir, const char *entry)
{
	const size_t prefix_len = strlen(CONTROL_INCOMING_FILE_PREFIX);
	if (strncmp(entry, CONTROL_INCOMING_FILE_PREFIX, prefix_len) != 0)
		return NULL;
	int fd = openat(dirfd(dir), entry, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	/* Its owner holds it locked while it waits: a file we can lock
	 * belongs to a process that is gone. */
	if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
		unlinkat(dirfd(dir), entry, 0);
		close(fd);
		return NULL;
	}
	char text[1024];
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return NULL;
	text[n] = '\0';
	char pid[32];
	if (!control_payload_get(text, "pid", pid, sizeof(pid)))
		return NULL; /* being written */
	return strdup(text);
}

int control_list_incoming(char ***entries_out)
{
	return collect_runtime_entries(entries_out, take_incoming, compare_pids);
}

void control_free_names(char **names, int count)
{
	for (int i = 0; i < count; i++)
		free(names[i]);
	free(names);
}
