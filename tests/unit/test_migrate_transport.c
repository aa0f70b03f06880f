/* Unit tests of the migration transport: TLS-PSK round trip, wrong key, plain peer, tampered stream, silent peer, key files and --incoming options. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cunit_main.h"
#include "state/migrate_transport.h"

#define KEY_A "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define KEY_B "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"
#define PAYLOAD_BYTES (256u * 1024u)
#define MARKER "KAPSEL-SECRET-GUEST-PAGE"

static char dir[] = "/tmp/kapsel-test-transport-XXXXXX";

static const char *key_file(const char *name, const char *content, mode_t mode)
{
	static char paths[8][256];
	static unsigned next;
	char *path = paths[next++ % 8];
	snprintf(path, 256, "%s/%s", dir, name);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL(write(fd, content, strlen(content)), (ssize_t)strlen(content));
	close(fd);
	CU_ASSERT_EQUAL(chmod(path, mode), 0);
	return path;
}

static struct migrate_security psk_security(const char *path)
{
	struct migrate_security s = { .mode = MIGRATE_SECURITY_PSK };
	snprintf(s.psk_path, sizeof(s.psk_path), "%s", path);
	return s;
}

static void fill_payload(uint8_t *data, size_t length)
{
	for (size_t i = 0; i < length; i++)
		data[i] = (uint8_t)(i * 7 + (i >> 9));
	/* A recognizable plaintext that must not appear on the wire. */
	for (size_t i = 0; i + sizeof(MARKER) < length; i += 4096)
		memcpy(data + i, MARKER, sizeof(MARKER) - 1);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- One side of a connection on a thread ------------------------------------ */

enum peer_action {
	PEER_SEND,
	PEER_RECEIVE
};

struct peer {
	int fd;
	bool server;
	struct migrate_security security;
	int timeout_ms;
	enum peer_action action;
	int handshake_rc;
	int io_rc;
	char error[512];
	char io_error[512];
	bool received_ok;
	pthread_t thread;
};

static void *peer_main(void *opaque)
{
	struct peer *p = opaque;
	struct migrate_transport *t = NULL;
	p->handshake_rc =
		p->server
			? migrate_transport_server(p->fd, &p->security, p->timeout_ms,
						   "the test peer", &t, p->error, sizeof(p->error))
			: migrate_transport_client(p->fd, &p->security, p->timeout_ms,
						   "the test peer", &t, p->error, sizeof(p->error));
	if (p->handshake_rc)
		return NULL;
	uint8_t *data = malloc(PAYLOAD_BYTES);
	uint8_t *expected = malloc(PAYLOAD_BYTES);
	fill_payload(expected, PAYLOAD_BYTES);
	if (p->action == PEER_SEND) {
		p->io_rc = migrate_transport_write(t, expected, PAYLOAD_BYTES);
		if (!p->io_rc) {
			uint8_t ack;
			p->io_rc = migrate_transport_read_exact(t, &ack, 1);
			p->received_ok = !p->io_rc && ack == 0xa5;
		}
	} else {
		p->io_rc = migrate_transport_read_exact(t, data, PAYLOAD_BYTES);
		p->received_ok = !p->io_rc && memcmp(data, expected, PAYLOAD_BYTES) == 0;
		if (p->received_ok) {
			uint8_t ack = 0xa5;
			p->io_rc = migrate_transport_write(t, &ack, 1);
		}
	}
	snprintf(p->io_error, sizeof(p->io_error), "%s", migrate_transport_error(t));
	migrate_transport_close(t);
	free(data);
	free(expected);
	return NULL;
}

static void peer_start(struct peer *p, int fd, bool server, struct migrate_security security,
		       enum peer_action action)
{
	memset(p, 0, sizeof(*p));
	p->fd = fd;
	p->server = server;
	p->security = security;
	p->timeout_ms = 5000;
	p->action = action;
	CU_ASSERT_FATAL(pthread_create(&p->thread, NULL, peer_main, p) == 0);
}

/* ---- A man in the middle that copies (and maybe changes) bytes ---------------- */

struct proxy {
	int client_side, server_side;
	uint64_t flip_at; /* client-to-server byte to change; 0 = none */
	uint64_t forwarded;
	bool marker_seen;
	pthread_t thread;
};

