/* `kapsel list|info|pause|resume|shutdown|destroy|stats|console|dumpxml|control`: talk to running VMs' control sockets. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_json.h"
#include "config/config.h"
#include "control/control.h"
#include "control/control_client.h"
#include "control/control_json.h"
#include "core/clock.h"

#define REPLY_TIMEOUT_MS 30000
#define CONSOLE_ESCAPE 0x1d /* Ctrl-] */
/* After a script's input ends: end once the guest is quiet this long, or
 * at the latest this long after the end of input. */
#define CONSOLE_EOF_QUIET_MS 1000u
#define CONSOLE_EOF_LINGER_MS 10000u

int cli_connect_error(const char *name, int err)
{
	char dir[4096] = "?";
	control_runtime_dir(dir, sizeof(dir));
	switch (-err) {
	case ENOENT:
		fprintf(stderr,
			"kapsel: no VM named '%s' is running (no socket in %s); see 'kapsel list'\n",
			name, dir);
		break;
	case ECONNREFUSED:
		control_remove_stale(name);
		fprintf(stderr,
			"kapsel: VM '%s' is not running (removed its stale control socket)\n",
			name);
		break;
	case EACCES:
	case EPERM:
		fprintf(stderr,
			"kapsel: no permission to reach VM '%s' in %s; it belongs to another user\n",
			name, dir);
		break;
	case ETIMEDOUT:
		fprintf(stderr, "kapsel: VM '%s' did not answer within %d s\n", name,
			REPLY_TIMEOUT_MS / 1000);
		break;
	case ECONNRESET:
	case EPROTO:
		fprintf(stderr, "kapsel: VM '%s' closed the connection or answered garbage\n",
			name);
		break;
	default:
		fprintf(stderr, "kapsel: cannot talk to VM '%s': %s\n", name, strerror(-err));
		break;
	}
	return 1;
}

/*
 * Send request to name; on success *reply holds an ok reply and 0 is
 * returned, else the error is printed and 1 returned.
 */
static int call(const char *name, const char *request, struct control_reply *reply)
{
	int err = control_call(name, request, reply, REPLY_TIMEOUT_MS);
	if (err)
		return cli_connect_error(name, err);
	if (reply->errnum) {
		fprintf(stderr, "kapsel: %s: %s\n", name, reply->message);
		control_reply_free(reply);
		return 1;
	}
	return 0;
}

/* Common shape: `kapsel VERB NAME` with only --help. */
static const char *single_name(int argc, char **argv, void (*usage)(FILE *), int *status)
{
	static const struct option options[] = { { "help", no_argument, NULL, 'h' }, { 0 } };
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'h') {
			usage(stdout);
			*status = 0;
			return NULL;
		}
		fprintf(stderr, "Try '%s --help'.\n", argv[0]);
		*status = 2;
		return NULL;
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "%s: expected exactly one VM name\nTry '%s --help'.\n", argv[0],
			argv[0]);
		*status = 2;
		return NULL;
	}
	return argv[optind];
}

static void format_duration(uint64_t ns, char *buf, size_t len)
{
	uint64_t s = ns / 1000000000ull;
	if (s >= 86400)
		snprintf(buf, len, "%llud%02lluh", (unsigned long long)(s / 86400),
			 (unsigned long long)(s % 86400 / 3600));
	else if (s >= 3600)
		snprintf(buf, len, "%lluh%02llum", (unsigned long long)(s / 3600),
			 (unsigned long long)(s % 3600 / 60));
	else
		snprintf(buf, len, "%llum%02llus", (unsigned long long)(s / 60),
			 (unsigned long long)(s % 60));
}

/* ---- list ---------------------------------------------------------------- */

/* The VCPUS column: the VM's vCPU count, or UP/COUNT while fewer are up
 * (the guest has not brought them all up, or took some down). */
static void format_vcpus(const char *payload, char *out, size_t out_len)
{
	char value[128];
	if (!control_payload_get(payload, "vcpus", value, sizeof(value))) {
		snprintf(out, out_len, "-");
		return;
	}
	unsigned total = (unsigned)strtoul(value, NULL, 10), up = 0;
	bool listed = false; /* a Kapsel before SMP has no "vcpu K" lines */
	for (unsigned k = 0; k < total && k < VM_CONFIG_MAX_VCPUS; k++) {
		char key[16];
		snprintf(key, sizeof(key), "vcpu %u", k);
		if (!control_payload_get(payload, key, value, sizeof(value)))
			continue;
		listed = true;
		up += strncmp(value, "power up ", 9) == 0;
	}
	if (!listed || up == total)
		snprintf(out, out_len, "%u", total);
	else
		snprintf(out, out_len, "%u/%u", up, total);
}

/* One VM of list --json, from its JSON info (NULL: it did not answer). */
/* What a waiting 'kapsel run --incoming' wrote in its .incoming file. */
struct incoming_vm {
	char name[VM_CONFIG_NAME_MAX + 8]; /* "-" when the stream will name it */
	char listen[128];
	uint64_t memory_bytes, waited_ns;
	unsigned long vcpus;
	long pid; /* -1 when unknown */
};

