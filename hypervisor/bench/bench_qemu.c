/* `kapsel bench` QEMU paths: finds QEMU, builds its command line for blkbench.elf on virtio-blk (microvm) or IDE (pc), and reads KVM's exit count for its process. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

/*
 * Both QEMU paths boot blkbench.elf through the reference runtime's PVH
 * entry (guest-pv/runtime/pvh.c), which QEMU honours with -kernel:
 *   qemu-virtio  -M microvm, virtio-blk on virtio-mmio (virtio 1
 *                transport), the guest's polled virtio driver
 *   qemu-ide     -M pc, the image on QEMU's IDE controller, the guest's
 *                ATA PIO driver (the emulated path's driver)
 * The image is opened as the Kapsel paths open it: raw, cache=none
 * (O_DIRECT) or writeback, with io_uring as the I/O engine.  The guest's
 * exit code comes back through isa-debug-exit: QEMU exits with
 * (code << 1) | 1.
 */

#define QEMU_DEFAULT_BINARY "qemu-system-x86_64"
#define QEMU_DEBUG_EXIT "isa-debug-exit,iobase=0xf4,iosize=0x04"

/* Search PATH for name; returns a malloc'd path or NULL. */
static char *search_path(const char *name)
{
	if (strchr(name, '/'))
		return access(name, X_OK) == 0 ? strdup(name) : NULL;
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char *copy = strdup(path), *save = NULL, *found = NULL;
	for (char *dir = copy ? strtok_r(copy, ":", &save) : NULL; dir && !found;
	     dir = strtok_r(NULL, ":", &save)) {
		char candidate[4096];
		if (snprintf(candidate, sizeof(candidate), "%s/%s", dir, name) <
			    (int)sizeof(candidate) &&
		    access(candidate, X_OK) == 0)
			found = strdup(candidate);
	}
	free(copy);
	return found;
}

/* First line of `qemu --version` into out ("" when it will not say). */
static void qemu_version(const char *binary, char *out, size_t len)
{
	out[0] = '\0';
	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) != 0)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null < 0 || dup2(null, 0) < 0 || dup2(pipefd[1], 1) < 0 || dup2(null, 2) < 0)
			_exit(127);
		execl(binary, binary, "--version", (char *)NULL);
		_exit(127);
	}
	close(pipefd[1]);
	if (pid > 0) {
		size_t used = 0;
		ssize_t n;
		while (used + 1 < len && (n = read(pipefd[0], out + used, len - 1 - used)) > 0)
			used += (size_t)n;
		out[used] = '\0';
		out[strcspn(out, "\n")] = '\0';
		waitpid(pid, NULL, 0);
	}
	close(pipefd[0]);
}

int bench_qemu_probe(struct bench_options *options, struct bench_results *results, char *error,
		     size_t error_len)
{
	const char *name = options->qemu_path ? options->qemu_path : QEMU_DEFAULT_BINARY;
	char *binary = search_path(name);
	if (!binary) {
		snprintf(error, error_len,
			 options->qemu_path
				 ? "--qemu '%s' is not an executable file; give QEMU's path"
				 : "%s is not installed (scripts/install-deps.sh installs qemu-system-x86), or give --qemu FILE",
			 name);
		return -ENOENT;
	}
	snprintf(results->qemu_binary, sizeof(results->qemu_binary), "%s", binary);
	free(binary);
	qemu_version(results->qemu_binary, results->qemu_version, sizeof(results->qemu_version));
	if (!results->qemu_version[0]) {
		snprintf(error, error_len,
			 "'%s --version' printed nothing: is it QEMU? give --qemu FILE",
			 results->qemu_binary);
		return -ENOEXEC;
	}
	bool kvm = false;
	if (options->qemu_accel != BENCH_QEMU_ACCEL_TCG) {
		int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
		kvm = fd >= 0;
		if (fd >= 0)
			close(fd);
		if (!kvm && options->qemu_accel == BENCH_QEMU_ACCEL_KVM) {
			snprintf(error, error_len,
				 "--qemu-accel kvm: /dev/kvm cannot be opened (%s); add yourself to group kvm, or use --qemu-accel tcg",
				 strerror(errno));
			return -ENODEV;
		}
	}
	results->qemu_accel = kvm ? "kvm" : "tcg";
	return 0;
}

