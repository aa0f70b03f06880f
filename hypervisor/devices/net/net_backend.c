/* Host end of a guest network interface: TAP device or Unix datagram socket, its policy and counters. */
#define _GNU_SOURCE
#include "devices/net/net_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "core/error_text.h"
#include "core/output_gate.h"
#include "kapsel/net.h"
#include "core/log.h"

#define NET_SCRATCH_BYTES 65536u

static int fill_address(struct sockaddr_un *addr, socklen_t *len, const char *path)
{
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof(addr->sun_path))
		return -ENAMETOOLONG;
	memset(addr, 0, sizeof(*addr));
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, path, n);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

/*
 * An incoming migration: the stale socket at path (st) is most likely the
 * source's, muted and still open; move it to PATH.handover so that it can
 * be put back if the migration fails (net_backend_close).
 */
static int move_aside(struct net_backend *nb, const char *path, const struct stat *st, char *error,
		      size_t error_len)
{
	char *aside = NULL;
	if (asprintf(&aside, "%s" NET_HANDOVER_SUFFIX, path) < 0)
		return kapsel_fail(error, error_len, -ENOMEM, "net %u: out of memory", nb->index);
	struct stat there;
	if (lstat(aside, &there) == 0) {
		kapsel_fail(error, error_len, -EEXIST,
			    "net %u: '%s' exists: a migration of this link ended half-way; if no VM uses it, remove it (and put it back at '%s' if the source VM still runs)",
			    nb->index, aside, path);
		free(aside);
		return -EEXIST;
	}
	if (rename(path, aside) < 0) {
		int err = -errno;
		kapsel_fail(error, error_len, err,
			    "net %u: cannot move the socket '%s' aside to '%s': %s; check that its folder is writable",
			    nb->index, path, aside, strerror(-err));
		free(aside);
		return err;
	}
	nb->aside_path = aside;
	nb->aside_dev = st->st_dev;
	nb->aside_ino = st->st_ino;
	return 0;
}

