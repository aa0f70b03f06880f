/* The migration connection: TCP connect/accept, and TLS 1.3 with a pre-shared key (GnuTLS) or, when the operator says so, plain TCP. */
#define _GNU_SOURCE
#include "state/migrate_transport.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/error_text.h"
#include "state/migrate.h"

/*
 * TLS 1.3 only, key exchange only with the pre-shared key combined with
 * (EC)DHE (forward secrecy: a key stolen later does not decrypt a recorded
 * migration), AEAD ciphers of GnuTLS' SECURE128 set.
 */
#define MIGRATE_TLS_PRIORITY "SECURE128:-VERS-ALL:+VERS-TLS1.3:-KX-ALL:+ECDHE-PSK:+DHE-PSK"
#define MIGRATE_PSK_DEFAULT_IDENTITY "kapsel"

struct migrate_transport {
	int fd;
	int timeout_ms;
	char peer[160];
	char psk_path[4096];
	gnutls_session_t session; /* NULL: plain TCP */
	gnutls_psk_client_credentials_t client_credentials;
	gnutls_psk_server_credentials_t server_credentials;
	struct migrate_psk psk;
	char error[512];
};

static uint64_t monotonic_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- Key files and options ------------------------------------------------------ */

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int migrate_psk_load(const char *path, struct migrate_psk *psk, char *error, size_t error_len)
{
	memset(psk, 0, sizeof(*psk));
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return kapsel_fail(error, error_len, -errno, "cannot open the PSK file '%s': %s",
				   path, strerror(errno));
	/* fstat the open file: what is checked is what is read. */
	struct stat st;
	char text[512] = "";
	int err = 0;
	if (fstat(fd, &st) < 0) {
		err = kapsel_fail(error, error_len, -errno, "cannot stat the PSK file '%s': %s",
				  path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		err = kapsel_fail(error, error_len, -EINVAL,
				  "the PSK file '%s' is not a regular file", path);
		goto out;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		err = kapsel_fail(
			error, error_len, -EACCES,
			"the PSK file '%s' belongs to uid %u, not to you (uid %u) or root; another user could have written it",
			path, (unsigned)st.st_uid, (unsigned)geteuid());
		goto out;
	}
	if (st.st_mode & 0077) {
		err = kapsel_fail(
			error, error_len, -EACCES,
			"the PSK file '%s' is open to other users (mode %04o); anyone who reads it can send or receive your VMs: run 'chmod 600 %s'",
			path, (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	ssize_t n = read(fd, text, sizeof(text) - 1);
	if (n < 0) {
		err = kapsel_fail(error, error_len, -errno, "cannot read the PSK file '%s': %s",
				  path, strerror(errno));
		goto out;
	}
	text[n] = '\0';
	size_t len = (size_t)n;
	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	const char *hex = text;
	char *colon = strchr(text, ':');
	if (colon) {
		size_t id_len = (size_t)(colon - text);
		if (id_len == 0 || id_len >= sizeof(psk->identity)) {
			err = kapsel_fail(
				error, error_len, -EINVAL,
				"the PSK file '%s': the identity before ':' must be 1..%zu characters",
				path, sizeof(psk->identity) - 1);
			goto out;
		}
		for (size_t i = 0; i < id_len; i++)
			if ((unsigned char)text[i] <= 0x20 || (unsigned char)text[i] >= 0x7f) {
				err = kapsel_fail(
					error, error_len, -EINVAL,
					"the PSK file '%s': the identity is not printable ASCII",
					path);
				goto out;
			}
		memcpy(psk->identity, text, id_len);
		hex = colon + 1;
	} else {
		snprintf(psk->identity, sizeof(psk->identity), "%s", MIGRATE_PSK_DEFAULT_IDENTITY);
	}
	size_t hex_len = strlen(hex);
	if (hex_len % 2 || hex_len / 2 < MIGRATE_PSK_MIN_BYTES ||
	    hex_len / 2 > MIGRATE_PSK_MAX_BYTES) {
		err = kapsel_fail(
			error, error_len, -EINVAL,
			"the PSK file '%s' must hold one line [IDENTITY:]HEXKEY with a key of %u to %u bytes (%u to %u hex digits); make one with: (umask 077; od -An -tx1 -N32 /dev/urandom | tr -d ' \\n' > FILE)",
			path, MIGRATE_PSK_MIN_BYTES, MIGRATE_PSK_MAX_BYTES,
			2 * MIGRATE_PSK_MIN_BYTES, 2 * MIGRATE_PSK_MAX_BYTES);
		goto out;
	}
	for (size_t i = 0; i < hex_len; i += 2) {
		int hi = hex_value(hex[i]), lo = hex_value(hex[i + 1]);
		if (hi < 0 || lo < 0) {
			err = kapsel_fail(error, error_len, -EINVAL,
					  "the PSK file '%s': the key has a non-hex character",
					  path);
			goto out;
		}
		psk->key[i / 2] = (uint8_t)(hi << 4 | lo);
	}
	psk->key_bytes = hex_len / 2;
out:
	explicit_bzero(text, sizeof(text));
	if (err)
		explicit_bzero(psk, sizeof(*psk));
	close(fd);
	return err;
}

int migrate_spec_parse(const char *spec, char *uri, size_t uri_len,
		       struct migrate_security *security, char *error, size_t error_len)
{
	memset(security, 0, sizeof(*security));
	const char *comma = strchr(spec, ',');
	size_t address_len = comma ? (size_t)(comma - spec) : strlen(spec);
	if (address_len >= uri_len)
		return kapsel_fail(error, error_len, -EINVAL, "--incoming '%s' is too long", spec);
	memcpy(uri, spec, address_len);
	uri[address_len] = '\0';
	while (comma) {
		const char *option = comma + 1;
		comma = strchr(option, ',');
		size_t option_len = comma ? (size_t)(comma - option) : strlen(option);
		if (option_len == 8 && strncmp(option, "insecure", 8) == 0) {
			if (security->mode == MIGRATE_SECURITY_PSK)
				goto both;
			security->mode = MIGRATE_SECURITY_INSECURE;
		} else if (option_len > 4 && strncmp(option, "psk=", 4) == 0) {
			if (security->mode == MIGRATE_SECURITY_INSECURE)
				goto both;
			if (option_len - 4 >= sizeof(security->psk_path))
				return kapsel_fail(error, error_len, -ENAMETOOLONG,
						   "--incoming: the psk= path is too long");
			memcpy(security->psk_path, option + 4, option_len - 4);
			security->psk_path[option_len - 4] = '\0';
			security->mode = MIGRATE_SECURITY_PSK;
		} else {
			return kapsel_fail(
				error, error_len, -EINVAL,
				"--incoming '%s': unknown option '%.*s'; it takes psk=FILE or insecure",
				spec, (int)option_len, option);
		}
	}
	if (security->mode == MIGRATE_SECURITY_UNSET)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"--incoming '%s' does not say how to protect the migration: add ',psk=FILE' (TLS with a pre-shared key that the source also has) or ',insecure' (plain TCP: anyone who reaches the port can send a VM)",
			spec);
	return 0;
both:
	return kapsel_fail(error, error_len, -EINVAL,
			   "--incoming '%s': psk= and insecure exclude each other", spec);
}

/* ---- Sessions ----------------------------------------------------------------- */

static void set_socket_timeouts(int fd, int timeout_ms)
{
	struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void migrate_transport_set_timeout(struct migrate_transport *t, int timeout_ms)
{
	t->timeout_ms = timeout_ms;
	set_socket_timeouts(t->fd, timeout_ms);
	if (t->session)
		gnutls_record_set_timeout(t->session, (unsigned)timeout_ms);
}

/*
 * The server's key lookup: only the identity of our file is known.  An
 * unknown identity gets a random key, so that it fails exactly like a
 * wrong key and a peer cannot probe which identities exist.
 */
static int server_psk_lookup(gnutls_session_t session, const char *identity, gnutls_datum_t *key)
{
	struct migrate_transport *t = gnutls_session_get_ptr(session);
	if (!t)
		return -1;
	key->data = gnutls_malloc(t->psk.key_bytes);
	if (!key->data)
		return -1;
	key->size = (unsigned)t->psk.key_bytes;
	if (strcmp(identity, t->psk.identity) == 0)
		memcpy(key->data, t->psk.key, t->psk.key_bytes);
	else if (gnutls_rnd(GNUTLS_RND_NONCE, key->data, key->size) < 0)
		return -1;
	return 0;
}

/* A user-facing explanation of a failed handshake. */
static int handshake_failure(struct migrate_transport *t, int rc, bool server, char *error,
			     size_t error_len)
{
	const char *what = gnutls_strerror(rc);
	if (rc == GNUTLS_E_TIMEDOUT || rc == GNUTLS_E_AGAIN)
		return kapsel_fail(
			error, error_len, -ETIMEDOUT,
			"TLS handshake with %s: no answer within %d ms (is a Kapsel migration with --psk on the other end?)",
			t->peer, t->timeout_ms);
	if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
		gnutls_alert_description_t alert = gnutls_alert_get(t->session);
		if (alert == GNUTLS_A_DECRYPT_ERROR || alert == GNUTLS_A_UNKNOWN_PSK_IDENTITY ||
		    alert == GNUTLS_A_BAD_RECORD_MAC || alert == GNUTLS_A_HANDSHAKE_FAILURE ||
		    alert == GNUTLS_A_ILLEGAL_PARAMETER)
			return kapsel_fail(
				error, error_len, -EACCES,
				"TLS handshake with %s failed: the peer refused our key (%s); both sides need the same pre-shared key file (%s here)",
				t->peer, gnutls_alert_get_name(alert), t->psk_path);
		return kapsel_fail(error, error_len, -EPROTO,
				   "TLS handshake with %s failed: the peer sent the alert '%s'",
				   t->peer, gnutls_alert_get_name(alert));
	}
	/* A wrong key shows as a PSK binder that does not verify, which
	 * GnuTLS reports as an illegal parameter; an unknown identity as
	 * missing credentials. */
	if (rc == GNUTLS_E_DECRYPTION_FAILED || rc == GNUTLS_E_KEY_USAGE_VIOLATION ||
	    rc == GNUTLS_E_RECEIVED_ILLEGAL_PARAMETER || rc == GNUTLS_E_ILLEGAL_PARAMETER ||
	    rc == GNUTLS_E_USER_ERROR || rc == GNUTLS_E_MAC_VERIFY_FAILED ||
	    rc == GNUTLS_E_BAD_COOKIE || rc == GNUTLS_E_INSUFFICIENT_CREDENTIALS)
		return kapsel_fail(
			error, error_len, -EACCES,
			"TLS handshake with %s failed: the peer does not hold the same pre-shared key as '%s' (%s); refusing it",
			t->peer, t->psk_path, what);
	if (rc == GNUTLS_E_UNEXPECTED_PACKET_LENGTH || rc == GNUTLS_E_UNEXPECTED_PACKET ||
	    rc == GNUTLS_E_UNSUPPORTED_VERSION_PACKET || rc == GNUTLS_E_PREMATURE_TERMINATION ||
	    rc == GNUTLS_E_UNEXPECTED_HANDSHAKE_PACKET || rc == GNUTLS_E_PULL_ERROR ||
	    rc == GNUTLS_E_PUSH_ERROR || rc == GNUTLS_E_UNKNOWN_CIPHER_SUITE)
		return kapsel_fail(
			error, error_len, -EPROTO,
			"TLS handshake with %s failed (%s): the peer does not speak TLS with a pre-shared key; %s",
			t->peer, what,
			server ? "start 'kapsel migrate' on the source with --psk and the same key file, not --insecure"
			       : "start the destination with 'kapsel run --incoming tcp:ADDR:PORT,psk=FILE' and the same key file");
	return kapsel_fail(error, error_len, -EPROTO, "TLS handshake with %s failed: %s", t->peer,
			   what);
}

static int transport_new(int fd, const struct migrate_security *security, int timeout_ms,
			 const char *peer, bool server, struct migrate_transport **out, char *error,
			 size_t error_len)
{
	*out = NULL;
	if (!security || (security->mode != MIGRATE_SECURITY_PSK &&
			  security->mode != MIGRATE_SECURITY_INSECURE)) {
		close(fd);
		return kapsel_fail(
			error, error_len, -EINVAL,
			"the migration is neither protected by a pre-shared key (--psk FILE) nor explicitly insecure (--insecure)");
	}
	struct migrate_transport *t = calloc(1, sizeof(*t));
	if (!t) {
		close(fd);
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	}
	t->fd = fd;
	t->timeout_ms = timeout_ms;
	snprintf(t->peer, sizeof(t->peer), "%s", peer ? peer : "the peer");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on socketpairs */
	set_socket_timeouts(fd, timeout_ms);
	if (security->mode == MIGRATE_SECURITY_INSECURE) {
		*out = t;
		return 0;
	}

	snprintf(t->psk_path, sizeof(t->psk_path), "%s", security->psk_path);
	int err = migrate_psk_load(security->psk_path, &t->psk, error, error_len);
	if (err)
		goto fail;
	int rc = gnutls_init(&t->session,
			     (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_SIGNAL);
	if (rc < 0) {
		t->session = NULL;
		err = kapsel_fail(error, error_len, -ENOMEM, "GnuTLS: %s", gnutls_strerror(rc));
		goto fail;
	}
	gnutls_session_set_ptr(t->session, t);
	const char *error_position = NULL;
	rc = gnutls_priority_set_direct(t->session, MIGRATE_TLS_PRIORITY, &error_position);
	if (rc < 0) {
		err = kapsel_fail(error, error_len, -EINVAL, "GnuTLS priority '%s': %s",
				  MIGRATE_TLS_PRIORITY, gnutls_strerror(rc));
		goto fail;
	}
	if (server) {
		rc = gnutls_psk_allocate_server_credentials(&t->server_credentials);
		if (rc >= 0) {
			gnutls_psk_set_server_credentials_function(t->server_credentials,
								   server_psk_lookup);
			rc = gnutls_credentials_set(t->session, GNUTLS_CRD_PSK,
						    t->server_credentials);
		}
	} else {
		rc = gnutls_psk_allocate_client_credentials(&t->client_credentials);
		if (rc >= 0) {
			gnutls_datum_t key = { .data = t->psk.key,
					       .size = (unsigned)t->psk.key_bytes };
			rc = gnutls_psk_set_client_credentials(t->client_credentials,
							       t->psk.identity, &key,
							       GNUTLS_PSK_KEY_RAW);
		}
		if (rc >= 0)
			rc = gnutls_credentials_set(t->session, GNUTLS_CRD_PSK,
						    t->client_credentials);
	}
	if (rc < 0) {
		err = kapsel_fail(error, error_len, -ENOMEM, "GnuTLS PSK credentials: %s",
				  gnutls_strerror(rc));
		goto fail;
	}
	gnutls_transport_set_int(t->session, fd);
	gnutls_handshake_set_timeout(t->session, (unsigned)timeout_ms);
	gnutls_record_set_timeout(t->session, (unsigned)timeout_ms);
	do {
		rc = gnutls_handshake(t->session);
	} while (rc < 0 && !gnutls_error_is_fatal(rc) && rc != GNUTLS_E_AGAIN);
	if (rc < 0) {
		/* Tell the peer why (best effort), so that it does not just see
		 * the connection close. */
		if (rc != GNUTLS_E_FATAL_ALERT_RECEIVED && rc != GNUTLS_E_TIMEDOUT &&
		    rc != GNUTLS_E_AGAIN && rc != GNUTLS_E_PREMATURE_TERMINATION &&
		    rc != GNUTLS_E_PUSH_ERROR && rc != GNUTLS_E_PULL_ERROR)
			gnutls_alert_send_appropriate(t->session, rc);
		err = handshake_failure(t, rc, server, error, error_len);
		goto fail;
	}
	*out = t;
	return 0;

fail:
	migrate_transport_close(t);
	return err;
}

int migrate_transport_client(int fd, const struct migrate_security *security, int timeout_ms,
			     const char *peer, struct migrate_transport **out, char *error,
			     size_t error_len)
{
	return transport_new(fd, security, timeout_ms, peer, false, out, error, error_len);
}

int migrate_transport_server(int fd, const struct migrate_security *security, int timeout_ms,
			     const char *peer, struct migrate_transport **out, char *error,
			     size_t error_len)
{
	return transport_new(fd, security, timeout_ms, peer, true, out, error, error_len);
}

/* ---- Connecting and accepting ----------------------------------------------------- */

int migrate_transport_connect(const char *uri, const struct migrate_security *security,
			      int timeout_ms, struct migrate_transport **out, char *error,
			      size_t error_len)
{
	*out = NULL;
	if (!security || security->mode == MIGRATE_SECURITY_UNSET)
		return kapsel_fail(
			error, error_len, -EINVAL,
			"migrating to %s needs --psk FILE (TLS with a pre-shared key that the destination's --incoming ...,psk=FILE also has) or, on a network you trust completely, --insecure (plain TCP)",
			uri);
	if (security->mode == MIGRATE_SECURITY_PSK) {
		/* Check the key before connecting: a bad file is the operator's
		 * to fix, not the destination's. */
		struct migrate_psk psk;
		int err = migrate_psk_load(security->psk_path, &psk, error, error_len);
		explicit_bzero(&psk, sizeof(psk));
		if (err)
			return err;
	}
	char host[256], port[16];
	if (migrate_parse_uri(uri, host, sizeof(host), port, sizeof(port)) < 0)
		return kapsel_fail(error, error_len, -EINVAL,
				   "migration target '%s' is not tcp:HOST:PORT", uri);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *list;
	int rc = getaddrinfo(host, port, &hints, &list);
	if (rc)
		return kapsel_fail(error, error_len, -EHOSTUNREACH, "cannot resolve '%s': %s", host,
				   gai_strerror(rc));
	int fd = -1, err = -ECONNREFUSED;
	for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			continue;
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
			struct pollfd pfd = { .fd = fd, .events = POLLOUT };
			int so_error = ETIMEDOUT;
			socklen_t len = sizeof(so_error);
			if (poll(&pfd, 1, timeout_ms) == 1)
				getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
			if (so_error == 0)
				break;
			err = -so_error;
		} else {
			err = -errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(list);
	if (fd < 0)
		return kapsel_fail(
			error, error_len, err,
			"cannot connect to %s: %s (is 'kapsel run --incoming %s,...' waiting there?)",
			uri, strerror(-err), uri);
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return migrate_transport_client(fd, security, timeout_ms, uri, out, error, error_len);
}

int migrate_transport_accept(const char *spec, int timeout_ms, struct migrate_transport **out,
			     char *error, size_t error_len)
{
	*out = NULL;
	char uri[512], host[256], port[16];
	struct migrate_security security;
	int err = migrate_spec_parse(spec, uri, sizeof(uri), &security, error, error_len);
	if (err)
		return err;
	if (security.mode == MIGRATE_SECURITY_PSK) {
		struct migrate_psk psk;
		err = migrate_psk_load(security.psk_path, &psk, error, error_len);
		explicit_bzero(&psk, sizeof(psk));
		if (err)
			return err;
	}
	if (migrate_parse_uri(uri, host, sizeof(host), port, sizeof(port)) < 0)
		return kapsel_fail(error, error_len, -EINVAL,
				   "--incoming '%s' is not tcp:ADDR:PORT", uri);
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE };
	struct addrinfo *list;
	int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &list);
	if (rc)
		return kapsel_fail(error, error_len, -EADDRNOTAVAIL, "cannot resolve '%s': %s",
				   host, gai_strerror(rc));
	int listener = -1;
	err = -EADDRNOTAVAIL;
	for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
		listener = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
		if (listener < 0)
			continue;
		int one = 1;
		setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(listener, ai->ai_addr, ai->ai_addrlen) == 0 && listen(listener, 1) == 0)
			break;
		err = -errno;
		close(listener);
		listener = -1;
	}
	freeaddrinfo(list);
	if (listener < 0)
		return kapsel_fail(error, error_len, err, "cannot listen on %s: %s", uri,
				   strerror(-err));
	fprintf(stderr, "kapsel: waiting for a migration on %s (%s)\n", uri,
		security.mode == MIGRATE_SECURITY_PSK ? "TLS with a pre-shared key"
						      : "INSECURE plain TCP");
	int conn;
	struct sockaddr_storage address;
	socklen_t address_len;
	do {
		address_len = sizeof(address);
		conn = accept4(listener, (struct sockaddr *)&address, &address_len, SOCK_CLOEXEC);
	} while (conn < 0 && errno == EINTR);
	close(listener);
	if (conn < 0)
		return kapsel_fail(error, error_len, -errno, "accept on %s: %s", uri,
				   strerror(errno));
	char peer_host[NI_MAXHOST] = "?", peer_port[NI_MAXSERV] = "?", peer[160];
	getnameinfo((struct sockaddr *)&address, address_len, peer_host, sizeof(peer_host),
		    peer_port, sizeof(peer_port), NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(peer, sizeof(peer), "the source at %s port %s", peer_host, peer_port);
	err = migrate_transport_server(conn, &security, timeout_ms, peer, out, error, error_len);
	explicit_bzero(&security, sizeof(security));
	return err;
}

/* ---- Reading and writing ------------------------------------------------------ */

static int transport_fail(struct migrate_transport *t, int err, const char *fmt, const char *what)
{
	snprintf(t->error, sizeof(t->error), fmt, t->peer, what);
	return err;
}

ssize_t migrate_transport_read(struct migrate_transport *t, void *data, size_t length_bytes)
{
	t->error[0] = '\0';
	if (!t->session) {
		uint64_t deadline = monotonic_ms() + (uint64_t)t->timeout_ms;
		for (;;) {
			uint64_t now = monotonic_ms();
			if (now >= deadline)
				return transport_fail(t, -ETIMEDOUT, "%s sent nothing for %s",
						      "too long");
			struct pollfd pfd = { .fd = t->fd, .events = POLLIN };
			int rc = poll(&pfd, 1, (int)(deadline - now));
			if (rc < 0 && errno != EINTR)
				return transport_fail(t, -errno, "waiting for %s: %s",
						      strerror(errno));
			if (rc <= 0)
				continue;
			ssize_t n = recv(t->fd, data, length_bytes, 0);
			if (n >= 0)
				return n;
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return transport_fail(t, -errno, "reading from %s: %s", strerror(errno));
		}
	}
	for (;;) {
		ssize_t n = gnutls_record_recv(t->session, data, length_bytes);
		if (n >= 0)
			return n;
		if (n == GNUTLS_E_INTERRUPTED)
			continue;
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_TIMEDOUT)
			return transport_fail(t, -ETIMEDOUT, "%s sent nothing for %s", "too long");
		if (n == GNUTLS_E_PREMATURE_TERMINATION)
			return 0; /* the record stream's END record says whether that is early */
		if (n == GNUTLS_E_DECRYPTION_FAILED || n == GNUTLS_E_MAC_VERIFY_FAILED)
			return transport_fail(
				t, -EBADMSG,
				"a TLS record from %s failed its integrity check (%s): the stream was changed on the way",
				gnutls_strerror((int)n));
		return transport_fail(t, -EIO, "TLS from %s: %s", gnutls_strerror((int)n));
	}
}