/* path with each ',' doubled, as QEMU's option syntax wants it inside
 * file=... (a comma would end the value and start another option). */
static void escape_commas(char *out, size_t len, const char *path)
{
	size_t used = 0;
	for (const char *c = path; *c && used + 2 < len; c++) {
		out[used++] = *c;
		if (*c == ',')
			out[used++] = ',';
	}
	out[used] = '\0';
}

/* Append one argument to argv (storage owned by the caller's strings). */
#define PUSH(arg)                                     \
	do {                                          \
		if (argc + 1 < max_args)              \
			argv[argc++] = (char *)(arg); \
	} while (0)

unsigned bench_qemu_argv(const struct bench_job *job, const struct bench_results *results,
			 const char *guest, const char *cmdline, const char *memory,
			 struct bench_qemu_strings *s, char **argv, unsigned max_args)
{
	bool virtio = job->path == BENCH_PATH_QEMU_VIRTIO;
	const char *cache = job->cache == BENCH_CACHE_NONE ? "none" : "writeback";
	unsigned argc = 0;
	char file[1100];
	escape_commas(file, sizeof(file), job->disk_path);
	snprintf(s->accel, sizeof(s->accel), "%s", results->qemu_accel);
	if (virtio)
		snprintf(s->drive, sizeof(s->drive),
			 "id=d0,file=%s,format=raw,if=none,cache=%s,aio=io_uring", file, cache);
	else
		snprintf(s->drive, sizeof(s->drive),
			 "file=%s,format=raw,if=ide,index=0,media=disk,cache=%s,aio=io_uring", file,
			 cache);
	PUSH(results->qemu_binary);
	PUSH("-M");
	PUSH(virtio ? "microvm" : "pc");
	PUSH("-accel");
	PUSH(s->accel);
	PUSH("-m");
	PUSH(memory);
	PUSH("-nodefaults");
	PUSH("-no-user-config");
	PUSH("-display");
	PUSH("none");
	PUSH("-no-reboot");
	PUSH("-serial");
	PUSH("stdio");
	PUSH("-device");
	PUSH(QEMU_DEBUG_EXIT);
	PUSH("-kernel");
	PUSH(guest);
	PUSH("-append");
	PUSH(cmdline);
	PUSH("-drive");
	PUSH(s->drive);
	if (virtio) {
		PUSH("-device");
		PUSH("virtio-blk-device,drive=d0");
		PUSH("-global");
		PUSH("virtio-mmio.force-legacy=false");
	}
	argv[argc] = NULL;
	return argc;
}

int bench_qemu_guest_code(int wait_status)
{
	if (!WIFEXITED(wait_status))
		return -1;
	int status = WEXITSTATUS(wait_status);
	return status & 1 ? status >> 1 : -1;
}

int64_t bench_qemu_kvm_exits(pid_t pid)
{
	/* KVM's per-VM debugfs directory is "<pid>-<vm fd>"; root only. */
	DIR *dir = opendir("/sys/kernel/debug/kvm");
	if (!dir)
		return -1;
	char prefix[32];
	int prefix_len = snprintf(prefix, sizeof(prefix), "%d-", (int)pid);
	int64_t exits = -1;
	struct dirent *entry;
	while ((entry = readdir(dir)) && exits < 0) {
		if (strncmp(entry->d_name, prefix, (size_t)prefix_len) != 0)
			continue;
		char path[512], text[64];
		snprintf(path, sizeof(path), "/sys/kernel/debug/kvm/%s/exits", entry->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, text, sizeof(text) - 1);
		close(fd);
		if (n > 0) {
			text[n] = '\0';
			exits = strtoll(text, NULL, 10);
		}
	}
	closedir(dir);
	return exits;
}
