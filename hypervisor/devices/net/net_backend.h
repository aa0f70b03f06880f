/* Host end of a guest network interface: TAP device or Unix datagram socket, its policy and counters. */
#ifndef KAPSEL_NET_BACKEND_H
#define KAPSEL_NET_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "config/config.h"
#include "devices/rate_limit.h"

/* Counters of one interface; "out" is guest -> network. */
struct net_stats {
	uint64_t frames_out, bytes_out;
	uint64_t frames_in, bytes_in;
	uint64_t drops_out;	/* the network did not take a frame (peer absent, queue full) */
	uint64_t drops_in;	/* frames too long for the guest, or no room on the card */
	uint64_t errors;	/* malformed guest requests (length, address, state) */
	uint64_t rate_limited;	/* frames that had to wait for tokens */
	uint64_t kicks;		/* guest -> host notifications (PV doorbell) */
	uint64_t notifications; /* host -> guest event channel signals (PV) */
	uint64_t drops_save;	/* waited in the backend's queue at a save: dropped */
};

struct net_backend {
	enum vm_net_backend kind;
	unsigned index;	      /* net number in the VM definition */
	int fd;		      /* non-blocking; -1 when closed */
	char *name;	      /* socket path or interface name, for messages */
	bool unlink_on_close; /* the socket path is ours */
	dev_t bound_dev;      /* the socket file we bound (unlink only that one) */
	ino_t bound_ino;
	bool released; /* the host end went to a migration destination */
	/*
	 * What a failed migration takes the host end back with, opened while
	 * the process may still open it (before the jail and the user
	 * switch; docs/migration.md).  TAP: an unattached /dev/net/tun
	 * descriptor, or -1.  Socket, while released: the socket itself,
	 * still bound (held_fd), muted by a connection to an unnamed socket
	 * (mute_fd) so that nobody else may send to it; -1 otherwise.
	 */
	int spare_tun_fd;
	int held_fd;
	int mute_fd;
	/*
	 * An incoming migration found the source's socket at our path and
	 * moved it to aside_path (that inode: aside_dev, aside_ino); closing
	 * before net_backend_confirm puts it back.  NULL if nothing was moved.
	 */
	char *aside_path;
	dev_t aside_dev;
	ino_t aside_ino;
	struct sockaddr_un peer;
	socklen_t peer_len;
	uint8_t *scratch; /* catches the tail of an oversized frame */
	bool send_error_logged;
	pthread_mutex_t lock; /* protects stats and the buckets */
	struct token_bucket frames_bucket;
	struct token_bucket bytes_bucket;
	struct net_stats stats;
};

/* Appended to a socket path for the source's socket an incoming migration moves aside. */
#define NET_HANDOVER_SUFFIX ".handover"

/*
 * Open the backend of net config (number index) for a VM: bind the socket
 * path (a stale socket nobody serves is replaced; a live one is refused)
 * or attach to the TAP interface (created if missing; needs
 * CAP_NET_ADMIN) and open a spare /dev/net/tun descriptor for a failed
 * migration to take it back with.  incoming: the VM arrives by migration;
 * a socket at the path that does not answer (the source's, muted by
 * net_backend_release) is moved to PATH.handover instead of removed, to be
 * put back if the migration fails (net_backend_close) or removed once it
 * succeeded (net_backend_confirm).  Errors come back as -errno with a
 * message in error naming the path or interface and the fix.
 */
int net_backend_open(struct net_backend *nb, const struct vm_net_config *config, unsigned index,
		     uint64_t now_ns, bool incoming, char *error, size_t error_len);

/* Close the fds, put back a socket an incoming migration moved aside (see
 * net_backend_open) and remove a socket path we bound.  Safe on a zeroed
 * or half-opened backend whose fd is -1. */
void net_backend_close(struct net_backend *nb);

/* The incoming migration succeeded (this VM runs): remove the source's
 * socket that net_backend_open moved aside.  A no-op otherwise. */
void net_backend_confirm(struct net_backend *nb);

/*
 * Send one frame made of iov (already validated: 14..1514 bytes in all).
 * Counts it.  Returns 0 (sent or dropped as a wire would drop it).
 */
int net_backend_send(struct net_backend *nb, const struct iovec *iov, int iov_count);

/*
 * Receive one waiting frame into buffer (capacity_bytes, at most 1514
 * are used).  Returns its length, 0 if none is waiting, or -EMSGSIZE for
 * a frame too long for the guest (dropped and counted; call again).
 * Counts received frames.
 */
ssize_t net_backend_receive(struct net_backend *nb, void *buffer, size_t capacity_bytes);

/* True if a frame is waiting (poll with no timeout). */
bool net_backend_readable(struct net_backend *nb);

/* Rate limit for a frame of length_bytes the guest sends: 0 if it may
 * go now, else the nanoseconds to wait (nothing is taken then). */
uint64_t net_backend_rate_limit(struct net_backend *nb, uint64_t length_bytes, uint64_t now_ns);

/*
 * A save: read and drop every frame waiting in the backend's queue (a
 * saved VM cannot take them later; a real NIC that stops drops them too),
 * counting them in drops_in and drops_save.  Returns how many.  Call it
 * only while nothing else reads the backend (the device is quiesced).
 */
uint64_t net_backend_drop_waiting(struct net_backend *nb);

/*
 * A live migration hands the host end over (the destination opens the same
 * socket path or tap from its own definition): put an inert eventfd in
 * place of the fd (so a poll or send on it does nothing) and drop what
 * waits (counted as by net_backend_drop_waiting).  A tap is closed, which
 * lets the destination attach it; a socket stays open and bound but muted
 * (held_fd): the destination sees it as stale and moves it aside (see
 * net_backend_open).  Refuses a tap that could not be taken back (no
 * spare descriptor, and /dev/net/tun cannot be opened now).  Same
 * precondition as net_backend_drop_waiting.  Returns 0 or -errno with a
 * message in error.
 */
int net_backend_release(struct net_backend *nb, char *error, size_t error_len);

/*
 * The migration failed after net_backend_release: take the host end back
 * in place of the inert fd (same fd number), by no path: a socket is the
 * one kept open (unmuted), a tap is attached by its name to the spare
 * /dev/net/tun descriptor.  So it works in a jail and after the user
 * switch.  Fails if the destination still holds the tap.  Returns 0 or
 * -errno with a message in error.  A no-op unless released.  Runs on the
 * control thread (migrate_send): the sandbox lets it TUNSETIFF.
 */
int net_backend_reacquire(struct net_backend *nb, char *error, size_t error_len);

/* The counters as VM_STATE_NET_COUNTERS numbers (a state record) and back. */
void net_stats_to_array(struct net_backend *nb, uint64_t counters[11]);
void net_stats_from_array(struct net_backend *nb, const uint64_t counters[11]);

/* Add to counters under the lock (delta fields). */
void net_stats_add(struct net_backend *nb, const struct net_stats *delta);

/* Print "  name: value" lines: backend, counters, exits per frame. */
void net_backend_print_stats(struct net_backend *nb, uint64_t exits, FILE *out);

#endif
