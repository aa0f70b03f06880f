/* libkapsel-xenctrl: Xen 4.17 libxenctrl calls answered from Kapsel VMs' control sockets (docs/xenctrl.md). */
#define _GNU_SOURCE
#include "xenctrl.h"

#include <cpuid.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "control/control.h"
#include "kapsel/abi.h"
#include "control/control_client.h"

#define XC_EXPORT __attribute__((visibility("default")))
#define XC_REPLY_TIMEOUT_MS 10000
#define XC_DESTROY_TIMEOUT_MS 10000

struct xc_interface_core {
	unsigned open_flags;
};

/* One vCPU as a 'vcpu K ...' line of 'info' describes it. */
struct vcpu_view {
	bool up;      /* power up: Xen's online */
	bool blocked; /* sleeping in the BLOCK hypercall */
	uint64_t cpu_time_ns;
	int host_cpu; /* -1: unknown */
};

/* What one running VM reported in its 'info' reply. */
struct vm_view {
	char name[64];
	unsigned domid;
	bool paused;
	uint64_t memory_bytes;
	uint8_t uuid[16];
	unsigned vcpu_count; /* 1 .. KAPSEL_MAX_VCPUS */
	struct vcpu_view vcpus[KAPSEL_MAX_VCPUS];
};

static uint64_t payload_u64(const char *payload, const char *key)
{
	char value[64];
	return control_payload_get(payload, key, value, sizeof(value)) ? strtoull(value, NULL, 10)
								       : 0;
}

static void parse_uuid(const char *text, uint8_t uuid[16])
{
	unsigned n = 0;
	memset(uuid, 0, 16);
	for (const char *p = text; *p && n < 32; p++) {
		int digit = *p >= '0' && *p <= '9'   ? *p - '0'
			    : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10
						     : -1;
		if (digit < 0)
			continue;
		uuid[n / 2] |= (uint8_t)(n % 2 ? digit : digit << 4);
		n++;
	}
}

/*
 * The "vcpu K" line's value ("power up blocked no exits 12 cpu_time_ns 3
 * host_cpu 1"): word pairs, unknown ones skipped (a newer Kapsel may add
 * some).  Returns false when the line is missing.
 */
static bool vcpu_from_info(const char *payload, unsigned k, struct vcpu_view *vcpu)
{
	char key[32], value[256];
	snprintf(key, sizeof(key), "vcpu %u", k);
	if (!control_payload_get(payload, key, value, sizeof(value)))
		return false;
	*vcpu = (struct vcpu_view){ .host_cpu = -1 };
	char *save = NULL;
	for (char *word = strtok_r(value, " ", &save); word; word = strtok_r(NULL, " ", &save)) {
		char *arg = strtok_r(NULL, " ", &save);
		if (!arg)
			break;
		if (strcmp(word, "power") == 0)
			vcpu->up = strcmp(arg, "up") == 0;
		else if (strcmp(word, "blocked") == 0)
			vcpu->blocked = strcmp(arg, "yes") == 0;
		else if (strcmp(word, "cpu_time_ns") == 0)
			vcpu->cpu_time_ns = strtoull(arg, NULL, 10);
		else if (strcmp(word, "host_cpu") == 0)
			vcpu->host_cpu = atoi(arg);
	}
	return true;
}

