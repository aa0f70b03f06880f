/* A one-shot xentop: host and per-domain table through libxenctrl calls only (builds against Xen's or Kapsel's xenctrl.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xenctrl.h>

#define MAX_DOMAINS 256

/* xentop's state letters: dying, shutdown, blocked, crashed, paused, running. */
static void state_letters(const xc_dominfo_t *d, char out[7])
{
	out[0] = d->dying ? 'd' : '-';
	out[1] = d->shutdown ? 's' : '-';
	out[2] = d->blocked ? 'b' : '-';
	out[3] = d->crashed ? 'c' : '-';
	out[4] = d->paused ? 'p' : '-';
	out[5] = d->running ? 'r' : '-';
	out[6] = '\0';
}

/* --vcpus DOMID: the domain's vCPU counts, then xc_vcpu_getinfo of each
 * vCPU id up to max_vcpu_id and of the one past it (which must fail). */
static int show_vcpus(xc_interface *xch, uint32_t domid)
{
	xc_dominfo_t d;
	if (xc_domain_getinfo(xch, domid, 1, &d) != 1 || d.domid != domid) {
		printf("vcpus %u: no such domain\n", domid);
		return 1;
	}
	printf("domain %u: max_vcpu_id %u nr_online_vcpus %u %s\n", domid, d.max_vcpu_id,
	       d.nr_online_vcpus,
	       d.paused	   ? "paused"
	       : d.blocked ? "blocked"
	       : d.running ? "running"
			   : "-");
	for (uint32_t v = 0; v <= d.max_vcpu_id + 1; v++) {
		xc_vcpuinfo_t info;
		memset(&info, 0xa5, sizeof(info));
		if (xc_vcpu_getinfo(xch, domid, v, &info) < 0) {
			printf("vcpu %u: failed: %s\n", v, strerror(errno));
			continue;
		}
		printf("vcpu %u: id %u online %u blocked %u running %u cpu_time %s cpu %u\n", v,
		       info.vcpu, info.online, info.blocked, info.running,
		       info.cpu_time ? "yes" : "no", info.cpu);
	}
	return 0;
}

static int act(xc_interface *xch, const char *action, const char *id_text)
{
	uint32_t domid = (uint32_t)strtoul(id_text, NULL, 10);
	int rc;
	if (strcmp(action, "--vcpus") == 0)
		return show_vcpus(xch, domid);
	if (strcmp(action, "--pause") == 0)
		rc = xc_domain_pause(xch, domid);
	else if (strcmp(action, "--unpause") == 0)
		rc = xc_domain_unpause(xch, domid);
	else if (strcmp(action, "--shutdown") == 0)
		rc = xc_domain_shutdown(xch, domid, SHUTDOWN_poweroff);
	else if (strcmp(action, "--destroy") == 0)
		rc = xc_domain_destroy(xch, domid);
	else {
		fprintf(stderr,
			"usage: xentop_once [--vcpus|--pause|--unpause|--shutdown|--destroy DOMID]\n");
		return 2;
	}
	if (rc < 0) {
		printf("%s %u: failed: %s\n", action + 2, domid, strerror(errno));
		return 1;
	}
	printf("%s %u: ok\n", action + 2, domid);
	return 0;
}

int main(int argc, char **argv)
{
	xc_interface *xch = xc_interface_open(NULL, NULL, 0);
	if (!xch) {
		fprintf(stderr, "xentop_once: cannot open the hypervisor interface: %s\n",
			strerror(errno));
		return 1;
	}
	if (argc == 3) {
		int status = act(xch, argv[1], argv[2]);
		xc_interface_close(xch);
		return status;
	}

	xc_physinfo_t phys;
	if (xc_physinfo(xch, &phys) < 0) {
		fprintf(stderr, "xentop_once: xc_physinfo: %s\n", strerror(errno));
		return 1;
	}
	int version = xc_version(xch, XENVER_version, NULL);
	xen_extraversion_t extra;
	xc_version(xch, XENVER_extraversion, &extra);
	printf("hypervisor %d.%d%s, %u CPUs, %" PRIu64 " MiB total, %" PRIu64 " MiB free\n",
	       version >> 16, version & 0xffff, extra, phys.nr_cpus,
	       (uint64_t)phys.total_pages * XC_PAGE_SIZE >> 20,
	       (uint64_t)phys.free_pages * XC_PAGE_SIZE >> 20);

	static xc_dominfo_t info[MAX_DOMAINS];
	static xc_domaininfo_t list[MAX_DOMAINS];
	int count = xc_domain_getinfo(xch, 0, MAX_DOMAINS, info);
	if (count < 0) {
		fprintf(stderr, "xentop_once: xc_domain_getinfo: %s\n", strerror(errno));
		return 1;
	}
	int listed = xc_domain_getinfolist(xch, 0, MAX_DOMAINS, list);
	printf("%6s %6s %10s %10s %10s %5s %4s %s\n", "DOMID", "STATE", "CPU(ns)", "MEM(k)",
	       "MAXMEM(k)", "VCPUS", "PCPU", "UUID");
	for (int i = 0; i < count; i++) {
		const xc_dominfo_t *d = &info[i];
		char state[7];
		state_letters(d, state);
		xc_vcpuinfo_t vcpu;
		unsigned pcpu = 0;
		if (xc_vcpu_getinfo(xch, d->domid, 0, &vcpu) == 0)
			pcpu = vcpu.cpu;
		printf("%6u %6s %10" PRIu64 " %10lu %10lu %5u %4u ", d->domid, state, d->cpu_time,
		       d->nr_pages * (XC_PAGE_SIZE / 1024), d->max_memkb, d->nr_online_vcpus, pcpu);
		for (int b = 0; b < 16; b++)
			printf("%02x%s", d->handle[b],
			       b == 3 || b == 5 || b == 7 || b == 9 ? "-" : "");
		printf("\n");
		/* The flat form must say the same. */
		for (int j = 0; j < listed; j++) {
			if (list[j].domain != d->domid)
				continue;
			if (list[j].tot_pages != d->nr_pages ||
			    !(list[j].flags & XEN_DOMINF_paused) != !d->paused)
				printf("  mismatch: getinfolist disagrees for domain %u\n",
				       d->domid);
		}
	}
	printf("%d domains\n", count);
	xc_interface_close(xch);
	return 0;
}