static void parse_incoming(const char *payload, struct incoming_vm *vm)
{
	char memory[32] = "0", vcpus[16] = "1", pid[32] = "-1", started[32] = "0";
	memset(vm, 0, sizeof(*vm));
	snprintf(vm->name, sizeof(vm->name), "-");
	control_payload_get(payload, "name", vm->name, sizeof(vm->name));
	control_payload_get(payload, "listen", vm->listen, sizeof(vm->listen));
	control_payload_get(payload, "memory_bytes", memory, sizeof(memory));
	control_payload_get(payload, "vcpus", vcpus, sizeof(vcpus));
	control_payload_get(payload, "pid", pid, sizeof(pid));
	control_payload_get(payload, "started_unix", started, sizeof(started));
	vm->memory_bytes = strtoull(memory, NULL, 10);
	vm->vcpus = strtoul(vcpus, NULL, 10);
	vm->pid = strtol(pid, NULL, 10);
	uint64_t since = strtoull(started, NULL, 10), now = (uint64_t)time(NULL);
	vm->waited_ns = now > since ? (now - since) * 1000000000ull : 0;
}

/* One kapsel.list/1 entry for a VM waiting for its migration: no domain
 * id or UUID yet, nothing up; uptime_ns is how long it has waited. */
static json_t *incoming_entry(const struct incoming_vm *vm)
{
	json_t *name = strcmp(vm->name, "-") ? json_string(vm->name) : json_null();
	json_t *pid = vm->pid > 0 ? json_integer(vm->pid) : json_null();
	return json_pack("{s:o, s:n, s:n, s:s, s:I, s:I, s:i, s:I, s:o, s:s}", "name", name,
			 "domid", "uuid", "state", "incoming", "memory_bytes",
			 (json_int_t)vm->memory_bytes, "vcpu_count", (json_int_t)vm->vcpus,
			 "vcpus_up", 0, "uptime_ns", (json_int_t)vm->waited_ns, "pid", pid,
			 "listen", vm->listen);
}

static json_t *list_entry(const char *name, json_t *info)
{
	if (!info)
		return json_pack("{s:s, s:n, s:n, s:s, s:n, s:n, s:n, s:n, s:n}", "name", name,
				 "domid", "uuid", "state", "unknown", "memory_bytes", "vcpu_count",
				 "vcpus_up", "uptime_ns", "pid");
	json_int_t up = 0;
	size_t i;
	json_t *vcpu;
	json_array_foreach(json_object_get(info, "vcpus"), i, vcpu)
	{
		const char *power = json_string_value(json_object_get(vcpu, "power"));
		up += power && strcmp(power, "up") == 0;
	}
	return json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:I, s:O, s:O}", "name", name, "domid",
			 json_object_get(info, "domid"), "uuid", json_object_get(info, "uuid"),
			 "state", json_object_get(info, "state"), "memory_bytes",
			 json_object_get(info, "memory_bytes"), "vcpu_count",
			 json_object_get(info, "vcpu_count"), "vcpus_up", up, "uptime_ns",
			 json_object_get(info, "uptime_ns"), "pid", json_object_get(info, "pid"));
}

/* kapsel list --json: {"schema":"kapsel.list/1","vms":[...]}. */
static int list_json(void)
{
	char **names;
	int count = control_list_names(&names);
	if (count < 0) {
		fprintf(stderr, "kapsel list: cannot read the runtime directory: %s\n",
			strerror(-count));
		return 1;
	}
	json_t *vms = json_array();
	for (int i = 0; i < count; i++) {
		json_t *info = NULL;
		char message[256];
		if (cli_json_request(names[i], "info", &info, message, sizeof(message)))
			info = NULL;
		json_t *entry = list_entry(names[i], info);
		if (entry)
			json_array_append_new(vms, entry);
		json_decref(info);
	}
	control_free_names(names, count);
	char **waiting;
	int waiting_count = control_list_incoming(&waiting);
	for (int i = 0; i < waiting_count; i++) {
		struct incoming_vm vm;
		parse_incoming(waiting[i], &vm);
		json_t *entry = incoming_entry(&vm);
		if (entry)
			json_array_append_new(vms, entry);
	}
	if (waiting_count > 0)
		control_free_names(waiting, waiting_count);
	json_t *doc = json_pack("{s:s, s:o}", "schema", "kapsel.list/1", "vms", vms);
	if (!doc) {
		fprintf(stderr, "kapsel list: out of memory\n");
		return 1;
	}
	cli_json_print(doc, false);
	json_decref(doc);
	return 0;
}

void cli_list_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel list [--names | --json]\n"
		"\n"
		"List the VMs running on this host (those with a control socket in the\n"
		"runtime directory; see 'kapsel help info').  Stale sockets of VMs that\n"
		"died are removed on the way.  VCPUS is the VM's vCPU count, or UP/COUNT\n"
		"while the guest has fewer of them up.\n"
		"\n"
		"A 'kapsel run --incoming' waiting for its migration is listed after them\n"
		"with STATE 'incoming', no ID, and in UPTIME how long it has waited; its\n"
		"NAME is '-' unless given with --name (the stream names it).\n"
		"\n"
		"Options:\n"
		"  -q, --names   print only the names of running VMs, one per line\n"
		"      --json    print one JSON object (schema kapsel.list/1, docs/control.md;\n"
		"                waiting --incoming VMs with state \"incoming\")\n"
		"  -h, --help    show this help\n");
}