/* True if path names the socket file (dev, ino). */
static bool path_is(const char *path, dev_t dev, ino_t ino)
{
	struct stat st;
	return lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

/* Put the socket move_aside moved back at our path (over our own socket,
 * or where none is), or say where it was left. */
static void put_back_aside(struct net_backend *nb)
{
	if (!nb->aside_path)
		return;
	struct stat st;
	bool ours_or_free = lstat(nb->name, &st) < 0
				    ? errno == ENOENT
				    : st.st_dev == nb->bound_dev && st.st_ino == nb->bound_ino;
	if (!ours_or_free || !path_is(nb->aside_path, nb->aside_dev, nb->aside_ino) ||
	    rename(nb->aside_path, nb->name) < 0)
		kapsel_warn("net %u: could not put the socket moved aside back at '%s'; it is '%s' now",
			    nb->index, nb->name, nb->aside_path);
	free(nb->aside_path);
	nb->aside_path = NULL;
}

static int open_socket(struct net_backend *nb, const struct vm_net_config *config, bool incoming,
		       char *error, size_t error_len)
{
	struct sockaddr_un self;
	socklen_t self_len;
	if (fill_address(&self, &self_len, config->path) < 0 ||
	    fill_address(&nb->peer, &nb->peer_len, config->peer) < 0)
		return kapsel_fail(
			error, error_len, -ENAMETOOLONG,
			"net %u: socket path '%s' or peer '%s' is empty or longer than %zu bytes; use shorter paths",
			nb->index, config->path, config->peer, sizeof(self.sun_path) - 1);
	nb->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (nb->fd < 0)
		return kapsel_fail(error, error_len, -errno,
				   "net %u: cannot create a Unix datagram socket: %s", nb->index,
				   strerror(errno));
	struct stat st;
	if (lstat(config->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return kapsel_fail(
				error, error_len, -EEXIST,
				"net %u: '%s' exists and is not a socket; give socket= a path that does not exist",
				nb->index, config->path);
		/* A socket someone still serves answers a connect; a stale
		 * one (its VM died) refuses it and may be replaced. */
		int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		int live = probe >= 0 && connect(probe, (struct sockaddr *)&self, self_len) == 0;
		if (probe >= 0)
			close(probe);
		if (live)
			return kapsel_fail(
				error, error_len, -EADDRINUSE,
				"net %u: socket '%s' is in use by another VM; give each VM its own socket= path",
				nb->index, config->path);
		if (incoming) {
			int err = move_aside(nb, config->path, &st, error, error_len);
			if (err)
				return err;
		} else {
			unlink(config->path);
		}
	}
	if (bind(nb->fd, (struct sockaddr *)&self, self_len) < 0) {
		int err = kapsel_fail(
			error, error_len, -errno,
			"net %u: cannot bind socket '%s': %s; check that its folder exists and is writable",
			nb->index, config->path, strerror(errno));
		put_back_aside(nb);
		return err;
	}
	nb->unlink_on_close = true;
	if (lstat(config->path, &st) == 0) {
		nb->bound_dev = st.st_dev;
		nb->bound_ino = st.st_ino;
	}
	/* Room for a burst of full frames in each direction. */
	int bytes = 1 << 20;
	setsockopt(nb->fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
	setsockopt(nb->fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
	return 0;
}

/* /dev/net/tun, opened; checked to be that device (in a jail the name
 * may be anything).  Returns the fd or -errno. */
static int open_tun_device(void)
{
	int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(10, 200)) {
		close(fd);
		return -ENODEV;
	}
	return fd;
}

static int open_tap(struct net_backend *nb, const struct vm_net_config *config, char *error,
		    size_t error_len)
{
	int err = open_tun_device();
	if (err < 0)
		return kapsel_fail(error, error_len, err,
				   "net %u: cannot open /dev/net/tun for tap '%s': %s; %s",
				   nb->index, config->path, strerror(-err),
				   err == -ENOENT
					   ? "load the tun module (modprobe tun)"
					   : "run as root or give this user access to /dev/net/tun");
	nb->fd = err;
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", config->path);
	if (ioctl(nb->fd, TUNSETIFF, &ifr) < 0) {
		err = -errno;
		return kapsel_fail(
			error, error_len, err, "net %u: cannot attach to tap '%s': %s; %s",
			nb->index, config->path, strerror(errno),
			err == -EPERM
				? "create it first for this user (ip tuntap add dev NAME mode tap user USER) or run as root"
				: "check that NAME is free or is a tap device (ip link show NAME)");
	}
	/* Now, while /dev/net/tun can be opened: a failed migration attaches
	 * this one to take the tap back, perhaps in a jail. */
	err = open_tun_device();
	if (err < 0)
		return kapsel_fail(error, error_len, err,
				   "net %u: cannot open a second /dev/net/tun for tap '%s': %s",
				   nb->index, config->path, strerror(-err));
	nb->spare_tun_fd = err;
	return 0;
}

int net_backend_open(struct net_backend *nb, const struct vm_net_config *config, unsigned index,
		     uint64_t now_ns, bool incoming, char *error, size_t error_len)
{
	memset(nb, 0, sizeof(*nb));
	nb->fd = -1;
	nb->spare_tun_fd = -1;
	nb->held_fd = -1;
	nb->mute_fd = -1;
	nb->index = index;
	nb->kind = config->backend;
	pthread_mutex_init(&nb->lock, NULL);
	token_bucket_init(&nb->frames_bucket, &config->frames_limit, now_ns);
	token_bucket_init(&nb->bytes_bucket, &config->bytes_limit, now_ns);
	nb->name = strdup(config->path ? config->path : "");
	nb->scratch = malloc(NET_SCRATCH_BYTES);
	if (!nb->name || !nb->scratch)
		return kapsel_fail(error, error_len, -ENOMEM, "net %u: out of memory", index);
	int err = config->backend == VM_NET_BACKEND_TAP
			  ? open_tap(nb, config, error, error_len)
			  : open_socket(nb, config, incoming, error, error_len);
	if (err) {
		net_backend_close(nb);
		return err;
	}
	return 0;
}

/* Remove the socket path if it is still the socket we bound: a migration
 * destination may have bound the same path since. */
static void net_backend_unlink_own(struct net_backend *nb)
{
	if (path_is(nb->name, nb->bound_dev, nb->bound_ino))
		unlink(nb->name);
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

void net_backend_close(struct net_backend *nb)
{
	close_fd(&nb->fd);
	close_fd(&nb->spare_tun_fd);
	close_fd(&nb->held_fd);
	close_fd(&nb->mute_fd);
	if (nb->name)
		put_back_aside(nb); /* an incoming migration that failed */
	if (nb->unlink_on_close && nb->name)
		net_backend_unlink_own(nb);
	nb->unlink_on_close = false;
	free(nb->name);
	free(nb->scratch);
	nb->name = NULL;
	nb->scratch = NULL;
}

int net_backend_send(struct net_backend *nb, const struct iovec *iov, int iov_count)
{
	size_t length = 0;
	for (int i = 0; i < iov_count; i++)
		length += iov[i].iov_len;
	ssize_t n;
	if (output_gate_wait() < 0) {
		/* The guest's restored memory failed its check: the frame never
		 * leaves (output_gate.h); it counts as dropped below. */
		n = -1;
	} else if (nb->kind == VM_NET_BACKEND_SOCKET) {
		struct msghdr msg = {
			.msg_name = &nb->peer,
			.msg_namelen = nb->peer_len,
			.msg_iov = (struct iovec *)iov,
			.msg_iovlen = (size_t)iov_count,
		};
		do
			n = sendmsg(nb->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
	} else {
		do
			n = writev(nb->fd, iov, iov_count);
		while (n < 0 && errno == EINTR);
	}
	pthread_mutex_lock(&nb->lock);
	if (n == (ssize_t)length) {
		nb->stats.frames_out++;
		nb->stats.bytes_out += length;
	} else {
		/* Peer not there (ENOENT, ECONNREFUSED), handing its link
		 * over in a migration (EPERM: muted, net_backend_release),
		 * its queue full (EAGAIN), interface down (EIO): the frame is
		 * lost, as on a wire; the guest is not told. */
		nb->stats.drops_out++;
	}
	pthread_mutex_unlock(&nb->lock);
	if (n < 0 && errno != EAGAIN && errno != ENOENT && errno != ECONNREFUSED &&
	    !(errno == EPERM && nb->kind == VM_NET_BACKEND_SOCKET) && !nb->send_error_logged) {
		nb->send_error_logged = true;
		kapsel_warn("net %u ('%s'): sending a frame failed: %s; frames are dropped while this lasts",
			    nb->index, nb->name, strerror(errno));
	}
	return 0;
}

ssize_t net_backend_receive(struct net_backend *nb, void *buffer, size_t capacity_bytes)
{
	if (capacity_bytes > KAPSEL_NET_FRAME_MAX)
		capacity_bytes = KAPSEL_NET_FRAME_MAX;
	/* The guest's buffer first, the scratch buffer catches the rest of
	 * an oversized frame so it can be recognized and dropped. */
	struct iovec iov[2] = { { buffer, capacity_bytes }, { nb->scratch, NET_SCRATCH_BYTES } };
	ssize_t n;
	do
		n = readv(nb->fd, iov, 2);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return 0; /* EAGAIN: nothing there; other errors: try later */
	bool bad = (size_t)n > capacity_bytes || n < (ssize_t)KAPSEL_NET_FRAME_MIN;
	pthread_mutex_lock(&nb->lock);
	if (bad) {
		nb->stats.drops_in++;
	} else {
		nb->stats.frames_in++;
		nb->stats.bytes_in += (uint64_t)n;
	}
	pthread_mutex_unlock(&nb->lock);
	return bad ? -EMSGSIZE : n;
}

bool net_backend_readable(struct net_backend *nb)
{
	struct pollfd p = { .fd = nb->fd, .events = POLLIN };
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

uint64_t net_backend_rate_limit(struct net_backend *nb, uint64_t length_bytes, uint64_t now_ns)
{
	pthread_mutex_lock(&nb->lock);
	uint64_t wait = token_bucket_take_request(&nb->frames_bucket, &nb->bytes_bucket,
						  length_bytes, now_ns);
	if (wait)
		nb->stats.rate_limited++;
	pthread_mutex_unlock(&nb->lock);
	return wait;
}

uint64_t net_backend_drop_waiting(struct net_backend *nb)
{
	uint64_t dropped = 0;
	/* The queue is finite (SO_RCVBUF, the tap's queue) and nothing adds
	 * to it faster than we read; the bound is a guard, not a limit. */
	for (unsigned i = 0; i < 1000000u; i++) {
		ssize_t n;
		do
			n = read(nb->fd, nb->scratch, NET_SCRATCH_BYTES);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			break;
		dropped++;
	}
	if (dropped) {
		struct net_stats delta = { .drops_in = dropped, .drops_save = dropped };
		net_stats_add(nb, &delta);
	}
	return dropped;
}

void net_backend_confirm(struct net_backend *nb)
{
	if (!nb->aside_path)
		return;
	if (path_is(nb->aside_path, nb->aside_dev, nb->aside_ino))
		unlink(nb->aside_path);
	free(nb->aside_path);
	nb->aside_path = NULL;
}

/* Let nobody else send to (or connect to) our socket: connect it to a
 * socket of its own with an unnamed (autobound, abstract) address, which
 * needs no path. */
static int mute_socket(struct net_backend *nb)
{
	struct sockaddr_un sink;
	socklen_t sink_len = sizeof(sink);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memset(&sink, 0, sizeof(sink));
	sink.sun_family = AF_UNIX;
	if (bind(fd, (struct sockaddr *)&sink, sizeof(sa_family_t)) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sink, &sink_len) < 0 ||
	    connect(nb->fd, (struct sockaddr *)&sink, sink_len) < 0) {
		int err = -errno;
		close(fd);
		return err;
	}
	nb->mute_fd = fd;
	return 0;
}

static void unmute_socket(int fd)
{
	struct sockaddr unspecified = { .sa_family = AF_UNSPEC };
	connect(fd, &unspecified, sizeof(unspecified));
}

int net_backend_release(struct net_backend *nb, char *error, size_t error_len)
{
	if (nb->released || nb->fd < 0)
		return 0;
	int err;
	if (nb->kind == VM_NET_BACKEND_TAP) {
		/* Only what can be taken back is handed over. */
		if (nb->spare_tun_fd < 0) {
			err = open_tun_device();
			if (err < 0)
				return kapsel_fail(
					error, error_len, err,
					"net %u: tap '%s' could not be taken back if the destination failed: an earlier failed migration used the spare /dev/net/tun descriptor, and /dev/net/tun cannot be opened again in the sandbox (%s: a jail does not have it, a --user may not open it); save and restore the VM (the new process opens a new one) to migrate it",
					nb->index, nb->name, strerror(-err));
			nb->spare_tun_fd = err;
		}
	} else {
		err = mute_socket(nb);
		if (err)
			return kapsel_fail(error, error_len, err,
					   "net %u: cannot mute socket '%s' for the hand-over: %s",
					   nb->index, nb->name, strerror(-err));
		nb->held_fd = fcntl(nb->fd, F_DUPFD_CLOEXEC, 0);
		if (nb->held_fd < 0) {
			err = -errno;
			goto undo;
		}
	}
	uint64_t dropped = net_backend_drop_waiting(nb);
	if (dropped)
		kapsel_debug("net %u ('%s'): %llu frame(s) waiting at the hand-over dropped",
			     nb->index, nb->name, (unsigned long long)dropped);
	/* An eventfd nobody writes: never readable, a send on it fails (a
	 * drop).  Allowed to every sandboxed thread, as dup3 is. */
	int inert = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (inert < 0) {
		err = -errno;
		goto undo;
	}
	/* dup3 replaces the socket or tap in one step: the fd number the
	 * device's thread polls stays valid.  A tap is closed by it (the
	 * destination attaches it); a socket lives on in held_fd. */
	if (dup3(inert, nb->fd, O_CLOEXEC) < 0) {
		err = -errno;
		close(inert);
		goto undo;
	}
	close(inert);
	nb->released = true;
	return 0;

undo:
	close_fd(&nb->held_fd);
	if (nb->mute_fd >= 0)
		unmute_socket(nb->fd);
	close_fd(&nb->mute_fd);
	return kapsel_fail(error, error_len, err, "net %u: cannot hand '%s' over: %s", nb->index,
			   nb->name, strerror(-err));
}

/* The tap, attached by its name (our own definition's) to the spare
 * descriptor.  Returns that fd or -errno with a message. */
static int attach_spare_tap(struct net_backend *nb, char *error, size_t error_len)
{
	if (nb->spare_tun_fd < 0)
		return kapsel_fail(error, error_len, -EBADF,
				   "net %u: no spare /dev/net/tun descriptor to take tap '%s' back",
				   nb->index, nb->name);
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", nb->name);
	if (ioctl(nb->spare_tun_fd, TUNSETIFF, &ifr) < 0) {
		int err = -errno;
		return kapsel_fail(
			error, error_len, err, "net %u: cannot attach tap '%s' again: %s; %s",
			nb->index, nb->name, strerror(-err),
			err == -EBUSY ? "the destination still has it"
			: err == -EPERM
				? "it belongs to another user: create it for the VM's --user (ip tuntap add dev NAME mode tap user USER)"
				: "it may have been deleted (a tap the VM created goes with its last user: create it with ip tuntap add)");
	}
	int fd = nb->spare_tun_fd;
	nb->spare_tun_fd = -1;
	return fd;
}

int net_backend_reacquire(struct net_backend *nb, char *error, size_t error_len)
{
	if (!nb->released)
		return 0;
	int fd;
	if (nb->kind == VM_NET_BACKEND_TAP) {
		fd = attach_spare_tap(nb, error, error_len);
		if (fd < 0)
			return fd;
	} else {
		/* Ours again: the destination put it back at its path, or never
		 * moved it (docs/migration.md). */
		unmute_socket(nb->held_fd);
		fd = nb->held_fd;
		nb->held_fd = -1;
		close_fd(&nb->mute_fd);
	}
	if (dup3(fd, nb->fd, O_CLOEXEC) < 0) {
		int err = -errno;
		if (nb->kind == VM_NET_BACKEND_TAP)
			close(fd);
		else
			nb->held_fd = fd; /* closed with the backend */
		return kapsel_fail(error, error_len, err, "net %u: dup3: %s", nb->index,
				   strerror(-err));
	}
	close(fd);
	nb->released = false;
	/* For the next failed migration; in a jail (or as a --user without
	 * access to /dev/net/tun) this fails, and the next release refuses
	 * to hand the tap over. */
	if (nb->kind == VM_NET_BACKEND_TAP && nb->spare_tun_fd < 0) {
		int spare = open_tun_device();
		nb->spare_tun_fd = spare >= 0 ? spare : -1;
	}
	return 0;
}

void net_stats_to_array(struct net_backend *nb, uint64_t counters[11])
{
	pthread_mutex_lock(&nb->lock);
	const struct net_stats *s = &nb->stats;
	const uint64_t values[11] = { s->frames_out,	s->bytes_out,	 s->frames_in,
				      s->bytes_in,	s->drops_out,	 s->drops_in,
				      s->errors,	s->rate_limited, s->kicks,
				      s->notifications, s->drops_save };
	pthread_mutex_unlock(&nb->lock);
	memcpy(counters, values, sizeof(values));
}

void net_stats_from_array(struct net_backend *nb, const uint64_t counters[11])
{
	const struct net_stats delta = {
		.frames_out = counters[0],
		.bytes_out = counters[1],
		.frames_in = counters[2],
		.bytes_in = counters[3],
		.drops_out = counters[4],
		.drops_in = counters[5],
		.errors = counters[6],
		.rate_limited = counters[7],
		.kicks = counters[8],
		.notifications = counters[9],
		.drops_save = counters[10],
	};
	net_stats_add(nb, &delta);
}

void net_stats_add(struct net_backend *nb, const struct net_stats *delta)
{
	pthread_mutex_lock(&nb->lock);
	nb->stats.frames_out += delta->frames_out;
	nb->stats.bytes_out += delta->bytes_out;
	nb->stats.frames_in += delta->frames_in;
	nb->stats.bytes_in += delta->bytes_in;
	nb->stats.drops_out += delta->drops_out;
	nb->stats.drops_in += delta->drops_in;
	nb->stats.errors += delta->errors;
	nb->stats.rate_limited += delta->rate_limited;
	nb->stats.kicks += delta->kicks;
	nb->stats.notifications += delta->notifications;
	nb->stats.drops_save += delta->drops_save;
	pthread_mutex_unlock(&nb->lock);
}

void net_backend_print_stats(struct net_backend *nb, uint64_t exits, FILE *out)
{
	pthread_mutex_lock(&nb->lock);
	struct net_stats s = nb->stats;
	pthread_mutex_unlock(&nb->lock);
	fprintf(out, "  backend: %s %s\n", nb->kind == VM_NET_BACKEND_TAP ? "tap" : "socket",
		nb->name ? nb->name : "");
	fprintf(out, "  frames_out: %llu\n", (unsigned long long)s.frames_out);
	fprintf(out, "  bytes_out: %llu\n", (unsigned long long)s.bytes_out);
	fprintf(out, "  frames_in: %llu\n", (unsigned long long)s.frames_in);
	fprintf(out, "  bytes_in: %llu\n", (unsigned long long)s.bytes_in);
	fprintf(out, "  drops_out: %llu\n", (unsigned long long)s.drops_out);
	fprintf(out, "  drops_in: %llu\n", (unsigned long long)s.drops_in);
	fprintf(out, "  drops_save: %llu\n", (unsigned long long)s.drops_save);
	fprintf(out, "  errors: %llu\n", (unsigned long long)s.errors);
	fprintf(out, "  rate_limited: %llu\n", (unsigned long long)s.rate_limited);
	fprintf(out, "  kicks: %llu\n", (unsigned long long)s.kicks);
	fprintf(out, "  notifications: %llu\n", (unsigned long long)s.notifications);
	uint64_t frames = s.frames_out + s.frames_in;
	if (frames)
		fprintf(out, "  exits_per_frame: %.2f\n", (double)exits / (double)frames);
}
