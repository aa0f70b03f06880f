/* `kapsel run`: boot a guest from command-line options or a libvirt domain XML file. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/run_supervisor.h"
#include "config/guest_path.h"
#include "control/control.h"
#include "core/log.h"
#include "core/vm.h"
#include "core/sandbox.h"

void cli_run_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel run [OPTIONS] [DOMAIN.xml]\n"
		"\n"
		"Boot a guest kernel (an ELF64 x86-64 executable) and run it until it\n"
		"powers off.  Exits with the guest's exit code, %d if the guest crashed,\n"
		"%d if it was stopped from outside (kapsel destroy, SIGTERM), %d if\n"
		"Kapsel could not run it, 2 if the command line is wrong ('kapsel --help'\n"
		"lists every exit status).\n"
		"\n"
		"The VM comes from DOMAIN.xml (libvirt domain XML) or from options;\n"
		"options given after DOMAIN.xml override it.\n"
		"\n"
		"Options:\n"
		"  -k, --kernel FILE        guest kernel ELF image\n"
		"  -m, --memory SIZE        guest RAM, e.g. 64M or 1G (default 64M; multiple of 2M)\n"
		"      --vcpus N            vCPUs the VM has, 1 to %u (default 1); vCPU 0 boots,\n"
		"                           the guest starts the others (VCPU_UP, docs/abi.md)\n"
		"  -c, --cmdline TEXT       command line the guest reads from its start info\n"
		"  -n, --name NAME          VM name, unique on this host (default 'kapsel-PID')\n"
		"  -d, --disk SPEC          attach a disk image; SPEC is PATH[,format=raw|overlay]\n"
		"                           [,readonly][,bus=pv|ata][,cache=none|writeback]\n"
		"                           [,iops=N][,iops_burst=N][,bps=N][,bps_burst=N][,poll=US]\n"
		"      --net SPEC           attach a network interface (after the disks); SPEC is\n"
		"                           socket=PATH,peer=PATH (Unix datagram socket: bind PATH,\n"
		"                           send to the other VM's PATH; no root needed) or\n"
		"                           tap=IFNAME (/dev/net/tun), then [,model=pv|ne2000]\n"
		"                           [,mac=XX:XX:XX:XX:XX:XX][,pps=N][,pps_burst=N][,bps=N]\n"
		"                           [,bps_burst=N] (limits apply to frames the guest sends)\n"
		"      --rng[=SPEC]         attach the PV entropy device (bytes from getrandom);\n"
		"                           SPEC is [bps=N][,bps_burst=N][,iops=N][,iops_burst=N]\n"
		"      --console MODE       auto (PV console and UART; guest prefers PV) or uart\n"
		"      --console-output FILE[,max=SIZE]\n"
		"                           append guest console output to FILE, not stdout; FILE\n"
		"                           stops growing at SIZE (default 64M, 0: no cap)\n"
		"      --no-console-input   do not forward standard input to the guest\n"
		"      --overcommit         allow more --memory than this host has RAM\n"
		"      --no-control         do not serve a control socket (kapsel list, info,\n"
		"                           pause, shutdown, ... cannot reach this VM)\n"
		"      --save-on-signal DIR on SIGHUP, save the VM to DIR (kapsel restore DIR)\n"
		"      --save-stop          with --save-on-signal: stop the VM after saving\n"
		"      --incoming tcp:ADDR:PORT,psk=FILE  receive a live migration there over\n"
		"                           TLS with the pre-shared key in FILE and run it (kapsel\n"
		"                           migrate --psk FILE NAME tcp:ADDR:PORT on the source);\n"
		"                           ',insecure' instead of ',psk=FILE': plain TCP, INSECURE;\n"
		"                           the VM's kernel, memory and disks come from this command\n"
		"                           line or XML (as on the source), never from the stream\n"
		"      --daemon             run in the background: return once the VM runs (0), or\n"
		"                           with the error status if it could not start; needs\n"
		"                           --console-output FILE, where Kapsel's own messages go\n"
		"                           too from then on; no console input (kapsel console)\n"
		"      --pidfile FILE       write the PID of the process running the VM to FILE\n"
		"                           (atomically, once it runs); removed when it ends\n"
		"      --stats              print exit and device counters when the VM stops\n"
		"      --stats-file FILE    on SIGUSR1, write the counters to FILE (default stderr)\n" SANDBOX_USAGE
		"  -v, --verbose            log what Kapsel does\n"
		"  -h, --help               show this help\n"
		"\n"
		"Examples:\n"
		"  kapsel run --kernel build/guest-pv/examples/hello.elf --memory 64M\n"
		"  kapsel run examples/hello.xml\n"
		"  kapsel run --daemon --console-output web.log --pidfile web.pid -n web -k K.elf\n",
		KAPSEL_EXIT_GUEST_CRASH, KAPSEL_EXIT_STOPPED, KAPSEL_EXIT_VMM_ERROR,
		VM_CONFIG_MAX_VCPUS);
}

/* A kernel the XML names in the installed guest directory, from the
 * build tree when this kapsel runs there and nothing is installed
 * (config/guest_path.h); the operator is told which file runs. */