int cli_list(int argc, char **argv)
{
	static const struct option options[] = {
		{ "names", no_argument, NULL, 'q' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	bool names_only = false, json = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "qh", options, NULL)) != -1) {
		if (opt == 'q') {
			names_only = true;
		} else if (opt == 'j') {
			json = true;
		} else if (opt == 'h') {
			cli_list_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "Try 'kapsel list --help'.\n");
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "kapsel list: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (json && names_only) {
		fprintf(stderr, "kapsel list: --names and --json exclude each other\n");
		return 2;
	}
	if (json)
		return list_json();
	char **names;
	int count = control_list_names(&names);
	if (count < 0) {
		fprintf(stderr, "kapsel list: cannot read the runtime directory: %s\n",
			strerror(-count));
		return 1;
	}
	if (!names_only)
		printf("%5s  %-24s %-8s %8s %5s %10s %8s\n", "ID", "NAME", "STATE", "MEMORY",
		       "VCPUS", "UPTIME", "PID");
	for (int i = 0; i < count; i++) {
		if (names_only) {
			printf("%s\n", names[i]);
			continue;
		}
		struct control_reply reply;
		if (control_call(names[i], "info", &reply, REPLY_TIMEOUT_MS) || reply.errnum) {
			printf("%5s  %-24s %-8s\n", "-", names[i], "unknown");
			control_reply_free(&reply);
			continue;
		}
		char domid[32] = "-", state[32] = "?", memory[32] = "0", uptime[32] = "0",
		     pid[32] = "-", duration[32];
		control_payload_get(reply.payload, "domid", domid, sizeof(domid));
		control_payload_get(reply.payload, "state", state, sizeof(state));
		control_payload_get(reply.payload, "memory_bytes", memory, sizeof(memory));
		control_payload_get(reply.payload, "uptime_ns", uptime, sizeof(uptime));
		control_payload_get(reply.payload, "pid", pid, sizeof(pid));
		format_duration(strtoull(uptime, NULL, 10), duration, sizeof(duration));
		char vcpus[32];
		format_vcpus(reply.payload, vcpus, sizeof(vcpus));
		printf("%5s  %-24s %-8s %7lluM %5s %10s %8s\n", domid, names[i], state,
		       strtoull(memory, NULL, 10) >> 20, vcpus, duration, pid);
		control_reply_free(&reply);
	}
	control_free_names(names, count);
	/* VMs waiting for an incoming migration: no socket, no domain id yet;
	 * UPTIME is how long they have waited. */
	char **waiting;
	int waiting_count = names_only ? 0 : control_list_incoming(&waiting);
	for (int i = 0; i < waiting_count; i++) {
		struct incoming_vm vm;
		parse_incoming(waiting[i], &vm);
		char duration[32], pid[32] = "-";
		format_duration(vm.waited_ns, duration, sizeof(duration));
		if (vm.pid > 0)
			snprintf(pid, sizeof(pid), "%ld", vm.pid);
		printf("%5s  %-24s %-8s %7lluM %5lu %10s %8s\n", "-", vm.name, "incoming",
		       (unsigned long long)(vm.memory_bytes >> 20), vm.vcpus, duration, pid);
	}
	if (waiting_count > 0)
		control_free_names(waiting, waiting_count);
	return 0;
}

/* ---- info, pause, resume, destroy, dumpxml --------------------------------- */

void cli_info_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel info [--json] NAME\n"
		     "\n"
		     "Show a running VM: state, uptime, memory, vCPUs, devices and disks, one\n"
		     "'key value' pair per line (the control socket's 'info' reply), or with\n"
		     "--json one JSON object (schema kapsel.info/1, docs/control.md).\n"
		     "\n"
		     "Control sockets live in $KAPSEL_RUNTIME_DIR, else $XDG_RUNTIME_DIR/kapsel,\n"
		     "else /run/kapsel (root) or /tmp/kapsel-UID; see docs/control.md.\n");
}

static int print_payload_verb(int argc, char **argv, void (*usage)(FILE *), const char *request)
{
	int status = 0;
	const char *name = single_name(argc, argv, usage, &status);
	if (!name)
		return status;
	struct control_reply reply;
	if (call(name, request, &reply))
		return 1;
	fputs(reply.payload, stdout);
	control_reply_free(&reply);
	return 0;
}

/* `kapsel VERB [--json] NAME`: the parsed name (NULL with *status set
 * for --help or a usage error). */