static int view_from_info(const char *name, const char *payload, struct vm_view *view)
{
	char value[128];
	memset(view, 0, sizeof(*view));
	snprintf(view->name, sizeof(view->name), "%s", name);
	if (!control_payload_get(payload, "domid", value, sizeof(value)))
		return -EPROTO;
	view->domid = (unsigned)strtoul(value, NULL, 10);
	if (control_payload_get(payload, "state", value, sizeof(value)))
		view->paused = strcmp(value, "paused") == 0;
	if (control_payload_get(payload, "uuid", value, sizeof(value)))
		parse_uuid(value, view->uuid);
	view->memory_bytes = payload_u64(payload, "memory_bytes");
	uint64_t count = payload_u64(payload, "vcpus");
	view->vcpu_count = count < 1		      ? 1
			   : count > KAPSEL_MAX_VCPUS ? KAPSEL_MAX_VCPUS
						      : (unsigned)count;
	bool listed = false;
	for (unsigned k = 0; k < view->vcpu_count; k++)
		listed |= vcpu_from_info(payload, k, &view->vcpus[k]);
	if (!listed) {
		/* A Kapsel before SMP: one vCPU, described by the VM's lines. */
		struct vcpu_view *boot = &view->vcpus[0];
		boot->up = true;
		boot->blocked =
			control_payload_get(payload, "vcpu_blocked", value, sizeof(value)) &&
			strcmp(value, "yes") == 0;
		boot->cpu_time_ns = payload_u64(payload, "cpu_time_ns");
		boot->host_cpu = control_payload_get(payload, "vcpu_host_cpu", value, sizeof(value))
					 ? atoi(value)
					 : -1;
	}
	return 0;
}

static int compare_views(const void *a, const void *b)
{
	const struct vm_view *x = a, *y = b;
	return x->domid < y->domid ? -1 : x->domid > y->domid;
}

/* Every running VM, sorted by domain id; *views is malloc'd.  Count or -errno. */
static int list_views(struct vm_view **views)
{
	char **names;
	int count = control_list_names(&names);
	*views = NULL;
	if (count <= 0)
		return count;
	struct vm_view *list = calloc((size_t)count, sizeof(*list));
	if (!list) {
		control_free_names(names, count);
		return -ENOMEM;
	}
	int found = 0;
	for (int i = 0; i < count; i++) {
		struct control_reply reply;
		/* A VM that ended meanwhile is simply not listed. */
		if (control_call(names[i], "info", &reply, XC_REPLY_TIMEOUT_MS) == 0 &&
		    reply.errnum == 0 && view_from_info(names[i], reply.payload, &list[found]) == 0)
			found++;
		control_reply_free(&reply);
	}
	control_free_names(names, count);
	qsort(list, (size_t)found, sizeof(*list), compare_views);
	*views = list;
	return found;
}

/* The VM with domain id domid: 0 and *view, or -ESRCH. */
static int find_view(uint32_t domid, struct vm_view *view)
{
	struct vm_view *views;
	int count = list_views(&views);
	if (count < 0)
		return count;
	int err = -ESRCH;
	for (int i = 0; i < count; i++)
		if (views[i].domid == domid) {
			*view = views[i];
			err = 0;
			break;
		}
	free(views);
	return err;
}

static int fail(int err)
{
	errno = err < 0 ? -err : err;
	return -1;
}

/* Send request to domain domid; 0, or -1 with errno from the reply. */
static int domain_request(uint32_t domid, const char *request, struct control_reply *out)
{
	struct vm_view view;
	int err = find_view(domid, &view);
	if (err)
		return fail(err);
	struct control_reply reply;
	err = control_call(view.name, request, &reply, XC_REPLY_TIMEOUT_MS);
	if (err)
		return fail(err == -ENOENT || err == -ECONNREFUSED ? -ESRCH : err);
	if (reply.errnum) {
		int errnum = reply.errnum;
		control_reply_free(&reply);
		return fail(errnum);
	}
	if (out)
		*out = reply;
	else
		control_reply_free(&reply);
	return 0;
}

XC_EXPORT xc_interface *xc_interface_open(xentoollog_logger *logger,
					  xentoollog_logger *dombuild_logger, unsigned open_flags)
{
	(void)logger;
	(void)dombuild_logger;
	char dir[4096];
	if (control_runtime_dir(dir, sizeof(dir)) < 0) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	struct xc_interface_core *xch = calloc(1, sizeof(*xch));
	if (!xch)
		return NULL;
	xch->open_flags = open_flags;
	return xch;
}

XC_EXPORT int xc_interface_close(xc_interface *xch)
{
	free(xch);
	return 0;
}

/*
 * As Xen reports a domain: online vCPUs are those up; the domain is
 * blocked when no online vCPU is runnable and running when one is (never
 * while paused); cpu_time is the sum over its vCPUs.
 */