static void use_build_tree_guest(struct vm_config *config)
{
	static const char *const guest_dirs[] = { KAPSEL_GUEST_DIR, KAPSEL_EXAMPLES_GUEST_DIR,
						  NULL };
	char *built = guest_path_in_build_tree(config->kernel_path, guest_dirs, "/proc/self/exe");
	if (!built)
		return;
	kapsel_warn("%s is not installed; this build tree's kapsel runs %s (-k FILE chooses another)",
		    config->kernel_path, built);
	free(config->kernel_path);
	config->kernel_path = built;
}

static char *replace(char *old, const char *value)
{
	free(old);
	return strdup(value);
}

/* Guest RAM is allocated as the guest touches it, so a VM larger than the
 * host's RAM starts and is killed later, when memory runs out: refuse it
 * up front unless the operator asks for overcommit. */
static bool host_has_memory_for(uint64_t memory_bytes)
{
	struct sysinfo info;
	if (sysinfo(&info) < 0)
		return true; /* cannot tell: let the kernel decide */
	uint64_t host = (uint64_t)info.totalram * info.mem_unit;
	if (memory_bytes <= host)
		return true;
	kapsel_error("a VM with %llu MiB of RAM does not fit this host's %llu MiB; give less --memory, or --overcommit to start it anyway (it is killed if the host runs out)",
		     (unsigned long long)(memory_bytes >> 20), (unsigned long long)(host >> 20));
	return false;
}

/* --daemon and --pidfile: what the VM's process does once the VM runs. */
struct run_background {
	int ready_fd;		  /* --daemon: the waiting parent's pipe, else -1 */
	const char *log_path;	  /* --daemon: the console log, for stderr */
	int log_fd;		  /* --daemon: it, opened before the sandbox */
	int pidfile_dirfd;	  /* --pidfile: its folder, opened before any jail */
	char pidfile_name[256];	  /* its name in that folder */
	const char *pidfile_path; /* as given, for messages */
	bool pidfile_written;
};

/* Open --pidfile's folder now (a jail or dropped privileges may hide it
 * later).  Returns 0 or -errno (message printed). */
static int pidfile_prepare(struct run_background *bg, const char *path)
{
	const char *slash = strrchr(path, '/');
	const char *base = slash ? slash + 1 : path;
	if (!*base || strlen(base) >= sizeof(bg->pidfile_name) - 24) {
		kapsel_error("--pidfile '%s' does not name a file", path);
		return -EINVAL;
	}
	char folder[4096];
	snprintf(folder, sizeof(folder), "%.*s", slash ? (int)(slash - path) + 1 : 1,
		 slash ? path : ".");
	bg->pidfile_dirfd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (bg->pidfile_dirfd < 0) {
		kapsel_error("--pidfile '%s': cannot open its folder '%s': %s", path, folder,
			     strerror(errno));
		return -errno;
	}
	snprintf(bg->pidfile_name, sizeof(bg->pidfile_name), "%s", base);
	bg->pidfile_path = path;
	return 0;
}