static const char *name_and_json(int argc, char **argv, void (*usage)(FILE *), bool *json,
				 int *status)
{
	static const struct option options[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	int opt;
	optind = 1;
	*json = false;
	while ((opt = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (opt == 'j') {
			*json = true;
			continue;
		}
		*status = opt == 'h' ? 0 : 2;
		if (opt == 'h')
			usage(stdout);
		else
			fprintf(stderr, "Try '%s --help'.\n", argv[0]);
		return NULL;
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "%s: expected exactly one VM name\nTry '%s --help'.\n", argv[0],
			argv[0]);
		*status = 2;
		return NULL;
	}
	return argv[optind];
}

int cli_info(int argc, char **argv)
{
	bool json;
	int status = 0;
	const char *name = name_and_json(argc, argv, cli_info_usage, &json, &status);
	if (!name)
		return status;
	if (!json) {
		struct control_reply reply;
		if (call(name, "info", &reply))
			return 1;
		fputs(reply.payload, stdout);
		control_reply_free(&reply);
		return 0;
	}
	json_t *result;
	if (cli_json_call(name, "info", &result))
		return 1;
	cli_json_print(result, false);
	json_decref(result);
	return 0;
}

void cli_dumpxml_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel dumpxml NAME\n"
		     "\n"
		     "Print a running VM's definition as libvirt domain XML, with the\n"
		     "policy changes made since it started (kapsel control NAME set-limits).\n"
		     "Paths are absolute.  'kapsel run' accepts the output.\n");
}

int cli_dumpxml(int argc, char **argv)
{
	return print_payload_verb(argc, argv, cli_dumpxml_usage, "dumpxml");
}

void cli_pause_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel pause NAME\n"
		     "\n"
		     "Stop a running VM's vCPU.  Memory, devices and the console stay; the\n"
		     "guest's clock keeps running.  Resume it with 'kapsel resume NAME'.\n");
}

int cli_pause(int argc, char **argv)
{
	return print_payload_verb(argc, argv, cli_pause_usage, "pause");
}

void cli_resume_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel resume NAME\n\nLet a paused VM run again.\n");
}

int cli_resume(int argc, char **argv)
{
	return print_payload_verb(argc, argv, cli_resume_usage, "resume");
}

/* Read the end-of-VM reply of a request sent with wait=yes; prints how it ended. */
static int wait_for_end(int fd, const char *name)
{
	struct control_reply reply;
	int err = control_client_read_reply(fd, &reply, -1);
	if (err == -ECONNRESET) {
		printf("VM '%s' has ended\n", name);
		return 0;
	}
	if (err)
		return cli_connect_error(name, err);
	if (reply.errnum) {
		fprintf(stderr, "kapsel: %s: %s\n", name, reply.message);
		control_reply_free(&reply);
		return 1;
	}
	char code[32] = "?", reason[32] = "?";
	control_payload_get(reply.payload, "exit_code", code, sizeof(code));
	control_payload_get(reply.payload, "reason", reason, sizeof(reason));
	printf("VM '%s' ended: %s (exit code %s)\n", name, reason, code);
	control_reply_free(&reply);
	return 0;
}

void cli_destroy_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel destroy [--no-wait] VM...\n"
		     "\n"
		     "End VMs at once, without telling their guests (see 'kapsel shutdown' for\n"
		     "the graceful way).  Waits until every VM named has ended unless\n"
		     "--no-wait.  A VM is named by its name, its domain id or its UUID.\n");
}

enum end_kind {
	END_DESTROY,
	END_SHUTDOWN,
	END_REBOOT
};

/* Send one VM its destroy, shutdown or reboot request; returns the
 * connection to wait on (waiting: shutdown and destroy without --no-wait),
 * -1 when there is nothing to wait for, or -2 after printing a failure. */
static int send_end_request(const char *name, enum end_kind kind, bool wait, const char *timeout)
{
	char request[128];
	if (kind == END_DESTROY)
		snprintf(request, sizeof(request), wait ? "destroy wait=yes" : "destroy");
	else
		snprintf(request, sizeof(request), "shutdown wait=%s%s%s%s",
			 wait && kind == END_SHUTDOWN ? "yes" : "no",
			 kind == END_REBOOT ? " mode=reboot" : "", timeout ? " timeout=" : "",
			 timeout ? timeout : "");
	int fd = control_connect(name);
	if (fd < 0) {
		cli_connect_error(name, fd);
		return -2;
	}
	struct control_reply reply;
	if (kind == END_REBOOT) {
		/* A guest that does not handle requests would only be destroyed
		 * at the deadline: refuse instead of ending it. */
		char aware[8] = "yes";
		int err = control_client_request(fd, "info", &reply, REPLY_TIMEOUT_MS);
		if (err) {
			close(fd);
			cli_connect_error(name, err);
			return -2;
		}
		control_payload_get(reply.payload, "guest_handles_shutdown", aware, sizeof(aware));
		control_reply_free(&reply);
		if (strcmp(aware, "yes") != 0) {
			close(fd);
			fprintf(stderr,
				"kapsel: the guest of '%s' does not handle reboot requests; use 'kapsel destroy %s' and start it again\n",
				name, name);
			return -2;
		}
	}
	int err = control_client_request(fd, request, &reply, REPLY_TIMEOUT_MS);
	if (err) {
		close(fd);
		cli_connect_error(name, err);
		return -2;
	}
	if (reply.errnum) {
		fprintf(stderr, "kapsel: %s: %s\n", name, reply.message);
		control_reply_free(&reply);
		close(fd);
		return -2;
	}
	if (kind != END_DESTROY) {
		char aware[8] = "yes", seconds[32] = "?";
		control_payload_get(reply.payload, "guest_handles_shutdown", aware, sizeof(aware));
		control_payload_get(reply.payload, "timeout_s", seconds, sizeof(seconds));
		if (strcmp(aware, "yes") != 0)
			fprintf(stderr,
				"kapsel: warning: the guest of '%s' does not handle shutdown requests; it will be destroyed in %s s\n",
				name, seconds);
		if (kind == END_REBOOT)
			printf("VM '%s' was asked to reboot\n", name);
	}
	control_reply_free(&reply);
	if (kind == END_REBOOT || !wait) {
		close(fd);
		return -1;
	}
	return fd;
}

