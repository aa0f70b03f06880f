/* A stand-in for a running VM's control socket that answers 'info' (and JSON requests) from files, so libkapsel-xenctrl and the CLI are tested without KVM. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static char *read_payload(const char *path, unsigned *lines)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	char *data = NULL;
	size_t length = 0;
	FILE *out = open_memstream(&data, &length);
	int c;
	*lines = 0;
	while (out && (c = fgetc(f)) != EOF) {
		fputc(c, out);
		*lines += c == '\n';
	}
	fclose(f);
	if (!out || fclose(out) != 0)
		return NULL;
	if (length && data[length - 1] != '\n') {
		fprintf(stderr, "fake_vm: %s must end with a newline\n", path);
		free(data);
		return NULL;
	}
	return data;
}

/*
 * JSON replies (optional third argument): a file of "VERB REPLY-LINE"
 * lines.  A JSON request (a line starting with '{') whose text contains
 * "verb":"VERB" gets the next not yet used REPLY-LINE of that verb (the
 * last one again when all were used: successive 'stats' samples).
 */
#define MAX_JSON_REPLIES 64
static struct {
	char verb[32];
	char *line;
	bool used;
} json_replies[MAX_JSON_REPLIES];
static unsigned json_reply_count;

static int read_json_replies(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, f)) > 0 && json_reply_count < MAX_JSON_REPLIES) {
		char *space = strchr(line, ' ');
		if (!space || (size_t)(space - line) >= sizeof(json_replies[0].verb))
			continue;
		*space = '\0';
		snprintf(json_replies[json_reply_count].verb, sizeof(json_replies[0].verb), "%s",
			 line);
		json_replies[json_reply_count].line = strdup(space + 1); /* keeps its '\n' */
		json_reply_count++;
	}
	free(line);
	fclose(f);
	return 0;
}

static const char *json_reply(const char *request)
{
	const char *last = NULL;
	for (unsigned i = 0; i < json_reply_count; i++) {
		char needle[64];
		snprintf(needle, sizeof(needle), "\"verb\":\"%s\"", json_replies[i].verb);
		if (!strstr(request, needle))
			continue;
		last = json_replies[i].line;
		if (!json_replies[i].used) {
			json_replies[i].used = true;
			return last;
		}
	}
	return last ? last
		    : "{\"version\":1,\"id\":null,\"ok\":false,\"error\":{\"errno\":\"ENOSYS\",\"code\":38,\"message\":\"this fake VM has no JSON reply for that\"}}\n";
}

/* Answer each request line of one client until it hangs up. */
static void serve(int fd, const char *payload, unsigned lines)
{
	char line[4096];
	size_t used = 0;
	for (;;) {
		ssize_t n = read(fd, line + used, sizeof(line) - 1 - used);
		if (n <= 0)
			return;
		used += (size_t)n;
		char *eol;
		while ((eol = memchr(line, '\n', used))) {
			*eol = '\0';
			char head[64];
			const char *reply = head;
			if (line[0] == '{') {
				const char *answer = json_reply(line);
				if (write(fd, answer, strlen(answer)) < 0)
					return;
				used -= (size_t)(eol + 1 - line);
				memmove(line, eol + 1, used);
				continue;
			}
			if (strcmp(line, "info") == 0)
				snprintf(head, sizeof(head), "ok %u\n", lines);
			else
				reply = "error ENOSYS this fake VM answers only 'info'\n";
			if (write(fd, reply, strlen(reply)) < 0 ||
			    (reply == head && write(fd, payload, strlen(payload)) < 0))
				return;
			used -= (size_t)(eol + 1 - line);
			memmove(line, eol + 1, used);
		}
		if (used == sizeof(line) - 1)
			return;
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: fake_vm SOCKET PAYLOAD_FILE [JSON_REPLIES_FILE]\n");
		return 2;
	}
	if (argc == 4 && read_json_replies(argv[3]) < 0) {
		fprintf(stderr, "fake_vm: cannot read %s\n", argv[3]);
		return 1;
	}
	unsigned lines;
	char *payload = read_payload(argv[2], &lines);
	if (!payload) {
		fprintf(stderr, "fake_vm: cannot read %s\n", argv[2]);
		return 1;
	}
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	if (strlen(argv[1]) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "fake_vm: socket path too long\n");
		return 1;
	}
	strcpy(addr.sun_path, argv[1]);
	signal(SIGPIPE, SIG_IGN);
	int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	umask(077);
	if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(listener, 16) < 0) {
		fprintf(stderr, "fake_vm: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (;;) {
		int fd = accept(listener, NULL, NULL);
		if (fd < 0) {
			if (errno == EINTR)
				continue;
			return 1;
		}
		serve(fd, payload, lines);
		close(fd);
	}
}