/* Write the PID to a temporary file beside the pidfile, then rename it
 * over: a reader sees no file or a whole one. */
static int pidfile_write(struct run_background *bg)
{
	char temporary[sizeof(bg->pidfile_name) + 32];
	snprintf(temporary, sizeof(temporary), ".%s.%ld.tmp", bg->pidfile_name, (long)getpid());
	int fd = openat(bg->pidfile_dirfd, temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
			0644);
	int err = fd < 0 ? -errno : 0;
	if (!err && (dprintf(fd, "%ld\n", (long)getpid()) < 0 || fsync(fd) < 0))
		err = -errno;
	if (fd >= 0)
		close(fd);
	if (!err && renameat(bg->pidfile_dirfd, temporary, bg->pidfile_dirfd, bg->pidfile_name) < 0)
		err = -errno;
	if (err) {
		unlinkat(bg->pidfile_dirfd, temporary, 0);
		kapsel_error("cannot write the pidfile '%s': %s", bg->pidfile_path, strerror(-err));
		return err;
	}
	bg->pidfile_written = true;
	return 0;
}

/* run_supervisor_on_running, before the sandbox: the pidfile, and the
 * console log opened again for our stderr. */
static int background_prepare(void *opaque)
{
	struct run_background *bg = opaque;
	if (bg->pidfile_dirfd >= 0 && pidfile_write(bg) < 0)
		return -1;
	if (bg->ready_fd >= 0)
		bg->log_fd = open(bg->log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
	return 0;
}

/* run_supervisor_on_running, in the sandbox: the VM runs; tell the
 * waiting parent.  From now on nobody reads our stderr: Kapsel's messages
 * go to the console log, after the guest's output so far. */
static void background_running(void *opaque)
{
	struct run_background *bg = opaque;
	if (bg->ready_fd < 0)
		return;
	if (bg->log_fd >= 0) {
		fflush(stderr);
		dup3(bg->log_fd, STDERR_FILENO, 0);
		close(bg->log_fd);
		bg->log_fd = -1;
	}
	char running = 'R';
	ssize_t n = write(bg->ready_fd, &running, 1);
	(void)n;
	close(bg->ready_fd);
	bg->ready_fd = -1;
}

static void background_end(struct run_background *bg)
{
	if (bg->pidfile_written && unlinkat(bg->pidfile_dirfd, bg->pidfile_name, 0) < 0)
		kapsel_warn("cannot remove the pidfile '%s': %s", bg->pidfile_path,
			    strerror(errno));
	if (bg->pidfile_dirfd >= 0)
		close(bg->pidfile_dirfd);
	bg->pidfile_dirfd = -1;
	bg->pidfile_written = false;
}

/*
 * --daemon: fork; the child detaches (new session, stdin and stdout on
 * /dev/null) and returns -1 to go on starting the VM with *ready_fd set;
 * the parent waits until the child says the VM runs (returns 0) or ends
 * without saying so (returns the child's exit status: why it could not
 * start is on our shared stderr).
 */
static int daemon_start(int *ready_fd)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0) {
		kapsel_error("--daemon: cannot create a pipe: %s", strerror(errno));
		return KAPSEL_EXIT_VMM_ERROR;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		kapsel_error("--daemon: cannot fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return KAPSEL_EXIT_VMM_ERROR;
	}
	if (pid == 0) {
		close(fds[0]);
		setsid();
		int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (null_fd >= 0) {
			dup2(null_fd, STDIN_FILENO);
			dup2(null_fd, STDOUT_FILENO);
			close(null_fd);
		}
		*ready_fd = fds[1];
		return -1;
	}
	close(fds[1]);
	char byte;
	ssize_t n;
	while ((n = read(fds[0], &byte, 1)) < 0 && errno == EINTR)
		;
	close(fds[0]);
	if (n == 1)
		return 0;
	int wstatus;
	while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : KAPSEL_EXIT_VMM_ERROR;
}