/* shutdown, reboot and destroy of one or more VMs: every request is sent
 * first, so several VMs end together; then (unless --no-wait) each end is
 * waited for.  Exit status 0 only if every VM did as asked. */
static int end_vms(int argc, char **argv, enum end_kind kind)
{
	static const struct option options[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "no-wait", no_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	static void (*const usage[])(FILE *) = {
		[END_DESTROY] = cli_destroy_usage,
		[END_SHUTDOWN] = cli_shutdown_usage,
		[END_REBOOT] = cli_reboot_usage,
	};
	bool wait = true;
	const char *timeout = NULL;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, kind == END_DESTROY ? "h" : "t:h", options, NULL)) !=
	       -1) {
		switch (opt) {
		case 't':
			if (kind == END_DESTROY)
				goto bad;
			timeout = optarg;
			break;
		case 'n':
			if (kind == END_REBOOT)
				goto bad;
			wait = false;
			break;
		case 'h':
			usage[kind](stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "%s: expected one or more VM names\n", argv[0]);
		goto bad;
	}
	if (timeout) {
		char *end;
		if ((strtoul(timeout, &end, 10), !*timeout || *end || *timeout == '-')) {
			fprintf(stderr, "%s: --timeout '%s' is not a whole number of seconds\n",
				argv[0], timeout);
			return 2;
		}
	}
	int count = argc - optind, status = 0;
	int *fds = calloc((size_t)count, sizeof(*fds));
	if (!fds) {
		fprintf(stderr, "kapsel: out of memory\n");
		return 1;
	}
	for (int i = 0; i < count; i++) {
		fds[i] = send_end_request(argv[optind + i], kind, wait, timeout);
		if (fds[i] == -2)
			status = 1;
	}
	for (int i = 0; i < count; i++) {
		if (fds[i] < 0)
			continue;
		if (wait_for_end(fds[i], argv[optind + i]))
			status = 1;
		close(fds[i]);
	}
	free(fds);
	return status;
bad:
	fprintf(stderr, "Try '%s --help'.\n", argv[0]);
	return 2;
}

int cli_destroy(int argc, char **argv)
{
	return end_vms(argc, argv, END_DESTROY);
}

void cli_shutdown_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel shutdown [--timeout SECONDS] [--no-wait] VM...\n"
		     "\n"
		     "Ask VMs' guests to power off (an event the guest sees; see docs/abi.md,\n"
		     "control requests) and wait until the VMs have ended.  A guest that has not\n"
		     "powered off after the timeout is destroyed.  A guest that does not handle\n"
		     "requests is reported at once and destroyed when the timeout expires.\n"
		     "A VM is named by its name, its domain id or its UUID.\n"
		     "\n"
		     "Options:\n"
		     "  -t, --timeout SECONDS  how long each guest gets (default 10)\n"
		     "      --no-wait          return once the guests have been told\n"
		     "  -h, --help             show this help\n");
}

int cli_shutdown(int argc, char **argv)
{
	return end_vms(argc, argv, END_SHUTDOWN);
}

void cli_reboot_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel reboot [--timeout SECONDS] VM...\n"
		     "\n"
		     "Ask VMs' guests to shut down and boot again (the guest sees the request\n"
		     "and ends with SHUTDOWN(REBOOT); the VM then boots anew with the same\n"
		     "definition, as on_reboot='restart' does).  Returns once each guest has\n"
		     "been told.  A guest that has not rebooted after the timeout is destroyed;\n"
		     "a guest that does not handle requests is refused, not destroyed.\n"
		     "\n"
		     "Options:\n"
		     "  -t, --timeout SECONDS  how long each guest gets (default 10)\n"
		     "  -h, --help             show this help\n");
}

int cli_reboot(int argc, char **argv)
{
	return end_vms(argc, argv, END_REBOOT);
}

/* ---- stats ----------------------------------------------------------------- */

void cli_stats_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel stats [--json] [--watch [SECONDS]] NAME\n"
		"\n"
		"Print a VM's counters: exits by reason, hypercalls, and every device's\n"
		"counters (disk operations, bytes, denials, rate limiting, latency).\n"
		"\n"
		"Options:\n"
		"  -w, --watch [SECONDS]  print them again every SECONDS (default 1) until\n"
		"                         the VM ends or you interrupt, each counter with\n"
		"                         its rate per second over the last interval\n"
		"      --json             one JSON object (schema kapsel.stats/1,\n"
		"                         docs/control.md); with --watch one object per\n"
		"                         line and interval, with \"rates\" beside the totals\n"
		"  -h, --help             show this help\n");
}

/* Per-second rates of the integer members of counters against the same
 * members of previous, over seconds; NULL without a previous sample.  A
 * counter that went back (the VM restored or rebooted) gets null. */
