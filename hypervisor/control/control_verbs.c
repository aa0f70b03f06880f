/* The control socket's built-in requests: info, pause, resume, shutdown, destroy, stats, set-limits, dumpxml, help. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/control_internal.h"
#include "control/control_json.h"
#include "devices/block/disk.h"
#include "devices/device.h"
#include "devices/devices.h"
#include "core/error_text.h"
#include "core/vm.h"

#define SHUTDOWN_DEFAULT_TIMEOUT_S 10u
#define SHUTDOWN_MAX_TIMEOUT_S 86400u

static const char *const no_keys[] = { NULL };

/* The disk image of config disk index, or NULL. */
static struct disk_image *find_disk(struct kapsel_vm *vm, unsigned index)
{
	struct kapsel_device *dev = devices_find_disk(vm, index);
	return dev ? dev->ops->disk_image(dev) : NULL;
}

/* CPU time of Linux thread tid of this process (ns), or 0 when it has
 * not run yet (tid 0) or has ended.  The clock id is the kernel's
 * per-thread CPU clock of tid, the one pthread_getcpuclockid hands out,
 * made from the tid so that a vCPU thread that never started (or was
 * joined) is never looked up through a stale pthread_t; the kernel only
 * answers it for threads of this process. */
static uint64_t thread_cpu_time_ns(int tid)
{
	struct timespec ts;
	if (tid <= 0)
		return 0;
	clockid_t clock = (clockid_t)((~(unsigned)tid << 3) | 4u /* per thread */ | 2u /* sched */);
	if (clock_gettime(clock, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The host CPU Linux thread tid of this process last ran on (field 39 of
 * its stat), or -1. */
static int thread_host_cpu(int tid)
{
	char path[64], line[1024];
	if (tid <= 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	/* Fields after the command (which may hold spaces) start after ')'. */
	char *p = strrchr(line, ')');
	int field = 2, cpu = -1;
	char *save = NULL;
	for (char *tok = p ? strtok_r(p + 1, " ", &save) : NULL; tok;
	     tok = strtok_r(NULL, " ", &save))
		if (++field == 39) {
			cpu = atoi(tok);
			break;
		}
	return cpu;
}

static int vcpu_tid(const struct kapsel_vcpu *vcpu)
{
	return __atomic_load_n(&vcpu->tid, __ATOMIC_RELAXED);
}

/* One vCPU's figures for info: E the sum of its exit counters (each
 * written only by its own thread; a slightly stale sum is fine for a
 * report). */
struct vcpu_figures {
	const char *power;
	bool blocked;
	uint64_t exits, cpu_time_ns;
	int host_cpu;
};

static void vcpu_figures(struct kapsel_vcpu *vcpu, struct vcpu_figures *f)
{
	f->exits = 0;
	for (unsigned i = 0; i < VM_EXIT_COUNTER_COUNT; i++)
		f->exits += __atomic_load_n(&vcpu->exits[i], __ATOMIC_RELAXED);
	int tid = vcpu_tid(vcpu);
	f->power = vcpu_power_name(__atomic_load_n(&vcpu->power, __ATOMIC_RELAXED));
	f->blocked = __atomic_load_n(&vcpu->blocked, __ATOMIC_RELAXED);
	f->cpu_time_ns = thread_cpu_time_ns(tid);
	f->host_cpu = thread_host_cpu(tid);
}

/* Everything info reports, gathered once for either form. */
struct info_figures {
	char uuid[37];
	uint64_t uptime_ns, paused_ns;
	struct vcpu_figures boot;
	bool guest_handles_shutdown;
};

static void info_figures(struct kapsel_vm *vm, struct info_figures *f)
{
	const uint8_t *u = vm->config->uuid;
	snprintf(f->uuid, sizeof(f->uuid),
		 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
		 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
		 u[15]);
	pthread_mutex_lock(&vm->pause_lock);
	f->uptime_ns = vm_clock_ns(vm);
	f->paused_ns = vm->paused_total_ns +
		       (vm->state == VM_STATE_PAUSED ? f->uptime_ns - vm->paused_since_ns : 0);
	pthread_mutex_unlock(&vm->pause_lock);
	/* cpu_time_ns, vcpu_blocked and vcpu_host_cpu are the boot vCPU's
	 * (as before SMP); the per-vCPU lines have every vCPU's. */
	vcpu_figures(vm_boot_vcpu(vm), &f->boot);
	uint32_t control_mask =
		(uint32_t)((__atomic_load_n(&vm->events->mask[KAPSEL_EVTCHN_CONTROL / 64],
					    __ATOMIC_RELAXED) >>
			    (KAPSEL_EVTCHN_CONTROL % 64)) &
			   1);
	f->guest_handles_shutdown = !control_mask;
}

static bool disk_readonly(struct kapsel_vm *vm, unsigned index)
{
	struct disk_image *disk = find_disk(vm, index);
	return disk ? __atomic_load_n(&disk->readonly, __ATOMIC_RELAXED)
		    : vm->config->disks[index].readonly;
}

/* info as one JSON object (schema kapsel.info/1, docs/control.md). */
static void info_json(struct kapsel_vm *vm, const struct info_figures *f, FILE *out)
{
	const struct vm_config *config = vm->config;
	struct json_writer w;
	json_writer_init(&w, out, false);
	json_writer_open(&w, NULL, '{');
	json_writer_string(&w, "schema", "kapsel.info/1");
	json_writer_string(&w, "name", config->name);
	json_writer_string(&w, "uuid", f->uuid);
	json_writer_u64(&w, "domid", control_server_domid(vm));
	json_writer_i64(&w, "pid", (int64_t)getpid());
	json_writer_string(&w, "state", vm_state_name(vm));
	json_writer_u64(&w, "uptime_ns", f->uptime_ns);
	json_writer_u64(&w, "paused_ns", f->paused_ns);
	json_writer_u64(&w, "started_unix", control_server_started_unix(vm));
	json_writer_u64(&w, "memory_bytes", vm->mem.size_bytes);
	json_writer_u64(&w, "vcpu_count", config->vcpus ? config->vcpus : 1);
	json_writer_open(&w, "vcpus", '[');
	for (unsigned k = 0; k < vm->vcpu_count && k < KAPSEL_MAX_VCPUS; k++) {
		struct vcpu_figures v;
		vcpu_figures(&vm->vcpus[k], &v);
		json_writer_open(&w, NULL, '{');
		json_writer_u64(&w, "id", k);
		json_writer_string(&w, "power", v.power);
		json_writer_bool(&w, "blocked", v.blocked);
		json_writer_u64(&w, "exits", v.exits);
		json_writer_u64(&w, "cpu_time_ns", v.cpu_time_ns);
		json_writer_i64(&w, "host_cpu", v.host_cpu);
		json_writer_close(&w, '}');
	}
	json_writer_close(&w, ']');
	json_writer_string(&w, "kernel", config->kernel_path ? config->kernel_path : "");
	json_writer_string(&w, "cmdline", config->cmdline ? config->cmdline : "");
	json_writer_string(&w, "on_poweroff", vm_lifecycle_action_name(config->on_poweroff));
	json_writer_string(&w, "on_reboot", vm_lifecycle_action_name(config->on_reboot));
	json_writer_string(&w, "on_crash", vm_lifecycle_action_name(config->on_crash));
	json_writer_u64(&w, "generation", vm->generation);
	json_writer_bool(&w, "guest_handles_shutdown", f->guest_handles_shutdown);
	json_writer_open(&w, "devices", '[');
	for (unsigned i = 0; i < vm->device_count; i++) {
		json_writer_open(&w, NULL, '{');
		json_writer_u64(&w, "index", i);
		json_writer_string(&w, "name", vm->devices[i]->ops->name);
		json_writer_close(&w, '}');
	}
	json_writer_close(&w, ']');
	json_writer_open(&w, "disks", '[');
	for (unsigned i = 0; i < config->disk_count; i++) {
		const struct vm_disk_config *d = &config->disks[i];
		json_writer_open(&w, NULL, '{');
		json_writer_u64(&w, "index", i);
		json_writer_string(&w, "bus", d->bus == VM_DISK_BUS_ATA ? "ata" : "pv");
		json_writer_bool(&w, "readonly", disk_readonly(vm, i));
		json_writer_u64(&w, "iops", d->ops_limit.rate_per_second);
		json_writer_u64(&w, "iops_burst", d->ops_limit.burst);
		json_writer_u64(&w, "bps", d->bytes_limit.rate_per_second);
		json_writer_u64(&w, "bps_burst", d->bytes_limit.burst);
		json_writer_string(&w, "path", d->path);
		json_writer_close(&w, '}');
	}
	json_writer_close(&w, ']');
	json_writer_close(&w, '}');
	fputc('\n', out);
}

static int verb_info(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		     char *error, size_t error_len)
{
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	struct info_figures f;
	info_figures(vm, &f);
	if (request->json) {
		info_json(vm, &f, out);
		return 0;
	}
	const struct vm_config *config = vm->config;
	fprintf(out, "name %s\n", config->name);
	fprintf(out, "uuid %s\n", f.uuid);
	fprintf(out, "domid %u\n", control_server_domid(vm));
	fprintf(out, "pid %ld\n", (long)getpid());
	fprintf(out, "state %s\n", vm_state_name(vm));
	fprintf(out, "uptime_ns %llu\n", (unsigned long long)f.uptime_ns);
	fprintf(out, "paused_ns %llu\n", (unsigned long long)f.paused_ns);
	fprintf(out, "cpu_time_ns %llu\n", (unsigned long long)f.boot.cpu_time_ns);
	fprintf(out, "vcpu_blocked %s\n", f.boot.blocked ? "yes" : "no");
	fprintf(out, "vcpu_host_cpu %d\n", f.boot.host_cpu);
	fprintf(out, "started_unix %llu\n", (unsigned long long)control_server_started_unix(vm));
	fprintf(out, "memory_bytes %llu\n", (unsigned long long)vm->mem.size_bytes);
	fprintf(out, "vcpus %u\n", config->vcpus ? config->vcpus : 1);
	/* "vcpu K power up|starting|down blocked yes|no exits E cpu_time_ns T
	 * host_cpu C" */
	for (unsigned k = 0; k < vm->vcpu_count && k < KAPSEL_MAX_VCPUS; k++) {
		struct vcpu_figures v;
		vcpu_figures(&vm->vcpus[k], &v);
		fprintf(out,
			"vcpu %u power %s blocked %s exits %llu cpu_time_ns %llu host_cpu %d\n", k,
			v.power, v.blocked ? "yes" : "no", (unsigned long long)v.exits,
			(unsigned long long)v.cpu_time_ns, v.host_cpu);
	}
	fprintf(out, "kernel %s\n", config->kernel_path ? config->kernel_path : "");
	fprintf(out, "cmdline %s\n", config->cmdline ? config->cmdline : "");
	fprintf(out, "on_poweroff %s\n", vm_lifecycle_action_name(config->on_poweroff));
	fprintf(out, "on_reboot %s\n", vm_lifecycle_action_name(config->on_reboot));
	fprintf(out, "on_crash %s\n", vm_lifecycle_action_name(config->on_crash));
	fprintf(out, "generation %llu\n", (unsigned long long)vm->generation);
	fprintf(out, "guest_handles_shutdown %s\n", f.guest_handles_shutdown ? "yes" : "no");
	fprintf(out, "devices %u\n", vm->device_count);
	for (unsigned i = 0; i < vm->device_count; i++)
		fprintf(out, "device %u %s\n", i, vm->devices[i]->ops->name);
	fprintf(out, "disks %u\n", config->disk_count);
	for (unsigned i = 0; i < config->disk_count; i++) {
		const struct vm_disk_config *d = &config->disks[i];
		fprintf(out,
			"disk %u bus=%s readonly=%s iops=%llu iops_burst=%llu bps=%llu bps_burst=%llu path=%s\n",
			i, d->bus == VM_DISK_BUS_ATA ? "ata" : "pv",
			disk_readonly(vm, i) ? "yes" : "no",
			(unsigned long long)d->ops_limit.rate_per_second,
			(unsigned long long)d->ops_limit.burst,
			(unsigned long long)d->bytes_limit.rate_per_second,
			(unsigned long long)d->bytes_limit.burst, d->path);
	}
	return 0;
}

static int verb_pause(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		      char *error, size_t error_len)
{
	(void)out;
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	err = vm_pause(vm);
	if (err == -EALREADY)
		return kapsel_fail(error, error_len, err, "VM '%s' is already paused",
				   vm->config->name);
	if (err)
		return kapsel_fail(error, error_len, err, "VM '%s' is not running",
				   vm->config->name);
	return 0;
}

static int verb_resume(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		       char *error, size_t error_len)
{
	(void)out;
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	err = vm_resume(vm);
	if (err == -EALREADY)
		return kapsel_fail(error, error_len, err, "VM '%s' is not paused",
				   vm->config->name);
	if (err)
		return kapsel_fail(error, error_len, err, "VM '%s' is not running",
				   vm->config->name);
	return 0;
}

static int verb_shutdown(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			 char *error, size_t error_len)
{
	static const char *const keys[] = { "timeout", "mode", NULL };
	uint64_t timeout_s = SHUTDOWN_DEFAULT_TIMEOUT_S;
	int err = control_request_check_keys(request, keys, error, error_len);
	if (!err)
		err = control_arg_u64(request, "timeout", &timeout_s, error, error_len);
	if (err)
		return err;
	if (timeout_s > SHUTDOWN_MAX_TIMEOUT_S)
		return kapsel_fail(error, error_len, -EINVAL,
				   "timeout=%llu is too long; the limit is %u seconds",
				   (unsigned long long)timeout_s, SHUTDOWN_MAX_TIMEOUT_S);
	const char *mode = control_request_arg(request, "mode");
	uint32_t what = KAPSEL_CONTROL_POWEROFF;
	if (mode && strcmp(mode, "reboot") == 0)
		what = KAPSEL_CONTROL_REBOOT;
	else if (mode && strcmp(mode, "poweroff") != 0)
		return kapsel_fail(error, error_len, -EINVAL,
				   "mode='%s' is unknown; use poweroff or reboot", mode);
	if (vm->state == VM_STATE_PAUSED)
		return kapsel_fail(
			error, error_len, -EBUSY,
			"VM '%s' is paused and cannot shut down; resume it first, or destroy it",
			vm->config->name);
	if (vm->state != VM_STATE_RUNNING)
		return kapsel_fail(error, error_len, -ESRCH, "VM '%s' is not running",
				   vm->config->name);
	uint64_t deadline_ns = vm_clock_ns(vm) + timeout_s * 1000000000ull;
	/* Deadline first, then the request (release), then the event: a guest
	 * that sees the request also sees its deadline. */
	__atomic_store_n(&vm->events->control_deadline_ns, deadline_ns, __ATOMIC_RELAXED);
	__atomic_store_n(&vm->events->control_request, what, __ATOMIC_RELEASE);
	vm_evtchn_notify(vm, KAPSEL_EVTCHN_CONTROL);
	control_server_set_deadline(vm, deadline_ns);
	bool aware = !(
		(__atomic_load_n(&vm->events->mask[KAPSEL_EVTCHN_CONTROL / 64], __ATOMIC_RELAXED) >>
		 (KAPSEL_EVTCHN_CONTROL % 64)) &
		1);
	if (request->json) {
		struct json_writer w;
		json_writer_init(&w, out, false);
		json_writer_open(&w, NULL, '{');
		json_writer_string(&w, "schema", "kapsel.shutdown/1");
		json_writer_u64(&w, "timeout_s", timeout_s);
		json_writer_u64(&w, "deadline_ns", deadline_ns);
		json_writer_bool(&w, "guest_handles_shutdown", aware);
		json_writer_close(&w, '}');
		return 0;
	}
	fprintf(out, "timeout_s %llu\n", (unsigned long long)timeout_s);
	fprintf(out, "deadline_ns %llu\n", (unsigned long long)deadline_ns);
	fprintf(out, "guest_handles_shutdown %s\n", aware ? "yes" : "no");
	return 0;
}

static int verb_destroy(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			char *error, size_t error_len)
{
	(void)out;
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	if (vm->state == VM_STATE_STOPPED)
		return kapsel_fail(error, error_len, -ESRCH, "VM '%s' is not running",
				   vm->config->name);
	control_server_mark_destroyed(vm);
	vm_request_stop(vm);
	return 0;
}

static int verb_stats(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		      char *error, size_t error_len)
{
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	if (!request->json) {
		vm_print_stats(vm, out);
		return 0;
	}
	/* The JSON form is made from the text, so that both always carry the
	 * same counters under the same names. */
	char *text = NULL;
	size_t text_len = 0;
	FILE *text_out = open_memstream(&text, &text_len);
	if (!text_out)
		return kapsel_fail(error, error_len, -ENOMEM, "out of memory");
	vm_print_stats(vm, text_out);
	fclose(text_out);
	struct json_writer w;
	json_writer_init(&w, out, false);
	json_writer_open(&w, NULL, '{');
	json_writer_string(&w, "schema", "kapsel.stats/1");
	control_json_stats_from_text(&w, text);
	json_writer_close(&w, '}');
	free(text);
	return 0;
}

static int verb_set_limits(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			   char *error, size_t error_len)
{
	static const char *const keys[] = { "disk",	 "iops",     "iops_burst", "bps",
					    "bps_burst", "readonly", NULL };
	uint64_t index = UINT64_MAX;
	int err = control_request_check_keys(request, keys, error, error_len);
	if (!err)
		err = control_arg_u64(request, "disk", &index, error, error_len);
	if (err)
		return err;
	if (index == UINT64_MAX)
		return kapsel_fail(error, error_len, -EINVAL,
				   "set-limits needs disk=N (the disk's index, from 'info')");
	if (index >= vm->config->disk_count)
		return kapsel_fail(error, error_len, -ENODEV,
				   "VM '%s' has no disk %llu; it has %u (numbered from 0)",
				   vm->config->name, (unsigned long long)index,
				   vm->config->disk_count);
	struct vm_disk_config *config = &vm->config->disks[index];
	struct disk_image *disk = find_disk(vm, (unsigned)index);
	if (!disk)
		return kapsel_fail(error, error_len, -ENOTSUP,
				   "disk %llu's device does not let its policy change at run time",
				   (unsigned long long)index);
	struct vm_rate_limit ops = config->ops_limit, bytes = config->bytes_limit;
	bool readonly = __atomic_load_n(&disk->readonly, __ATOMIC_RELAXED);
	err = control_arg_u64(request, "iops", &ops.rate_per_second, error, error_len);
	if (!err)
		err = control_arg_u64(request, "iops_burst", &ops.burst, error, error_len);
	if (!err)
		err = control_arg_u64(request, "bps", &bytes.rate_per_second, error, error_len);
	if (!err)
		err = control_arg_u64(request, "bps_burst", &bytes.burst, error, error_len);
	if (!err)
		err = control_arg_bool(request, "readonly", &readonly, error, error_len);
	if (err)
		return err;
	if (!readonly && disk->fd >= 0 && (fcntl(disk->fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
		return kapsel_fail(
			error, error_len, -EROFS,
			"disk %llu was opened read-only (readonly in its definition); restart the VM without readonly to make it writable",
			(unsigned long long)index);
	disk_set_limits(disk, &ops, &bytes, vm_clock_ns(vm));
	pthread_mutex_lock(&disk->lock);
	__atomic_store_n(&disk->readonly, readonly, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&disk->lock);
	/* dumpxml shows the definition as it is now. */
	config->ops_limit = ops;
	config->bytes_limit = bytes;
	config->readonly = readonly;
	if (request->json) {
		struct json_writer w;
		json_writer_init(&w, out, false);
		json_writer_open(&w, NULL, '{');
		json_writer_string(&w, "schema", "kapsel.set-limits/1");
		json_writer_u64(&w, "disk", index);
		json_writer_bool(&w, "readonly", readonly);
		json_writer_u64(&w, "iops", ops.rate_per_second);
		json_writer_u64(&w, "iops_burst", ops.burst);
		json_writer_u64(&w, "bps", bytes.rate_per_second);
		json_writer_u64(&w, "bps_burst", bytes.burst);
		json_writer_close(&w, '}');
		return 0;
	}
	fprintf(out, "disk %llu readonly=%s iops=%llu iops_burst=%llu bps=%llu bps_burst=%llu\n",
		(unsigned long long)index, readonly ? "yes" : "no",
		(unsigned long long)ops.rate_per_second, (unsigned long long)ops.burst,
		(unsigned long long)bytes.rate_per_second, (unsigned long long)bytes.burst);
	return 0;
}

static int verb_dumpxml(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
			char *error, size_t error_len)
{
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	return vm_config_write_xml(vm->config, out, error, error_len);
}

static int verb_help(struct kapsel_vm *vm, const struct control_request *request, FILE *out,
		     char *error, size_t error_len)
{
	(void)vm;
	int err = control_request_check_keys(request, no_keys, error, error_len);
	if (err)
		return err;
	control_print_verbs(out);
	fprintf(out,
		"console  attach to the guest console: the connection becomes a byte stream\n");
	fprintf(out, "wait  reply when the VM has ended: exit_code N, reason R\n");
	fprintf(out, "quit  close the connection\n");
	return 0;
}

static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;
static int builtin_result;

static void register_builtins(void)
{
	static const struct {
		const char *name;
		control_verb_fn fn;
		const char *help;
		bool json; /* answers JSON requests natively */
	} builtins[] = {
		{ "help", verb_help, "help  list the requests", false },
		{ "info", verb_info, "info  name, state, uptime, memory, vCPUs, devices, disks",
		  true },
		{ "pause", verb_pause, "pause  stop the vCPU (the VM keeps its memory and devices)",
		  false },
		{ "resume", verb_resume, "resume  let a paused vCPU run again", false },
		{ "shutdown", verb_shutdown,
		  "shutdown [timeout=S] [mode=poweroff|reboot]  ask the guest to power off; destroy it after S seconds (default 10)",
		  true },
		{ "destroy", verb_destroy, "destroy  end the VM at once", false },
		{ "stats", verb_stats, "stats  exit, hypercall and device counters", true },
		{ "set-limits", verb_set_limits,
		  "set-limits disk=N [iops=N] [iops_burst=N] [bps=N] [bps_burst=N] [readonly=yes|no]  change a disk's policy (0 = unlimited)",
		  true },
		{ "dumpxml", verb_dumpxml, "dumpxml  the VM's definition as libvirt domain XML",
		  false },
	};
	for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
		int err = builtins[i].json
				  ? control_register_json_verb(builtins[i].name, builtins[i].fn,
							       builtins[i].help)
				  : control_register_verb(builtins[i].name, builtins[i].fn,
							  builtins[i].help);
		if (err && !builtin_result)
			builtin_result = err;
	}
}

int control_register_builtin_verbs(void)
{
	pthread_once(&builtin_once, register_builtins);
	return builtin_result;
}
