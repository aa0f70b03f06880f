/* Unit tests: a NIC's host end handed over in a migration and taken back, by no path (jail), for socket links and taps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cunit_main.h"
#include "devices/net/net_backend.h"
#include "kapsel/net.h"

#define FRAME_BYTES 60

static char dir[40];
static char self_path[100], peer_path[100], aside_path[128], jail_path[64];

static void make_paths(void)
{
	snprintf(dir, sizeof(dir), "/tmp/kapsel-net-backend.XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
	snprintf(self_path, sizeof(self_path), "%s/self.sock", dir);
	snprintf(peer_path, sizeof(peer_path), "%s/peer.sock", dir);
	snprintf(aside_path, sizeof(aside_path), "%s" NET_HANDOVER_SUFFIX, self_path);
	snprintf(jail_path, sizeof(jail_path), "%s/jail", dir);
}

static void remove_paths(void)
{
	unlink(self_path);
	unlink(peer_path);
	unlink(aside_path);
	rmdir(jail_path);
	rmdir(dir);
}

static struct vm_net_config socket_config(void)
{
	return (struct vm_net_config){ .backend = VM_NET_BACKEND_SOCKET,
				       .path = self_path,
				       .peer = peer_path };
}

static int open_backend(struct net_backend *nb, const struct vm_net_config *config, bool incoming)
{
	char error[512];
	int err = net_backend_open(nb, config, 0, 0, incoming, error, sizeof(error));
	if (err)
		fprintf(stderr, "net_backend_open: %s\n", error);
	return err;
}

/* The far end of the link: a socket bound at peer_path. */
static int open_peer(void)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", peer_path);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* The peer sends one frame of byte tag to our path; 0 or -errno. */
static int peer_send(int peer, uint8_t tag)
{
	uint8_t frame[FRAME_BYTES];
	memset(frame, tag, sizeof(frame));
	struct sockaddr_un to = { .sun_family = AF_UNIX };
	snprintf(to.sun_path, sizeof(to.sun_path), "%s", self_path);
	return sendto(peer, frame, sizeof(frame), 0, (struct sockaddr *)&to, sizeof(to)) < 0
		       ? -errno
		       : 0;
}

/* What the backend receives within a second: the frame's tag byte, or -1. */
static int backend_receive_tag(struct net_backend *nb)
{
	uint8_t frame[KAPSEL_NET_FRAME_MAX];
	struct pollfd p = { .fd = nb->fd, .events = POLLIN };
	if (poll(&p, 1, 1000) != 1)
		return -1;
	ssize_t n = net_backend_receive(nb, frame, sizeof(frame));
	return n == FRAME_BYTES ? frame[0] : -1;
}

static bool is_socket(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 && S_ISSOCK(st.st_mode);
}

/* A hand-over to a destination on the same host that fails: the
 * destination moves the (muted) source socket aside, binds its own, and
 * puts the source's back when it closes; the source then serves the link
 * with the very socket it had. */
static void test_socket_failed_handover(void)
{
	make_paths();
	int peer = open_peer();
	CU_ASSERT_FATAL(peer >= 0);
	struct vm_net_config config = socket_config();
	struct net_backend source, destination;
	CU_ASSERT_EQUAL_FATAL(open_backend(&source, &config, false), 0);
	int fd_number = source.fd;
	CU_ASSERT_EQUAL(peer_send(peer, 1), 0);
	char error[512];
	CU_ASSERT_EQUAL(net_backend_release(&source, error, sizeof(error)), 0);
	CU_ASSERT_TRUE(source.released);
	/* What waited was dropped and counted; the muted socket refuses the
	 * peer's frames, so they are the peer's drops, not queued. */
	CU_ASSERT_EQUAL(source.stats.drops_save, 1);
	CU_ASSERT_EQUAL(peer_send(peer, 2), -EPERM);
	CU_ASSERT_TRUE(is_socket(self_path));

	CU_ASSERT_EQUAL_FATAL(open_backend(&destination, &config, true), 0);
	CU_ASSERT_TRUE(is_socket(aside_path));
	CU_ASSERT_EQUAL(peer_send(peer, 3), 0);
	CU_ASSERT_EQUAL(backend_receive_tag(&destination), 3);
	net_backend_close(&destination); /* the migration failed there */
	CU_ASSERT_FALSE(is_socket(aside_path));
	CU_ASSERT_TRUE(is_socket(self_path));

	CU_ASSERT_EQUAL(net_backend_reacquire(&source, error, sizeof(error)), 0);
	CU_ASSERT_FALSE(source.released);
	CU_ASSERT_EQUAL(source.fd, fd_number);
	CU_ASSERT_EQUAL(peer_send(peer, 4), 0);
	CU_ASSERT_EQUAL(backend_receive_tag(&source), 4);
	/* And the other way. */
	uint8_t frame[FRAME_BYTES] = { 5 };
	struct iovec iov = { frame, sizeof(frame) };
	net_backend_send(&source, &iov, 1);
	CU_ASSERT_EQUAL(recv(peer, frame, sizeof(frame), MSG_DONTWAIT), FRAME_BYTES);
	CU_ASSERT_EQUAL(source.stats.frames_out, 1);
	net_backend_close(&source);
	CU_ASSERT_FALSE(is_socket(self_path));
	close(peer);
	remove_paths();
}