static void fill_dominfo(const struct vm_view *v, xc_dominfo_t *info)
{
	memset(info, 0, sizeof(*info));
	info->domid = v->domid;
	info->paused = v->paused;
	bool runnable = false;
	for (unsigned k = 0; k < v->vcpu_count; k++) {
		const struct vcpu_view *vcpu = &v->vcpus[k];
		info->cpu_time += vcpu->cpu_time_ns;
		if (!vcpu->up)
			continue;
		info->nr_online_vcpus++;
		runnable |= !vcpu->blocked;
	}
	info->blocked = !v->paused && !runnable;
	info->running = !v->paused && runnable;
	info->nr_pages = (unsigned long)(v->memory_bytes >> XC_PAGE_SHIFT);
	info->shared_info_frame = 0x8; /* the event page, Kapsel's shared info */
	info->max_memkb = (unsigned long)(v->memory_bytes >> 10);
	info->max_vcpu_id = v->vcpu_count - 1;
	memcpy(info->handle, v->uuid, sizeof(info->handle));
	uint8_t bits = 12;
	while (bits < 64 && (1ull << bits) < v->memory_bytes)
		bits++;
	info->gpaddr_bits = bits;
}

XC_EXPORT int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms,
				xc_dominfo_t *info)
{
	if (!xch || (max_doms && !info))
		return fail(EINVAL);
	struct vm_view *views;
	int count = list_views(&views);
	if (count < 0)
		return fail(count);
	unsigned filled = 0;
	for (int i = 0; i < count && filled < max_doms; i++)
		if (views[i].domid >= first_domid)
			fill_dominfo(&views[i], &info[filled++]);
	free(views);
	return (int)filled;
}

XC_EXPORT int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain,
				    unsigned int max_domains, xc_domaininfo_t *info)
{
	if (!xch || (max_domains && !info))
		return fail(EINVAL);
	struct vm_view *views;
	int count = list_views(&views);
	if (count < 0)
		return fail(count);
	unsigned filled = 0;
	for (int i = 0; i < count && filled < max_domains; i++) {
		if (views[i].domid < first_domain)
			continue;
		xc_dominfo_t d;
		fill_dominfo(&views[i], &d);
		xc_domaininfo_t *out = &info[filled++];
		memset(out, 0, sizeof(*out));
		out->domain = (domid_t)d.domid;
		out->flags = (d.paused ? XEN_DOMINF_paused : 0) |
			     (d.blocked ? XEN_DOMINF_blocked : 0) |
			     (d.running ? XEN_DOMINF_running : 0);
		out->tot_pages = d.nr_pages;
		out->max_pages = d.nr_pages;
		out->shared_info_frame = d.shared_info_frame;
		out->cpu_time = d.cpu_time;
		out->nr_online_vcpus = d.nr_online_vcpus;
		out->max_vcpu_id = d.max_vcpu_id;
		memcpy(out->handle, d.handle, sizeof(out->handle));
		out->gpaddr_bits = d.gpaddr_bits;
	}
	free(views);
	return (int)filled;
}

XC_EXPORT int xc_vcpu_getinfo(xc_interface *xch, uint32_t domid, uint32_t vcpu, xc_vcpuinfo_t *info)
{
	if (!xch || !info)
		return fail(EINVAL);
	struct vm_view view;
	int err = find_view(domid, &view);
	if (err)
		return fail(err);
	/* As Xen: a vCPU id the domain does not have is EINVAL. */
	if (vcpu >= view.vcpu_count)
		return fail(EINVAL);
	const struct vcpu_view *v = &view.vcpus[vcpu];
	memset(info, 0, sizeof(*info));
	info->vcpu = vcpu;
	info->online = v->up;
	info->blocked = v->up && !view.paused && v->blocked;
	info->running = v->up && !view.paused && !v->blocked;
	info->cpu_time = v->cpu_time_ns;
	info->cpu = v->host_cpu < 0 ? 0 : (uint32_t)v->host_cpu;
	return 0;
}