int migrate_transport_read_exact(struct migrate_transport *t, void *data, size_t length_bytes)
{
	size_t done = 0;
	while (done < length_bytes) {
		ssize_t n = migrate_transport_read(t, (uint8_t *)data + done, length_bytes - done);
		if (n < 0)
			return (int)n;
		if (n == 0)
			return transport_fail(t, -EPIPE, "%s closed the connection%s", "");
		done += (size_t)n;
	}
	return 0;
}

int migrate_transport_write(struct migrate_transport *t, const void *data, size_t length_bytes)
{
	const uint8_t *p = data;
	t->error[0] = '\0';
	while (length_bytes) {
		ssize_t n;
		if (t->session) {
			n = gnutls_record_send(t->session, p, length_bytes);
			if (n == GNUTLS_E_INTERRUPTED)
				continue;
			if (n == GNUTLS_E_AGAIN)
				return transport_fail(t, -ETIMEDOUT, "%s took nothing for %s",
						      "too long");
			if (n < 0)
				return transport_fail(t, -EPIPE, "TLS to %s: %s",
						      gnutls_strerror((int)n));
		} else {
			n = send(t->fd, p, length_bytes, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return transport_fail(t, -ETIMEDOUT, "%s took nothing for %s",
						      "too long");
			if (n < 0)
				return transport_fail(t, -errno, "writing to %s: %s",
						      strerror(errno));
		}
		p += n;
		length_bytes -= (size_t)n;
	}
	return 0;
}

const char *migrate_transport_error(const struct migrate_transport *t)
{
	return t ? t->error : "";
}

int migrate_transport_is_tls(const struct migrate_transport *t)
{
	return t && t->session;
}

int migrate_transport_fd(const struct migrate_transport *t)
{
	return t->fd;
}

void migrate_transport_close(struct migrate_transport *t)
{
	if (!t)
		return;
	if (t->session) {
		gnutls_bye(t->session, GNUTLS_SHUT_WR);
		gnutls_deinit(t->session);
	}
	if (t->client_credentials)
		gnutls_psk_free_client_credentials(t->client_credentials);
	if (t->server_credentials)
		gnutls_psk_free_server_credentials(t->server_credentials);
	if (t->fd >= 0)
		close(t->fd);
	explicit_bzero(&t->psk, sizeof(t->psk));
	free(t);
}

int migrate_transport_write_io(void *context, const void *data, size_t length_bytes)
{
	return migrate_transport_write(context, data, length_bytes);
}

ssize_t migrate_transport_read_io(void *context, void *data, size_t length_bytes)
{
	return migrate_transport_read(context, data, length_bytes);
}