static json_t *counter_rates(json_t *counters, json_t *previous, double seconds)
{
	if (!json_is_object(previous) || seconds <= 0)
		return json_null();
	json_t *rates = json_object();
	const char *key;
	json_t *value;
	json_object_foreach(counters, key, value)
	{
		json_t *before = json_object_get(previous, key);
		if (!json_is_integer(value) || !json_is_integer(before))
			continue;
		json_int_t now = json_integer_value(value), then = json_integer_value(before);
		json_object_set_new(rates, key,
				    now >= then ? json_real((double)(now - then) / seconds)
						: json_null());
	}
	return rates;
}

/* The device of previous with the same index and name, or NULL. */
static json_t *previous_device(json_t *previous, json_t *device)
{
	size_t i;
	json_t *d;
	json_array_foreach(json_object_get(previous, "devices"), i, d)
	{
		if (json_equal(json_object_get(d, "index"), json_object_get(device, "index")) &&
		    json_equal(json_object_get(d, "name"), json_object_get(device, "name")))
			return d;
	}
	return NULL;
}

/* Add "interval_ns" and "rates" (the VM's, and each device's) to a stats
 * result, against the previous sample (NULL: the first, rates null). */
static void add_rates(json_t *stats, json_t *previous)
{
	json_int_t now = json_integer_value(json_object_get(stats, "uptime_ns"));
	json_int_t then = previous ? json_integer_value(json_object_get(previous, "uptime_ns")) : 0;
	double seconds = previous && now > then ? (double)(now - then) / 1e9 : 0;
	json_object_set_new(stats, "interval_ns",
			    seconds > 0 ? json_integer(now - then) : json_null());
	json_object_set_new(stats, "rates",
			    counter_rates(json_object_get(stats, "counters"),
					  previous ? json_object_get(previous, "counters") : NULL,
					  seconds));
	size_t i;
	json_t *device;
	json_array_foreach(json_object_get(stats, "devices"), i, device)
	{
		json_t *before = previous ? previous_device(previous, device) : NULL;
		json_object_set_new(device, "rates",
				    counter_rates(json_object_get(device, "counters"),
						  before ? json_object_get(before, "counters")
							 : NULL,
						  seconds));
	}
}

static void print_counters_text(json_t *counters, json_t *rates)
{
	const char *key;
	json_t *value;
	json_object_foreach(counters, key, value)
	{
		if (json_is_integer(value))
			printf("  %s: %" JSON_INTEGER_FORMAT, key, json_integer_value(value));
		else
			printf("  %s: %s", key,
			       json_is_string(value) ? json_string_value(value) : "?");
		json_t *rate = json_object_get(rates, key);
		if (json_is_real(rate))
			printf("  (%.1f/s)", json_real_value(rate));
		putchar('\n');
	}
}

/* A watched sample as text: the shape of 'kapsel stats', each counter
 * followed by its rate over the interval. */
static void print_stats_text(json_t *stats)
{
	printf("vm %s: uptime_ns %" JSON_INTEGER_FORMAT "\n",
	       json_string_value(json_object_get(stats, "name")),
	       json_integer_value(json_object_get(stats, "uptime_ns")));
	print_counters_text(json_object_get(stats, "counters"), json_object_get(stats, "rates"));
	size_t i;
	json_t *device;
	json_array_foreach(json_object_get(stats, "devices"), i, device)
	{
		printf("device %" JSON_INTEGER_FORMAT " %s:\n",
		       json_integer_value(json_object_get(device, "index")),
		       json_string_value(json_object_get(device, "name")));
		print_counters_text(json_object_get(device, "counters"),
				    json_object_get(device, "rates"));
	}
}