int cli_run(int argc, char **argv)
{
	enum {
		OPT_CONSOLE = 256,
		OPT_CONSOLE_OUTPUT,
		OPT_NO_INPUT,
		OPT_STATS,
		OPT_STATS_FILE,
		OPT_NO_CONTROL,
		OPT_SAVE_ON_SIGNAL,
		OPT_SAVE_STOP,
		OPT_INCOMING,
		OPT_NET,
		OPT_RNG,
		OPT_OVERCOMMIT,
		OPT_VCPUS,
		OPT_DAEMON,
		OPT_PIDFILE
	};
	static const struct option options[] = {
		{ "kernel", required_argument, NULL, 'k' },
		{ "memory", required_argument, NULL, 'm' },
		{ "vcpus", required_argument, NULL, OPT_VCPUS },
		{ "cmdline", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, 'n' },
		{ "disk", required_argument, NULL, 'd' },
		{ "net", required_argument, NULL, OPT_NET },
		{ "rng", optional_argument, NULL, OPT_RNG },
		{ "console", required_argument, NULL, OPT_CONSOLE },
		{ "console-output", required_argument, NULL, OPT_CONSOLE_OUTPUT },
		{ "no-console-input", no_argument, NULL, OPT_NO_INPUT },
		{ "stats", no_argument, NULL, OPT_STATS },
		{ "no-control", no_argument, NULL, OPT_NO_CONTROL },
		{ "save-on-signal", required_argument, NULL, OPT_SAVE_ON_SIGNAL },
		{ "save-stop", no_argument, NULL, OPT_SAVE_STOP },
		{ "incoming", required_argument, NULL, OPT_INCOMING },
		{ "stats-file", required_argument, NULL, OPT_STATS_FILE },
		{ "overcommit", no_argument, NULL, OPT_OVERCOMMIT },
		{ "daemon", no_argument, NULL, OPT_DAEMON },
		{ "pidfile", required_argument, NULL, OPT_PIDFILE },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		SANDBOX_LONG_OPTIONS,
		{ 0 },
	};
	struct vm_config config;
	char error[512];
	int status = KAPSEL_EXIT_VMM_ERROR;
	bool name_given = false, use_control = true;
	struct control_server *control = NULL;
	const char *save_dir = NULL; /* --save-on-signal (run_supervisor.c) */
	bool save_stop = false;
	const char *incoming = NULL; /* --incoming: a live migration (run_supervisor.c) */
	bool overcommit = false;
	bool kernel_given = false; /* -k: the XML's kernel is not looked up */
	bool daemon = false;
	const char *pidfile = NULL;
	struct run_background background = { .ready_fd = -1, .log_fd = -1, .pidfile_dirfd = -1 };

	vm_config_init(&config);
	/* A domain XML file anywhere among the arguments is read first, so
	 * that options override it whatever their order. */
	for (int i = 1; i < argc; i++) {
		size_t len = strlen(argv[i]);
		if (argv[i][0] != '-' && len > 4 && strcmp(argv[i] + len - 4, ".xml") == 0 &&
		    !(i > 1 && argv[i - 1][0] == '-' && argv[i - 1][1] != '-' &&
		      strlen(argv[i - 1]) == 2)) {
			/* Room for the whole list of a definition's problems. */
			char xml_error[8192];
			if (vm_config_load_xml(argv[i], &config, xml_error, sizeof(xml_error)) <
			    0) {
				kapsel_error("%s", xml_error);
				goto out;
			}
		}
	}

	optind = 1;
	int opt;
	while ((opt = getopt_long(argc, argv, "k:m:c:n:d:vh", options, NULL)) != -1) {
		switch (opt) {
		case 'k':
			config.kernel_path = replace(config.kernel_path, optarg);
			kernel_given = true;
			break;
		case 'm': {
			int err = guest_memory_parse_size(optarg, &config.memory_bytes);
			if (err == -ERANGE) {
				kapsel_error("--memory '%s' is outside what a VM can have: a multiple of 2M between 4M and 64G, e.g. 64M or 1G",
					     optarg);
				goto usage;
			}
			if (err) {
				kapsel_error("--memory '%s' is not a valid size; use a multiple of 2M between 4M and 64G, e.g. 64M or 1G",
					     optarg);
				goto usage;
			}
			break;
		}
		case OPT_VCPUS:
			if (vm_config_parse_vcpus(optarg, &config.vcpus) < 0) {
				kapsel_error("--vcpus '%s' is not a valid vCPU count; use a whole number from 1 to %u",
					     optarg, VM_CONFIG_MAX_VCPUS);
				goto usage;
			}
			break;
		case 'c':
			if (strlen(optarg) >= KAPSEL_CMDLINE_MAX) {
				kapsel_error("--cmdline is %zu bytes; the limit is %u",
					     strlen(optarg), KAPSEL_CMDLINE_MAX - 1);
				goto usage;
			}
			config.cmdline = replace(config.cmdline, optarg);
			break;
		case 'n':
			if (vm_config_check_name(optarg, error, sizeof(error)) < 0) {
				kapsel_error("--name: %s", error);
				goto usage;
			}
			snprintf(config.name, sizeof(config.name), "%s", optarg);
			name_given = true;
			break;
		case 'd':
			if (config.disk_count == VM_CONFIG_MAX_DISKS) {
				kapsel_error("too many --disk options; the limit is %u",
					     VM_CONFIG_MAX_DISKS);
				goto usage;
			}
			if (vm_config_parse_disk(optarg, &config.disks[config.disk_count], error,
						 sizeof(error)) < 0) {
				kapsel_error("%s", error);
				goto usage;
			}
			config.disk_count++;
			break;
		case OPT_NET:
			if (config.net_count == VM_CONFIG_MAX_NETS) {
				kapsel_error("too many --net options; the limit is %u",
					     VM_CONFIG_MAX_NETS);
				goto usage;
			}
			if (vm_config_parse_net(optarg, &config.nets[config.net_count], error,
						sizeof(error)) < 0) {
				kapsel_error("%s", error);
				goto usage;
			}
			config.net_count++;
			break;
		case OPT_RNG: {
			/* --rng alone, --rng=SPEC, or --rng SPEC when the next word
			 * is a limit list (key=value, not a path or an option). */
			const char *spec = optarg;
			if (!spec && optind < argc && argv[optind][0] != '-' &&
			    strchr(argv[optind], '=') && !strchr(argv[optind], '/'))
				spec = argv[optind++];
			if (vm_config_parse_rng(spec, &config.rng, error, sizeof(error)) < 0) {
				kapsel_error("%s", error);
				goto usage;
			}
			break;
		}
		case OPT_CONSOLE:
			if (strcmp(optarg, "auto") == 0 || strcmp(optarg, "pv") == 0)
				config.console_mode = VM_CONSOLE_AUTO;
			else if (strcmp(optarg, "uart") == 0)
				config.console_mode = VM_CONSOLE_UART;
			else {
				kapsel_error("--console '%s' is unknown; use auto or uart", optarg);
				goto usage;
			}
			break;
		case OPT_CONSOLE_OUTPUT:
			if (vm_config_parse_console_output(optarg, &config, error, sizeof(error)) <
			    0) {
				kapsel_error("%s", error);
				goto usage;
			}
			break;
		case OPT_NO_INPUT:
			config.console_input = false;
			break;
		case OPT_STATS:
			config.print_stats = true;
			break;
		case OPT_NO_CONTROL:
			use_control = false;
			break;
		case OPT_SAVE_ON_SIGNAL:
			save_dir = optarg;
			break;
		case OPT_SAVE_STOP:
			save_stop = true;
			break;
		case OPT_INCOMING:
			incoming = optarg;
			break;
		case OPT_STATS_FILE:
			config.stats_path = replace(config.stats_path, optarg);
			break;
		case OPT_OVERCOMMIT:
			overcommit = true;
			break;
		case OPT_DAEMON:
			daemon = true;
			break;
		case OPT_PIDFILE:
			pidfile = optarg;
			break;
		case 'v':
			kapsel_log_set_verbose(true);
			break;
		case SANDBOX_OPT_NO_SANDBOX:
		case SANDBOX_OPT_USER:
		case SANDBOX_OPT_JAIL:
			if (sandbox_cli_option(opt, optarg) < 0)
				goto usage;
			break;
		case 'h':
			cli_run_usage(stdout);
			status = 0;
			goto out;
		default:
			fprintf(stderr, "Try 'kapsel run --help'.\n");
			goto usage;
		}
	}
	for (int i = optind; i < argc; i++) {
		size_t len = strlen(argv[i]);
		if (len <= 4 || strcmp(argv[i] + len - 4, ".xml") != 0) {
			kapsel_error("unexpected argument '%s'; a VM definition file must end in .xml",
				     argv[i]);
			goto usage;
		}
	}
	if (!kernel_given)
		use_build_tree_guest(&config);
	if (daemon && incoming) {
		kapsel_error(
			"--daemon does not work with --incoming yet; start the destination with '&' and --console-output FILE");
		goto usage;
	}
	if (daemon && !config.console_output_path) {
		kapsel_error(
			"--daemon needs --console-output FILE: the guest's console (and Kapsel's messages once the VM runs) go there");
		goto usage;
	}
	if (!overcommit && !host_has_memory_for(config.memory_bytes))
		goto out;
	if (pidfile && pidfile_prepare(&background, pidfile) < 0)
		goto out;
	if (daemon) {
		config.console_input = false;
		background.log_path = config.console_output_path;
		int parent_status = daemon_start(&background.ready_fd);
		if (parent_status >= 0) {
			/* The parent: the VM runs (0), or it could not start. */
			if (background.pidfile_dirfd >= 0)
				close(background.pidfile_dirfd);
			background.pidfile_dirfd = -1;
			status = parent_status;
			goto out;
		}
	}
	if (pidfile || daemon)
		run_supervisor_on_running(background_prepare, background_running, &background);
	if (incoming) {
		/* The VM's definition comes with it; the name only if given. */
		if (!name_given)
			config.name[0] = '\0';
		status = run_supervisor_incoming(incoming, &config, use_control);
		goto out;
	}
	if (!config.kernel_path) {
		kapsel_error(
			"no guest kernel; give --kernel FILE or a domain XML with <os><kernel>");
		fprintf(stderr, "Try 'kapsel run --help'.\n");
		goto usage;
	}

	/* Names are unique per host: an unnamed VM gets one of its own. */
	if (!name_given && !config.source_xml_path)
		snprintf(config.name, sizeof(config.name), "kapsel-%ld", (long)getpid());
	/* As libvirt does, a VM without a UUID gets a random (version 4) one. */
	if (!config.has_uuid &&
	    getrandom(config.uuid, sizeof(config.uuid), 0) == (ssize_t)sizeof(config.uuid)) {
		config.uuid[6] = (uint8_t)((config.uuid[6] & 0x0f) | 0x40);
		config.uuid[8] = (uint8_t)((config.uuid[8] & 0x3f) | 0x80);
		config.has_uuid = true;
	}
	/* Claim the name before anything else, so that starting the same VM
	 * twice fails on the name, not on a locked disk. */
	if (use_control && control_server_start(&control, config.name, error, sizeof(error)) < 0) {
		kapsel_error("%s", error);
		goto out;
	}
	struct kapsel_vm vm;
	if (vm_create(&vm, &config) < 0)
		goto out;
	if (control && control_server_attach(control, &vm, error, sizeof(error)) < 0) {
		kapsel_error("%s", error);
		control_server_stop(control);
		control = NULL;
		vm_destroy(&vm);
		goto out;
	}
	status =
		run_supervisor_until_stopped(&vm, control, save_dir, save_stop, config.print_stats);
	control = NULL;
	goto out;
usage:
	/* A command line that cannot describe a VM: nothing was started. */
	status = KAPSEL_EXIT_USAGE;
out:
	control_server_stop(control);
	run_supervisor_on_running(NULL, NULL, NULL);
	background_end(&background);
	if (background.ready_fd >= 0)
		close(background.ready_fd);
	if (background.log_fd >= 0)
		close(background.log_fd);
	vm_config_free(&config);
	return status;
}