XC_EXPORT int xc_domain_pause(xc_interface *xch, uint32_t domid)
{
	if (!xch)
		return fail(EINVAL);
	int rc = domain_request(domid, "pause", NULL);
	/* Xen counts pauses; Kapsel has one pause state: pausing a paused
	 * domain succeeds (docs/xenctrl.md). */
	if (rc < 0 && errno == EALREADY)
		return 0;
	return rc;
}

XC_EXPORT int xc_domain_unpause(xc_interface *xch, uint32_t domid)
{
	if (!xch)
		return fail(EINVAL);
	int rc = domain_request(domid, "resume", NULL);
	if (rc < 0 && errno == EALREADY)
		errno = EINVAL; /* what Xen says for a domain that is not paused */
	return rc;
}

XC_EXPORT int xc_domain_shutdown(xc_interface *xch, uint32_t domid, int reason)
{
	if (!xch)
		return fail(EINVAL);
	if (reason == SHUTDOWN_poweroff)
		return domain_request(domid, "shutdown mode=poweroff", NULL);
	if (reason == SHUTDOWN_reboot)
		return domain_request(domid, "shutdown mode=reboot", NULL);
	return fail(EINVAL);
}

XC_EXPORT int xc_domain_destroy(xc_interface *xch, uint32_t domid)
{
	if (!xch)
		return fail(EINVAL);
	struct vm_view view;
	int err = find_view(domid, &view);
	if (err)
		return fail(err);
	int fd = control_connect(view.name);
	if (fd < 0)
		return fail(fd == -ENOENT || fd == -ECONNREFUSED ? -ESRCH : fd);
	struct control_reply reply;
	err = control_client_request(fd, "destroy wait=yes", &reply, XC_REPLY_TIMEOUT_MS);
	if (!err && reply.errnum)
		err = -reply.errnum;
	control_reply_free(&reply);
	/* Returns once the VM is gone: its end reply, or the connection closing. */
	if (!err) {
		err = control_client_read_reply(fd, &reply, XC_DESTROY_TIMEOUT_MS);
		if (err == -ECONNRESET)
			err = 0;
		control_reply_free(&reply);
	}
	close(fd);
	return err ? fail(err) : 0;
}

/* A number from a "key: value" line of a /proc file, or 0. */
static uint64_t proc_value(const char *path, const char *key)
{
	FILE *f = fopen(path, "r");
	char line[256];
	uint64_t value = 0;
	size_t key_len = strlen(key);
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
			value = strtoull(line + key_len + 1, NULL, 10);
			break;
		}
	}
	if (f)
		fclose(f);
	return value;
}

static double cpu_mhz(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[256];
	double mhz = 0;
	while (f && fgets(line, sizeof(line), f)) {
		if (strncmp(line, "cpu MHz", 7) == 0) {
			char *colon = strchr(line, ':');
			mhz = colon ? strtod(colon + 1, NULL) : 0;
			break;
		}
	}
	if (f)
		fclose(f);
	return mhz;
}

static unsigned count_nodes(void)
{
	unsigned nodes = 0;
	char path[64];
	for (unsigned i = 0; i < 1024; i++) {
		snprintf(path, sizeof(path), "/sys/devices/system/node/node%u", i);
		if (access(path, F_OK) != 0)
			break;
		nodes++;
	}
	return nodes ? nodes : 1;
}

