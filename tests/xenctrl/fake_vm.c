/* A stand-in for a running VM's control socket that answers 'info' with a payload read from a file, so libkapsel-xenctrl is tested without KVM. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
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
	if (argc != 3) {
		fprintf(stderr, "usage: fake_vm SOCKET PAYLOAD_FILE\n");
		return 2;
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