/* A hand-over that succeeds: the destination removes the source's socket
 * it moved aside; the source, ending, leaves the destination's path alone. */
static void test_socket_confirmed_handover(void)
{
	make_paths();
	struct vm_net_config config = socket_config();
	struct net_backend source, destination;
	char error[512];
	CU_ASSERT_EQUAL_FATAL(open_backend(&source, &config, false), 0);
	CU_ASSERT_EQUAL(net_backend_release(&source, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL_FATAL(open_backend(&destination, &config, true), 0);
	net_backend_confirm(&destination);
	CU_ASSERT_FALSE(is_socket(aside_path));
	net_backend_close(&source);
	CU_ASSERT_TRUE(is_socket(self_path));
	net_backend_close(&destination);
	CU_ASSERT_FALSE(is_socket(self_path));
	remove_paths();
}

/* A live socket that is not muted is another VM's: never moved aside. */
static void test_socket_live_refused(void)
{
	make_paths();
	struct vm_net_config config = socket_config();
	struct net_backend source, destination;
	char error[512];
	CU_ASSERT_EQUAL_FATAL(open_backend(&source, &config, false), 0);
	CU_ASSERT_EQUAL(net_backend_open(&destination, &config, 0, 0, true, error, sizeof(error)),
			-EADDRINUSE);
	CU_ASSERT_FALSE(is_socket(aside_path));
	/* A leftover of a hand-over that ended half-way is named, not replaced. */
	CU_ASSERT_EQUAL(net_backend_release(&source, error, sizeof(error)), 0);
	int leftover = open(aside_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CU_ASSERT(leftover >= 0);
	close(leftover);
	CU_ASSERT_EQUAL(net_backend_open(&destination, &config, 0, 0, true, error, sizeof(error)),
			-EEXIST);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "ended half-way"));
	CU_ASSERT_TRUE(is_socket(self_path));
	net_backend_close(&source);
	remove_paths();
}

/*
 * Make this (forked, single-threaded) process see only an empty folder as
 * its root, as --jail does: in a user namespace of its own if it may,
 * else directly as root.  net: also a network namespace of its own.
 * Returns 0, or -1 if neither is allowed here.
 */
static int enter_namespaces(bool net)
{
	int flags = net ? CLONE_NEWNET : 0;
	if (geteuid() != 0 || unshare(flags) < 0) {
		if (unshare(CLONE_NEWUSER | flags) < 0)
			return -1;
	}
	return 0;
}

static int enter_jail(void)
{
	return chroot(jail_path) == 0 && chdir("/") == 0 ? 0 : -1;
}

enum {
	CHILD_SKIPPED = 77
};

/* Run fn in a forked child; its exit status (CHILD_SKIPPED: cannot jail here). */
static int in_child(int (*fn)(int to_parent, int from_parent), void (*parent)(int, int))
{
	int up[2], down[2];
	if (pipe(up) < 0 || pipe(down) < 0)
		return -1;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		close(up[0]);
		close(down[1]);
		_exit(fn(up[1], down[0]));
	}
	close(up[1]);
	close(down[0]);
	if (parent)
		parent(up[0], down[1]);
	close(up[0]);
	close(down[1]);
	int status;
	if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

static bool wait_byte(int fd)
{
	char c;
	return read(fd, &c, 1) == 1;
}

static void send_byte(int fd)
{
	ssize_t n = write(fd, "x", 1);
	(void)n;
}

/* The source in a jail that does not show the socket's folder: release,
 * then (after the destination failed outside) take back and receive. */
static int jailed_socket_source(int to_parent, int from_parent)
{
	struct vm_net_config config = socket_config();
	struct net_backend source;
	char error[512];
	if (open_backend(&source, &config, false) < 0)
		return 1;
	if (enter_namespaces(false) < 0 || enter_jail() < 0)
		return CHILD_SKIPPED;
	if (net_backend_release(&source, error, sizeof(error)) < 0) {
		fprintf(stderr, "release in the jail: %s\n", error);
		return 2;
	}
	send_byte(to_parent);
	if (!wait_byte(from_parent))
		return 3;
	if (net_backend_reacquire(&source, error, sizeof(error)) < 0) {
		fprintf(stderr, "take-back in the jail: %s\n", error);
		return 4;
	}
	send_byte(to_parent);
	int tag = backend_receive_tag(&source);
	net_backend_close(&source);
	return tag == 7 ? 0 : 5;
}

static void failing_destination(int from_child, int to_child)
{
	if (!wait_byte(from_child))
		return;
	struct vm_net_config config = socket_config();
	struct net_backend destination;
	if (open_backend(&destination, &config, true) == 0)
		net_backend_close(&destination);
	send_byte(to_child);
	if (!wait_byte(from_child))
		return;
	int peer = open_peer();
	if (peer >= 0) {
		peer_send(peer, 7);
		close(peer);
	}
}

static void test_socket_take_back_in_jail(void)
{
	make_paths();
	CU_ASSERT_EQUAL_FATAL(mkdir(jail_path, 0755), 0);
	int status = in_child(jailed_socket_source, failing_destination);
	if (status == CHILD_SKIPPED)
		printf("\n    (no chroot here: neither root nor user namespaces; not run) ");
	else
		CU_ASSERT_EQUAL(status, 0);
	remove_paths();
}

/* A tap in a network namespace of our own, persistent, as `ip tuntap add` makes it. */
static int create_tap(const char *name)
{
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	int ok = fd >= 0 && ioctl(fd, TUNSETIFF, &ifr) == 0 && ioctl(fd, TUNSETPERSIST, 1) == 0;
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

static bool attached_to(int fd, const char *name)
{
	struct ifreq ifr;
	memset(&ifr, 0, sizeof(ifr));
	return ioctl(fd, TUNGETIFF, &ifr) == 0 && strcmp(ifr.ifr_name, name) == 0;
}

/* The source of a tap NIC in a jail: the destination attaches the tap
 * once it is released; the take-back fails while the destination holds
 * it and works after; a second hand-over is refused (no spare left). */
static int jailed_tap_source(int to_parent, int from_parent)
{
	(void)to_parent;
	(void)from_parent;
	if (enter_namespaces(true) < 0 || create_tap("ktest0") < 0)
		return CHILD_SKIPPED;
	struct vm_net_config config = { .backend = VM_NET_BACKEND_TAP, .path = "ktest0" };
	struct net_backend source;
	char error[512];
	if (open_backend(&source, &config, false) < 0)
		return 1;
	int destination = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	if (destination < 0 || enter_jail() < 0)
		return CHILD_SKIPPED;
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "ktest0");
	if (ioctl(destination, TUNSETIFF, &ifr) == 0)
		return 2; /* the source still had it: the destination may not */
	if (net_backend_release(&source, error, sizeof(error)) < 0) {
		fprintf(stderr, "release in the jail: %s\n", error);
		return 3;
	}
	if (ioctl(destination, TUNSETIFF, &ifr) < 0)
		return 4;
	if (net_backend_reacquire(&source, error, sizeof(error)) != -EBUSY)
		return 5;
	close(destination);
	if (net_backend_reacquire(&source, error, sizeof(error)) < 0) {
		fprintf(stderr, "take-back in the jail: %s\n", error);
		return 6;
	}
	if (!attached_to(source.fd, "ktest0"))
		return 7;
	if (net_backend_release(&source, error, sizeof(error)) >= 0 ||
	    !strstr(error, "save and restore the VM"))
		return 8;
	if (!attached_to(source.fd, "ktest0"))
		return 9;
	net_backend_close(&source);
	return 0;
}

static void test_tap_take_back_in_jail(void)
{
	make_paths();
	CU_ASSERT_EQUAL_FATAL(mkdir(jail_path, 0755), 0);
	int status = in_child(jailed_tap_source, NULL);
	if (status == CHILD_SKIPPED)
		printf("\n    (no tap in a namespace of our own here: not run) ");
	else
		CU_ASSERT_EQUAL(status, 0);
	remove_paths();
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "socket: failed hand-over, take-back", test_socket_failed_handover },
		{ "socket: confirmed hand-over", test_socket_confirmed_handover },
		{ "socket: live and half-way sockets refused", test_socket_live_refused },
		{ "socket: take-back in a jail", test_socket_take_back_in_jail },
		{ "tap: take-back in a jail", test_tap_take_back_in_jail },
	};
	return UNIT_RUN("net_backend", tests);
}