static void *proxy_main(void *opaque)
{
	struct proxy *x = opaque;
	uint8_t buf[8192];
	for (;;) {
		struct pollfd fds[2] = { { .fd = x->client_side, .events = POLLIN },
					 { .fd = x->server_side, .events = POLLIN } };
		if (poll(fds, 2, 10000) <= 0)
			break;
		int from = (fds[0].revents & (POLLIN | POLLHUP)) ? 0 : 1;
		int in = from == 0 ? x->client_side : x->server_side;
		int out = from == 0 ? x->server_side : x->client_side;
		ssize_t n = read(in, buf, sizeof(buf));
		if (n <= 0)
			break;
		if (memmem(buf, (size_t)n, MARKER, sizeof(MARKER) - 1))
			x->marker_seen = true;
		if (from == 0) {
			if (x->flip_at && x->flip_at >= x->forwarded &&
			    x->flip_at < x->forwarded + (uint64_t)n)
				buf[x->flip_at - x->forwarded] ^= 0x01;
			x->forwarded += (uint64_t)n;
		}
		if (send(out, buf, (size_t)n, MSG_NOSIGNAL) != n)
			break;
	}
	close(x->client_side);
	close(x->server_side);
	return NULL;
}

/* client <-> proxy <-> server over two socket pairs. */
static void proxy_start(struct proxy *x, int *client_fd, int *server_fd, uint64_t flip_at)
{
	int a[2], b[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) == 0);
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) == 0);
	memset(x, 0, sizeof(*x));
	*client_fd = a[0];
	x->client_side = a[1];
	x->server_side = b[0];
	*server_fd = b[1];
	x->flip_at = flip_at;
	CU_ASSERT_FATAL(pthread_create(&x->thread, NULL, proxy_main, x) == 0);
}

/* ---- Tests ------------------------------------------------------------------- */

