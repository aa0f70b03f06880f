/* Prints sizes and offsets of the xenctrl types; compiled against Xen's header and Kapsel's, the outputs must match. */
#include <stddef.h>
#include <stdio.h>

#include <xenctrl.h>

#define SIZE(t) printf("sizeof(%s) %zu\n", #t, sizeof(t))
#define OFF(t, f) printf("offsetof(%s, %s) %zu\n", #t, #f, offsetof(t, f))

int main(void)
{
	SIZE(xc_dominfo_t);
	OFF(xc_dominfo_t, domid);
	OFF(xc_dominfo_t, ssidref);
	OFF(xc_dominfo_t, shutdown_reason);
	OFF(xc_dominfo_t, nr_pages);
	OFF(xc_dominfo_t, nr_outstanding_pages);
	OFF(xc_dominfo_t, nr_shared_pages);
	OFF(xc_dominfo_t, nr_paged_pages);
	OFF(xc_dominfo_t, shared_info_frame);
	OFF(xc_dominfo_t, cpu_time);
	OFF(xc_dominfo_t, max_memkb);
	OFF(xc_dominfo_t, nr_online_vcpus);
	OFF(xc_dominfo_t, max_vcpu_id);
	OFF(xc_dominfo_t, handle);
	OFF(xc_dominfo_t, cpupool);
	OFF(xc_dominfo_t, gpaddr_bits);
	OFF(xc_dominfo_t, arch_config);
	/* Bit-fields: set each and print the word they live in. */
	xc_dominfo_t d;
	unsigned *word = (unsigned *)((char *)&d + offsetof(xc_dominfo_t, ssidref) + 4);
#define BIT(f)                                     \
	do {                                       \
		*word = 0;                         \
		d.f = 1;                           \
		printf("bit %s %#x\n", #f, *word); \
	} while (0)
	BIT(dying);
	BIT(crashed);
	BIT(shutdown);
	BIT(paused);
	BIT(blocked);
	BIT(running);
	BIT(hvm);
	BIT(debugged);
	BIT(xenstore);
	BIT(hap);
	SIZE(xc_domaininfo_t);
	OFF(xc_domaininfo_t, domain);
	OFF(xc_domaininfo_t, flags);
	OFF(xc_domaininfo_t, tot_pages);
	OFF(xc_domaininfo_t, max_pages);
	OFF(xc_domaininfo_t, outstanding_pages);
	OFF(xc_domaininfo_t, shr_pages);
	OFF(xc_domaininfo_t, paged_pages);
	OFF(xc_domaininfo_t, shared_info_frame);
	OFF(xc_domaininfo_t, cpu_time);
	OFF(xc_domaininfo_t, nr_online_vcpus);
	OFF(xc_domaininfo_t, max_vcpu_id);
	OFF(xc_domaininfo_t, ssidref);
	OFF(xc_domaininfo_t, handle);
	OFF(xc_domaininfo_t, cpupool);
	OFF(xc_domaininfo_t, gpaddr_bits);
	OFF(xc_domaininfo_t, arch_config);
	SIZE(xc_vcpuinfo_t);
	OFF(xc_vcpuinfo_t, vcpu);
	OFF(xc_vcpuinfo_t, online);
	OFF(xc_vcpuinfo_t, blocked);
	OFF(xc_vcpuinfo_t, running);
	OFF(xc_vcpuinfo_t, cpu_time);
	OFF(xc_vcpuinfo_t, cpu);
	SIZE(xc_physinfo_t);
	OFF(xc_physinfo_t, threads_per_core);
	OFF(xc_physinfo_t, cores_per_socket);
	OFF(xc_physinfo_t, nr_cpus);
	OFF(xc_physinfo_t, max_cpu_id);
	OFF(xc_physinfo_t, nr_nodes);
	OFF(xc_physinfo_t, max_node_id);
	OFF(xc_physinfo_t, cpu_khz);
	OFF(xc_physinfo_t, capabilities);
	OFF(xc_physinfo_t, arch_capabilities);
	OFF(xc_physinfo_t, total_pages);
	OFF(xc_physinfo_t, free_pages);
	OFF(xc_physinfo_t, scrub_pages);
	OFF(xc_physinfo_t, outstanding_pages);
	OFF(xc_physinfo_t, max_mfn);
	OFF(xc_physinfo_t, hw_cap);
	SIZE(xen_domain_handle_t);
	SIZE(xen_extraversion_t);
	SIZE(xen_compile_info_t);
	SIZE(xen_capabilities_info_t);
	SIZE(xen_changeset_info_t);
	SIZE(xen_platform_parameters_t);
	SIZE(xen_feature_info_t);
	printf("SHUTDOWN %d %d %d %d %d\n", SHUTDOWN_poweroff, SHUTDOWN_reboot, SHUTDOWN_suspend,
	       SHUTDOWN_crash, SHUTDOWN_watchdog);
	printf("XENVER %d %d %d %d %d %d %d %d %d %d\n", XENVER_version, XENVER_extraversion,
	       XENVER_compile_info, XENVER_capabilities, XENVER_changeset,
	       XENVER_platform_parameters, XENVER_get_features, XENVER_pagesize,
	       XENVER_guest_handle, XENVER_commandline);
	printf("DOMINF %#x %#x %#x %#x %#x %#x %d %d\n", XEN_DOMINF_dying, XEN_DOMINF_hvm_guest,
	       XEN_DOMINF_shutdown, XEN_DOMINF_paused, XEN_DOMINF_blocked, XEN_DOMINF_running,
	       XEN_DOMINF_shutdownmask, XEN_DOMINF_shutdownshift);
	printf("PHYSCAP %#x %#x %#x %#x\n", XEN_SYSCTL_PHYSCAP_hvm, XEN_SYSCTL_PHYSCAP_pv,
	       XEN_SYSCTL_PHYSCAP_directio, XEN_SYSCTL_PHYSCAP_hap);
	printf("OPENFLAG %d %d\n", XC_OPENFLAG_DUMMY, XC_OPENFLAG_NON_REENTRANT);
	return 0;
}