int cli_stats(int argc, char **argv)
{
	const char *name = NULL;
	double interval_s = 0;
	bool json = false;
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
			cli_stats_usage(stdout);
			return 0;
		}
		if (strcmp(arg, "--json") == 0) {
			json = true;
			continue;
		}
		if (strcmp(arg, "-w") == 0 || strcmp(arg, "--watch") == 0 ||
		    strncmp(arg, "--watch=", 8) == 0) {
			interval_s = 1;
			const char *value = arg[1] == '-' && arg[7] == '=' ? arg + 8 : NULL;
			char *end;
			if (!value && i + 1 < argc && argv[i + 1][0] >= '0' &&
			    argv[i + 1][0] <= '9')
				value = argv[++i];
			if (value) {
				interval_s = strtod(value, &end);
				if (*end || interval_s < 0.05 || interval_s > 86400) {
					fprintf(stderr,
						"kapsel stats: --watch '%s' must be a number of seconds (0.05 or more)\n",
						value);
					return 2;
				}
			}
			continue;
		}
		if (arg[0] == '-' || name) {
			fprintf(stderr,
				"kapsel stats: unexpected argument '%s'\nTry 'kapsel stats --help'.\n",
				arg);
			return 2;
		}
		name = arg;
	}
	if (!name) {
		fprintf(stderr, "kapsel stats: expected a VM name\nTry 'kapsel stats --help'.\n");
		return 2;
	}
	if (interval_s <= 0 && !json) {
		/* Once, as text: the VM's own lines, unchanged. */
		struct control_reply reply;
		if (call(name, "stats", &reply))
			return 1;
		fputs(reply.payload, stdout);
		control_reply_free(&reply);
		return 0;
	}
	if (interval_s <= 0) {
		json_t *result;
		if (cli_json_call(name, "stats", &result))
			return 1;
		cli_json_print(result, false);
		json_decref(result);
		return 0;
	}
	json_t *previous = NULL;
	for (unsigned round = 0;; round++) {
		json_t *stats;
		char message[1024];
		int err = cli_json_request(name, "stats", &stats, message, sizeof(message));
		if (err && !message[0] && round > 0 &&
		    (err == -ENOENT || err == -ECONNREFUSED || err == -ECONNRESET)) {
			if (!json)
				printf("VM '%s' has ended\n", name);
			json_decref(previous);
			return 0;
		}
		if (err) {
			json_decref(previous);
			if (message[0]) {
				fprintf(stderr, "kapsel: %s: %s\n", name, message);
				return 1;
			}
			return cli_connect_error(name, err);
		}
		add_rates(stats, previous);
		if (json) {
			cli_json_print(stats, true);
		} else {
			time_t now = time(NULL);
			struct tm tm;
			localtime_r(&now, &tm);
			printf("--- %s %02d:%02d:%02d\n", name, tm.tm_hour, tm.tm_min, tm.tm_sec);
			print_stats_text(stats);
			fflush(stdout);
		}
		json_decref(previous);
		previous = stats;
		struct timespec pause = { (time_t)interval_s,
					  (long)((interval_s - (double)(time_t)interval_s) * 1e9) };
		nanosleep(&pause, NULL);
	}
}

/* ---- console --------------------------------------------------------------- */

void cli_console_usage(FILE *out)
{
	fprintf(out,
		"Usage: kapsel console [--follow] NAME\n"
		"\n"
		"Attach to a running VM's console: recent and new guest output is shown\n"
		"and what you type goes to the guest.  Several consoles may be attached at\n"
		"once; the VM keeps running when one detaches.\n"
		"\n"
		"On a terminal, Ctrl-] detaches.  When standard input is not a terminal\n"
		"(a pipe, a file), every byte goes to the guest, Ctrl-] included, and the\n"
		"end of input ends 'kapsel console' once the guest has been quiet for %u ms\n"
		"(at most %u s after the end of input), so that it shows the answer to the\n"
		"last line.  It also ends when the VM does.\n"
		"\n"
		"  --follow   send no input; show output until the VM ends (or Ctrl-C)\n",
		CONSOLE_EOF_QUIET_MS, CONSOLE_EOF_LINGER_MS / 1000);
}

static struct termios saved_termios;
static bool termios_saved;

static void restore_terminal(void)
{
	if (termios_saved)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved_termios);
	termios_saved = false;
}

int cli_write_all(int fd, const char *data, size_t len)
{
	while (len) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

int cli_console(int argc, char **argv)
{
	static const struct option options[] = { { "follow", no_argument, NULL, 'f' },
						 { "help", no_argument, NULL, 'h' },
						 { 0 } };
	bool follow = false;
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "fh", options, NULL)) != -1) {
		if (opt == 'f') {
			follow = true;
		} else if (opt == 'h') {
			cli_console_usage(stdout);
			return 0;
		} else {
			fprintf(stderr, "Try 'kapsel console --help'.\n");
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "%s: expected exactly one VM name\nTry 'kapsel console --help'.\n",
			argv[0]);
		return 2;
	}
	const char *name = argv[optind];
	int fd = control_connect(name);
	if (fd < 0)
		return cli_connect_error(name, fd);
	struct control_reply reply;
	int err = control_client_request(fd, "console", &reply, REPLY_TIMEOUT_MS);
	if (err) {
		close(fd);
		return cli_connect_error(name, err);
	}
	if (reply.errnum) {
		fprintf(stderr, "kapsel: %s: %s\n", name, reply.message);
		control_reply_free(&reply);
		close(fd);
		return 1;
	}
	control_reply_free(&reply);
	bool tty = !follow && isatty(STDIN_FILENO);
	if (tty && tcgetattr(STDIN_FILENO, &saved_termios) == 0) {
		struct termios raw = saved_termios;
		cfmakeraw(&raw);
		/* Raw input, but keep output processing: guest lines end in
		 * a bare \n, which a raw terminal would staircase. */
		raw.c_oflag |= OPOST | ONLCR;
		termios_saved = true;
		atexit(restore_terminal);
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
		fprintf(stderr, "Connected to VM '%s'; press Ctrl-] to detach.\r\n", name);
	}
	signal(SIGPIPE, SIG_IGN);
	bool input_open = !follow;
	uint64_t input_ended_ms = 0; /* when a non-terminal input ended */
	for (;;) {
		struct pollfd fds[2] = { { .fd = fd, .events = POLLIN },
					 { .fd = STDIN_FILENO, .events = POLLIN } };
		int timeout = -1;
		if (input_ended_ms) {
			/* The end of a script's input: linger while the guest answers. */
			uint64_t now = monotonic_ns() / 1000000ull;
			if (now >= input_ended_ms + CONSOLE_EOF_LINGER_MS)
				break;
			timeout = (int)(input_ended_ms + CONSOLE_EOF_LINGER_MS - now);
			if (timeout > (int)CONSOLE_EOF_QUIET_MS)
				timeout = CONSOLE_EOF_QUIET_MS;
		}
		int ready = poll(fds, input_open ? 2 : 1, timeout);
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (ready == 0 && input_ended_ms)
			break; /* quiet for CONSOLE_EOF_QUIET_MS: done */
		if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			char buf[4096];
			ssize_t n = read(fd, buf, sizeof(buf));
			if (n <= 0) {
				restore_terminal();
				fprintf(stderr, "\nkapsel: VM '%s' has ended\n", name);
				break;
			}
			if (cli_write_all(STDOUT_FILENO, buf, (size_t)n) < 0)
				break;
		}
		if (input_open && (fds[1].revents & (POLLIN | POLLHUP))) {
			char buf[1024];
			ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
			if (n <= 0) {
				input_open = false;
				/* A terminal's end of input (Ctrl-D is a byte in raw
				 * mode; this is a hang-up) keeps showing output; a
				 * script's ends the client after a short linger. */
				if (!tty)
					input_ended_ms = monotonic_ns() / 1000000ull;
				continue;
			}
			char *escape = tty ? memchr(buf, CONSOLE_ESCAPE, (size_t)n) : NULL;
			size_t len = escape ? (size_t)(escape - buf) : (size_t)n;
			if (len && cli_write_all(fd, buf, len) < 0)
				break;
			if (escape) {
				restore_terminal();
				fprintf(stderr, "\nDetached from VM '%s'.\n", name);
				break;
			}
		}
	}
	restore_terminal();
	close(fd);
	return 0;
}

