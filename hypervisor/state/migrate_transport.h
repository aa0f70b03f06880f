/* The migration connection: TCP connect/accept, and TLS 1.3 with a pre-shared key (GnuTLS) or, when the operator says so, plain TCP. */
#ifndef KAPSEL_MIGRATE_TRANSPORT_H
#define KAPSEL_MIGRATE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * How the operator chose to protect a migration.  UNSET is refused: the
 * operator must name a key file (psk) or say insecure explicitly.
 *
 * PSK: TLS 1.3 (GnuTLS) with (EC)DHE + the pre-shared key from psk_path.
 * Each side proves it holds the key; the stream is encrypted and every
 * record authenticated, so a peer without the key cannot start a VM and a
 * changed byte ends the migration.
 * INSECURE: plain TCP; anyone who reaches the port can send a VM, and
 * anyone on the path can read or change guest memory.
 */
enum migrate_security_mode {
	MIGRATE_SECURITY_UNSET = 0,
	MIGRATE_SECURITY_PSK,
	MIGRATE_SECURITY_INSECURE,
};

struct migrate_security {
	enum migrate_security_mode mode;
	char psk_path[4096];
};

/* A key loaded from a PSK file. */
#define MIGRATE_PSK_MIN_BYTES 16u
#define MIGRATE_PSK_MAX_BYTES 64u
struct migrate_psk {
	char identity[128];
	uint8_t key[MIGRATE_PSK_MAX_BYTES];
	size_t key_bytes;
};

/*
 * Load a PSK file: one line "IDENTITY:HEXKEY" (the format of GnuTLS'
 * psktool) or just "HEXKEY" (identity "kapsel"); the key is 16..64 bytes.
 * The file must be a regular file owned by the caller (or root) that no
 * other user may read or write (mode 0600 or 0400): anything else is
 * refused with a message that says to chmod it.  Returns 0 or -errno with
 * a message in error.
 */
int migrate_psk_load(const char *path, struct migrate_psk *psk, char *error, size_t error_len);

/*
 * Split an --incoming value "tcp:ADDR:PORT[,psk=FILE][,insecure]" into the
 * address ("tcp:ADDR:PORT", in uri) and the security options.  Exactly one
 * of psk= and insecure must be given.  Returns 0 or -EINVAL with a message.
 */
int migrate_spec_parse(const char *spec, char *uri, size_t uri_len,
		       struct migrate_security *security, char *error, size_t error_len);

struct migrate_transport;

/*
 * Wrap a connected stream socket fd (ownership passes to the transport,
 * also on failure) as the migration source (client) or destination
 * (server), and run the TLS handshake for PSK.  timeout_ms bounds the
 * handshake and, later, every single read or write.  peer names the other
 * end in messages.  security->mode must be PSK or INSECURE.  Returns 0
 * with *out set, or -errno with a message in error: -EACCES (the peer does
 * not hold the same key), -EPROTO (the peer does not speak TLS),
 * -ETIMEDOUT (the peer stayed silent).
 */
int migrate_transport_client(int fd, const struct migrate_security *security, int timeout_ms,
			     const char *peer, struct migrate_transport **out, char *error,
			     size_t error_len);
int migrate_transport_server(int fd, const struct migrate_security *security, int timeout_ms,
			     const char *peer, struct migrate_transport **out, char *error,
			     size_t error_len);

/*
 * Source: connect to uri ("tcp:HOST:PORT") within timeout_ms and wrap the
 * socket as a client.  A security mode of UNSET is refused with a message
 * naming --psk and --insecure.
 */
int migrate_transport_connect(const char *uri, const struct migrate_security *security,
			      int timeout_ms, struct migrate_transport **out, char *error,
			      size_t error_len);

/*
 * Destination: parse spec (see migrate_spec_parse), load the key, listen
 * on the address, wait (without a limit) for one connection and wrap it as
 * a server with timeout_ms.  Prints "waiting for a migration" on stderr.
 */
int migrate_transport_accept(const char *spec, int timeout_ms, struct migrate_transport **out,
			     char *error, size_t error_len);

/* Change the per-read/write timeout. */
void migrate_transport_set_timeout(struct migrate_transport *t, int timeout_ms);

/*
 * Read up to length_bytes.  Returns the count (> 0), 0 at the end of the
 * stream, or -errno: -ETIMEDOUT, -EBADMSG (a TLS record failed its
 * integrity check: the stream was changed on the way), -EIO.  The details
 * are in migrate_transport_error.
 */
ssize_t migrate_transport_read(struct migrate_transport *t, void *data, size_t length_bytes);

/* Read exactly length_bytes: 0, -EPIPE at an early end, or as above. */
int migrate_transport_read_exact(struct migrate_transport *t, void *data, size_t length_bytes);

/* Write all of data: 0 or -errno (-ETIMEDOUT, -EPIPE, -EIO). */
int migrate_transport_write(struct migrate_transport *t, const void *data, size_t length_bytes);

/* The last error's description ("" if none); valid until the next call. */
const char *migrate_transport_error(const struct migrate_transport *t);

/* Whether the stream is protected by TLS. */
int migrate_transport_is_tls(const struct migrate_transport *t);

/* The socket (to poll on, or shutdown() to cancel a transfer). */
int migrate_transport_fd(const struct migrate_transport *t);

/* End the session (TLS close_notify) and close the socket.  NULL is ignored. */
void migrate_transport_close(struct migrate_transport *t);

/* Adapters for vm_state_writer_init_io / vm_state_reader_init_io (context is the transport). */
int migrate_transport_write_io(void *context, const void *data, size_t length_bytes);
ssize_t migrate_transport_read_io(void *context, void *data, size_t length_bytes);

#endif