static void test_right_key_round_trip(void)
{
	const char *key = key_file("good.psk", "kapsel:" KEY_A "\n", 0600);
	int client_fd, server_fd;
	struct proxy x;
	proxy_start(&x, &client_fd, &server_fd, 0);
	struct peer server, client;
	peer_start(&server, server_fd, true, psk_security(key), PEER_RECEIVE);
	peer_start(&client, client_fd, false, psk_security(key), PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	pthread_join(x.thread, NULL);
	CU_ASSERT_EQUAL(server.handshake_rc, 0);
	CU_ASSERT_EQUAL(client.handshake_rc, 0);
	CU_ASSERT_EQUAL(server.io_rc, 0);
	CU_ASSERT_EQUAL(client.io_rc, 0);
	CU_ASSERT_TRUE(server.received_ok);
	CU_ASSERT_TRUE(client.received_ok);
	/* Confidentiality: the guest data crossed the wire, but not in clear. */
	CU_ASSERT_TRUE(x.forwarded > PAYLOAD_BYTES);
	CU_ASSERT_FALSE(x.marker_seen);
}

static void test_insecure_round_trip_is_plain(void)
{
	struct migrate_security plain = { .mode = MIGRATE_SECURITY_INSECURE };
	int client_fd, server_fd;
	struct proxy x;
	proxy_start(&x, &client_fd, &server_fd, 0);
	struct peer server, client;
	peer_start(&server, server_fd, true, plain, PEER_RECEIVE);
	peer_start(&client, client_fd, false, plain, PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	pthread_join(x.thread, NULL);
	CU_ASSERT_TRUE(server.received_ok);
	CU_ASSERT_TRUE(client.received_ok);
	/* The proxy's marker check works: in plain TCP it sees the data. */
	CU_ASSERT_TRUE(x.marker_seen);
}

static void test_wrong_key_fails_both_sides(void)
{
	const char *key_a = key_file("a.psk", KEY_A, 0600);
	const char *key_b = key_file("b.psk", KEY_B, 0600);
	int fds[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	struct peer server, client;
	peer_start(&server, fds[0], true, psk_security(key_a), PEER_RECEIVE);
	peer_start(&client, fds[1], false, psk_security(key_b), PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	CU_ASSERT_EQUAL(server.handshake_rc, -EACCES);
	CU_ASSERT_EQUAL(client.handshake_rc, -EACCES);
	CU_ASSERT_PTR_NOT_NULL(strstr(server.error, "pre-shared key"));
	CU_ASSERT_PTR_NOT_NULL(strstr(client.error, "pre-shared key"));
	CU_ASSERT_FALSE(server.received_ok);
	if (server.handshake_rc != -EACCES || !strstr(client.error, "key"))
		fprintf(stderr, "\nserver: %d %s\nclient: %d %s\n", server.handshake_rc,
			server.error, client.handshake_rc, client.error);
}

static void test_wrong_identity_fails(void)
{
	const char *key_a = key_file("id-a.psk", "alice:" KEY_A, 0600);
	const char *key_b = key_file("id-b.psk", "mallory:" KEY_A, 0600);
	int fds[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	struct peer server, client;
	peer_start(&server, fds[0], true, psk_security(key_a), PEER_RECEIVE);
	peer_start(&client, fds[1], false, psk_security(key_b), PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	CU_ASSERT_EQUAL(server.handshake_rc, -EACCES);
	CU_ASSERT_EQUAL(client.handshake_rc, -EACCES);
	CU_ASSERT_FALSE(server.received_ok);
	if (server.handshake_rc != -EACCES || client.handshake_rc != -EACCES)
		fprintf(stderr, "\nserver: %d %s\nclient: %d %s\n", server.handshake_rc,
			server.error, client.handshake_rc, client.error);
}

static void test_plain_client_against_psk_server(void)
{
	const char *key = key_file("srv.psk", KEY_A, 0600);
	struct migrate_security plain = { .mode = MIGRATE_SECURITY_INSECURE };
	int fds[2];
	CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
	struct peer server, client;
	peer_start(&server, fds[0], true, psk_security(key), PEER_RECEIVE);
	peer_start(&client, fds[1], false, plain, PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	CU_ASSERT_EQUAL(server.handshake_rc, -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(server.error, "does not speak TLS"));
	CU_ASSERT_FALSE(server.received_ok);
	/* The plain client never gets the acknowledgement. */
	CU_ASSERT_FALSE(client.received_ok);
}

static void test_flipped_byte_detected(void)
{
	const char *key = key_file("flip.psk", KEY_A, 0600);
	int client_fd, server_fd;
	struct proxy x;
	/* Well past the handshake (a few hundred bytes): inside the data. */
	proxy_start(&x, &client_fd, &server_fd, 100000);
	struct peer server, client;
	peer_start(&server, server_fd, true, psk_security(key), PEER_RECEIVE);
	peer_start(&client, client_fd, false, psk_security(key), PEER_SEND);
	pthread_join(client.thread, NULL);
	pthread_join(server.thread, NULL);
	pthread_join(x.thread, NULL);
	CU_ASSERT_EQUAL(server.handshake_rc, 0);
	CU_ASSERT_EQUAL(server.io_rc, -EBADMSG);
	CU_ASSERT_PTR_NOT_NULL(strstr(server.io_error, "integrity"));
	CU_ASSERT_FALSE(server.received_ok);
	CU_ASSERT_FALSE(client.received_ok);
	CU_ASSERT_TRUE(x.forwarded > 100000);
}

static void test_handshake_times_out_on_silent_peer(void)
{
	const char *key = key_file("silent.psk", KEY_A, 0600);
	for (int server = 0; server <= 1; server++) {
		int fds[2];
		CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
		struct migrate_security s = psk_security(key);
		struct migrate_transport *t = (void *)1;
		char error[512] = "";
		uint64_t start = now_ms();
		int rc = server ? migrate_transport_server(fds[0], &s, 300, "the silent peer", &t,
							   error, sizeof(error))
				: migrate_transport_client(fds[0], &s, 300, "the silent peer", &t,
							   error, sizeof(error));
		uint64_t took = now_ms() - start;
		CU_ASSERT_EQUAL(rc, -ETIMEDOUT);
		CU_ASSERT_PTR_NULL(t);
		CU_ASSERT_PTR_NOT_NULL(strstr(error, "no answer within 300 ms"));
		CU_ASSERT_TRUE(took >= 250 && took < 3000);
		close(fds[1]);
	}
}

static void test_key_files(void)
{
	struct migrate_psk psk;
	char error[512];
	/* World-readable: refused, and the message says how to fix it. */
	const char *open_key = key_file("open.psk", KEY_A, 0644);
	CU_ASSERT_EQUAL(migrate_psk_load(open_key, &psk, error, sizeof(error)), -EACCES);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "chmod 600"));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "0644"));
	const char *group_key = key_file("group.psk", KEY_A, 0640);
	CU_ASSERT_EQUAL(migrate_psk_load(group_key, &psk, error, sizeof(error)), -EACCES);
	/* Too short a key. */
	const char *short_key = key_file("short.psk", "00112233", 0600);
	CU_ASSERT_EQUAL(migrate_psk_load(short_key, &psk, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "16 to 64 bytes"));
	const char *bad_hex = key_file("badhex.psk", "zz112233445566778899aabbccddeeff", 0600);
	CU_ASSERT_EQUAL(migrate_psk_load(bad_hex, &psk, error, sizeof(error)), -EINVAL);
	/* psktool's format and a bare key. */
	const char *named = key_file("named.psk", "site-a:" KEY_B "\n", 0400);
	CU_ASSERT_EQUAL(migrate_psk_load(named, &psk, error, sizeof(error)), 0);
	CU_ASSERT_STRING_EQUAL(psk.identity, "site-a");
	CU_ASSERT_EQUAL(psk.key_bytes, 32);
	CU_ASSERT_EQUAL(psk.key[0], 0xff);
	CU_ASSERT_EQUAL(psk.key[31], 0x00);
	const char *bare = key_file("bare.psk", KEY_A, 0600);
	CU_ASSERT_EQUAL(migrate_psk_load(bare, &psk, error, sizeof(error)), 0);
	CU_ASSERT_STRING_EQUAL(psk.identity, "kapsel");
	CU_ASSERT_EQUAL(psk.key[1], 0x11);
	/* Not a file. */
	CU_ASSERT_EQUAL(migrate_psk_load(dir, &psk, error, sizeof(error)), -EINVAL);
	char missing[300];
	snprintf(missing, sizeof(missing), "%s/missing.psk", dir);
	CU_ASSERT_EQUAL(migrate_psk_load(missing, &psk, error, sizeof(error)), -ENOENT);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, missing));
}

static void test_security_must_be_chosen(void)
{
	char uri[256], error[512];
	struct migrate_security s;
	CU_ASSERT_EQUAL(migrate_spec_parse("tcp:0.0.0.0:4444", uri, sizeof(uri), &s, error,
					   sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "psk=FILE"));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "insecure"));
	CU_ASSERT_EQUAL(migrate_spec_parse("tcp:0.0.0.0:4444,psk=/k/f.psk", uri, sizeof(uri), &s,
					   error, sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(uri, "tcp:0.0.0.0:4444");
	CU_ASSERT_EQUAL(s.mode, MIGRATE_SECURITY_PSK);
	CU_ASSERT_STRING_EQUAL(s.psk_path, "/k/f.psk");
	CU_ASSERT_EQUAL(migrate_spec_parse("tcp:[::1]:4444,insecure", uri, sizeof(uri), &s, error,
					   sizeof(error)),
			0);
	CU_ASSERT_EQUAL(s.mode, MIGRATE_SECURITY_INSECURE);
	CU_ASSERT_STRING_EQUAL(uri, "tcp:[::1]:4444");
	CU_ASSERT_EQUAL(migrate_spec_parse("tcp:h:1,psk=/k,insecure", uri, sizeof(uri), &s, error,
					   sizeof(error)),
			-EINVAL);
	CU_ASSERT_EQUAL(migrate_spec_parse("tcp:h:1,tls", uri, sizeof(uri), &s, error,
					   sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "unknown option 'tls'"));
	/* The source refuses to connect without a choice, before any network. */
	struct migrate_transport *t = NULL;
	struct migrate_security unset = { .mode = MIGRATE_SECURITY_UNSET };
	CU_ASSERT_EQUAL(migrate_transport_connect("tcp:127.0.0.1:1", &unset, 100, &t, error,
						  sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--psk FILE"));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--insecure"));
	/* And a world-readable key stops it too. */
	const char *open_key = key_file("open2.psk", KEY_A, 0604);
	struct migrate_security bad = psk_security(open_key);
	CU_ASSERT_EQUAL(migrate_transport_connect("tcp:127.0.0.1:1", &bad, 100, &t, error,
						  sizeof(error)),
			-EACCES);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "chmod 600"));
}

int main(void)
{
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	static const struct unit_test tests[] = {
		{ "right key: data round-trips, encrypted", test_right_key_round_trip },
		{ "insecure: plain TCP (the proxy sees the data)",
		  test_insecure_round_trip_is_plain },
		{ "wrong key fails on both sides", test_wrong_key_fails_both_sides },
		{ "unknown identity fails", test_wrong_identity_fails },
		{ "plain-TCP client against a PSK server", test_plain_client_against_psk_server },
		{ "a flipped byte in the TLS stream is detected", test_flipped_byte_detected },
		{ "handshake times out against a silent peer",
		  test_handshake_times_out_on_silent_peer },
		{ "key files: permissions, format, length", test_key_files },
		{ "security must be chosen (psk or insecure)", test_security_must_be_chosen },
	};
	int status = UNIT_RUN("migrate_transport", tests);
	char command[300];
	snprintf(command, sizeof(command), "rm -rf '%s'", dir);
	if (system(command) != 0)
		fprintf(stderr, "could not remove %s\n", dir);
	return status;
}