/* ---- control: any request, raw --------------------------------------------- */

void cli_control_usage(FILE *out)
{
	fprintf(out, "Usage: kapsel control [--json] NAME REQUEST [KEY=VALUE ...]\n"
		     "\n"
		     "Send one request to a VM's control socket and print the reply's payload;\n"
		     "an error reply is printed on stderr and exits 1.  'kapsel control NAME\n"
		     "help' lists the requests the VM understands, for example\n"
		     "  kapsel control web set-limits disk=0 iops=500 readonly=yes\n"
		     "With --json the request goes in the socket's JSON form (VALUEs as JSON\n"
		     "strings, unescaped) and the whole JSON reply is printed, one line; an\n"
		     "error reply is printed too, and exits 1.\n"
		     "See docs/control.md for the protocol.\n");
}

/* kapsel control --json NAME VERB [KEY=VALUE ...] (argv[0] is --json). */
static int control_json(int argc, char **argv)
{
	if (argc < 3) {
		fprintf(stderr,
			"kapsel control: expected a VM name and a request\nTry 'kapsel control --help'.\n");
		return 2;
	}
	json_t *args = json_object();
	for (int i = 3; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		if (!eq || eq == argv[i]) {
			fprintf(stderr, "kapsel control: argument '%s' is not KEY=VALUE\n",
				argv[i]);
			json_decref(args);
			return 2;
		}
		*eq = '\0';
		json_object_set_new(args, argv[i], json_string(eq + 1));
		*eq = '=';
	}
	json_t *request = json_pack("{s:i, s:s, s:o}", "version", CONTROL_JSON_VERSION, "verb",
				    argv[2], "args", args);
	if (!request) {
		fprintf(stderr, "kapsel control: the request is not valid UTF-8 text\n");
		return 2;
	}
	json_t *reply;
	int err = cli_json_exchange(argv[1], request, &reply);
	json_decref(request);
	if (err == -E2BIG) {
		fprintf(stderr, "kapsel control: the request is longer than %u bytes\n",
			CONTROL_REQUEST_MAX_BYTES - 1);
		return 2;
	}
	if (err)
		return cli_connect_error(argv[1], err);
	cli_json_print(reply, true);
	int status = json_is_true(json_object_get(reply, "ok")) ? 0 : 1;
	json_decref(reply);
	return status;
}

int cli_control(int argc, char **argv)
{
	if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
		cli_control_usage(stdout);
		return 0;
	}
	if (argc > 1 && strcmp(argv[1], "--json") == 0)
		return control_json(argc - 1, argv + 1);
	if (argc < 3) {
		fprintf(stderr,
			"kapsel control: expected a VM name and a request\nTry 'kapsel control --help'.\n");
		return 2;
	}
	char request[CONTROL_REQUEST_MAX_BYTES];
	size_t used = 0;
	for (int i = 2; i < argc; i++) {
		int n = snprintf(request + used, sizeof(request) - used, "%s%s", i > 2 ? " " : "",
				 argv[i]);
		if (n < 0 || (size_t)n >= sizeof(request) - used) {
			fprintf(stderr, "kapsel control: the request is longer than %u bytes\n",
				CONTROL_REQUEST_MAX_BYTES - 1);
			return 2;
		}
		used += (size_t)n;
	}
	struct control_reply reply;
	if (call(argv[1], request, &reply))
		return 1;
	fputs(reply.payload, stdout);
	control_reply_free(&reply);
	return 0;
}
