/* Test helper: a raw Unix-socket client (send stdin, print what comes back) for control-socket tests without socat. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/*
 * sockclient SOCKET [--keep-open] [--hold-ms N] [--read-ms N]
 *   Connects to SOCKET, sends all of stdin as is, then (unless --keep-open)
 *   half-closes its sending side.  With --hold-ms it then sleeps N ms
 *   without reading (a hung client).  It prints everything the server sends
 *   until EOF or --read-ms of silence (default 5000) and exits 0 when the
 *   server closed the connection, 3 when it was still open, 1 when the
 *   connection failed (printing "connect: ERRNO").
 */
int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr,
			"usage: sockclient SOCKET [--keep-open] [--hold-ms N] [--read-ms N]\n");
		return 2;
	}
	int hold_ms = 0, read_ms = 5000;
	int keep_open = 0;
	for (int i = 2; i < argc; i++) {
		if (strcmp(argv[i], "--keep-open") == 0)
			keep_open = 1;
		else if (strcmp(argv[i], "--hold-ms") == 0 && i + 1 < argc)
			hold_ms = atoi(argv[++i]);
		else if (strcmp(argv[i], "--read-ms") == 0 && i + 1 < argc)
			read_ms = atoi(argv[++i]);
		else {
			fprintf(stderr, "sockclient: bad argument '%s'\n", argv[i]);
			return 2;
		}
	}
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", argv[1]);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		printf("connect: %s\n", strerrorname_np(errno));
		return 1;
	}
	char buf[65536];
	ssize_t n;
	while ((n = read(STDIN_FILENO, buf, sizeof(buf))) > 0) {
		for (ssize_t done = 0; done < n;) {
			ssize_t w = send(fd, buf + done, (size_t)(n - done), MSG_NOSIGNAL);
			if (w <= 0)
				goto sent; /* the server closed on us; read what it said */
			done += w;
		}
	}
sent:
	if (!keep_open)
		shutdown(fd, SHUT_WR);
	if (hold_ms > 0) {
		struct timespec ts = { hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int rc = poll(&pfd, 1, read_ms);
		if (rc <= 0)
			return 3;
		n = read(fd, buf, sizeof(buf));
		if (n <= 0)
			break;
		fwrite(buf, 1, (size_t)n, stdout);
		fflush(stdout);
	}
	return 0;
}