XC_EXPORT int xc_physinfo(xc_interface *xch, xc_physinfo_t *info)
{
	if (!xch || !info)
		return fail(EINVAL);
	memset(info, 0, sizeof(*info));
	long online = sysconf(_SC_NPROCESSORS_ONLN), configured = sysconf(_SC_NPROCESSORS_CONF);
	long siblings = (long)proc_value("/proc/cpuinfo", "siblings");
	long cores = (long)proc_value("/proc/cpuinfo", "cpu cores");
	info->nr_cpus = online > 0 ? (uint32_t)online : 1;
	info->max_cpu_id = configured > 0 ? (uint32_t)configured - 1 : info->nr_cpus - 1;
	info->cores_per_socket = cores > 0 ? (uint32_t)cores : info->nr_cpus;
	info->threads_per_core = cores > 0 && siblings >= cores ? (uint32_t)(siblings / cores) : 1;
	info->nr_nodes = count_nodes();
	info->max_node_id = info->nr_nodes - 1;
	info->cpu_khz = (uint32_t)(cpu_mhz() * 1000.0);
	/* Kapsel runs paravirtualized guests on hardware virtualization. */
	info->capabilities = XEN_SYSCTL_PHYSCAP_pv;
	long page = sysconf(_SC_PAGESIZE);
	info->total_pages = proc_value("/proc/meminfo", "MemTotal") * 1024 / (uint64_t)page;
	info->free_pages = proc_value("/proc/meminfo", "MemAvailable") * 1024 / (uint64_t)page;
	info->max_mfn = info->total_pages ? info->total_pages - 1 : 0;
	/* Xen's order of x86 feature words: 1.edx, 1.ecx, 0x80000001.edx,
	 * 0x80000001.ecx, 0xd:1.eax, 7:0.ebx, 7:0.ecx, 0x80000007.edx. */
	unsigned a, b, c, d;
	if (__get_cpuid(1, &a, &b, &c, &d)) {
		info->hw_cap[0] = d;
		info->hw_cap[1] = c;
	}
	if (__get_cpuid(0x80000001, &a, &b, &c, &d)) {
		info->hw_cap[2] = d;
		info->hw_cap[3] = c;
	}
	if (__get_cpuid_count(0xd, 1, &a, &b, &c, &d))
		info->hw_cap[4] = a;
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
		info->hw_cap[5] = b;
		info->hw_cap[6] = c;
	}
	if (__get_cpuid(0x80000007, &a, &b, &c, &d))
		info->hw_cap[7] = d;
	return 0;
}

XC_EXPORT int xc_version(xc_interface *xch, int cmd, void *arg)
{
	if (!xch)
		return fail(EINVAL);
	switch (cmd) {
	case XENVER_version:
		return (KAPSEL_VERSION_MAJOR << 16) | KAPSEL_VERSION_MINOR;
	case XENVER_pagesize:
		return (int)XC_PAGE_SIZE;
	}
	if (!arg)
		return fail(EFAULT);
	switch (cmd) {
	case XENVER_extraversion:
		snprintf(arg, XEN_EXTRAVERSION_LEN, ".0-kapsel");
		return 0;
	case XENVER_compile_info: {
		xen_compile_info_t *ci = arg;
		memset(ci, 0, sizeof(*ci));
		snprintf(ci->compiler, sizeof(ci->compiler), "gcc %s", __VERSION__);
		snprintf(ci->compile_by, sizeof(ci->compile_by), "kapsel");
		snprintf(ci->compile_date, sizeof(ci->compile_date), "%s", __DATE__);
		return 0;
	}
	case XENVER_capabilities:
		/* The hypercall ABI the VMs of this build speak. */
		snprintf(arg, XEN_CAPABILITIES_INFO_LEN, "kapsel-%u.%u-x86_64", KAPSEL_ABI_MAJOR,
			 KAPSEL_ABI_MINOR);
		return 0;
	case XENVER_changeset:
		snprintf(arg, XEN_CHANGESET_INFO_LEN, "kapsel %d.%d", KAPSEL_VERSION_MAJOR,
			 KAPSEL_VERSION_MINOR);
		return 0;
	case XENVER_platform_parameters:
		((xen_platform_parameters_t *)arg)->virt_start = 0;
		return 0;
	case XENVER_get_features:
		((xen_feature_info_t *)arg)->submap = 0;
		return 0;
	case XENVER_guest_handle:
		memset(arg, 0, sizeof(xen_domain_handle_t)); /* the host is no domain */
		return 0;
	case XENVER_commandline:
		memset(arg, 0, sizeof(xen_commandline_t));
		return 0;
	default:
		return fail(ENOSYS);
	}
}
