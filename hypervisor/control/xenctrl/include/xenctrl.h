/* libkapsel-xenctrl: a subset of Xen 4.17's libxenctrl API over Kapsel control sockets (deviations: docs/xenctrl.md). */
#ifndef KAPSEL_XENCTRL_H
#define KAPSEL_XENCTRL_H

/*
 * Programs written for Xen's <xenctrl.h> that use only the calls below
 * compile against this header unchanged and link with -lkapsel-xenctrl.
 * Names, types, struct layouts and constants match Xen 4.17 (the layouts
 * are checked against Debian's libxen-dev by tests/xenctrl/layout.sh);
 * everything else of libxenctrl is absent.  Domain ids are Kapsel's small
 * per-host VM ids (kapsel list, column ID).  Calls return -1 and set errno
 * on failure, as libxenctrl does.
 */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Basic Xen types ------------------------------------------------------ */

typedef uint16_t domid_t;
typedef uint8_t xen_domain_handle_t[16]; /* the VM's UUID */
typedef unsigned long xen_ulong_t;
#define uint64_aligned_t uint64_t __attribute__((__aligned__(8)))

#define DOMID_FIRST_RESERVED 0x7FF0U
#define XC_PAGE_SHIFT 12
#define XC_PAGE_SIZE (1UL << XC_PAGE_SHIFT)

/* Shutdown reasons (xc_domain_shutdown, xc_dominfo_t.shutdown_reason). */
#define SHUTDOWN_poweroff 0
#define SHUTDOWN_reboot 1
#define SHUTDOWN_suspend 2
#define SHUTDOWN_crash 3
#define SHUTDOWN_watchdog 4
#define SHUTDOWN_soft_reset 5

/* ---- Handles -------------------------------------------------------------- */

typedef struct xentoollog_logger xentoollog_logger; /* accepted, not used */
typedef struct xc_interface_core xc_interface;

enum xc_open_flags {
	XC_OPENFLAG_DUMMY = 1 << 0,
	XC_OPENFLAG_NON_REENTRANT = 1 << 1,
};

/*
 * Open a handle.  The loggers may be NULL (errors then go nowhere: read
 * errno).  Returns NULL with errno set when Kapsel's runtime directory
 * cannot be determined or memory runs out.
 */
xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
				unsigned open_flags);

/* Close a handle from xc_interface_open (NULL is accepted).  Returns 0. */
int xc_interface_close(xc_interface *xch);

/* ---- Domain information --------------------------------------------------- */

struct xen_arch_domainconfig {
	uint32_t emulation_flags;
	uint32_t misc_flags;
};

typedef struct xc_dominfo {
	uint32_t domid;
	uint32_t ssidref;
	unsigned int dying : 1, crashed : 1, shutdown : 1, paused : 1, blocked : 1, running : 1,
		hvm : 1, debugged : 1, xenstore : 1, hap : 1;
	unsigned int shutdown_reason; /* valid when shutdown is 1 */
	unsigned long nr_pages;	      /* guest RAM in 4 KiB pages */
	unsigned long nr_outstanding_pages;
	unsigned long nr_shared_pages;
	unsigned long nr_paged_pages;
	unsigned long shared_info_frame;
	uint64_t cpu_time; /* ns the vCPU threads ran, summed */
	unsigned long max_memkb;
	unsigned int nr_online_vcpus; /* vCPUs up (vCPU 0, and those the guest brought up) */
	unsigned int max_vcpu_id;     /* the VM's vCPU count - 1 */
	xen_domain_handle_t handle;
	unsigned int cpupool;
	uint8_t gpaddr_bits;
	struct xen_arch_domainconfig arch_config;
} xc_dominfo_t;

/* Bits of xc_domaininfo_t.flags. */
#define _XEN_DOMINF_dying 0
#define XEN_DOMINF_dying (1U << _XEN_DOMINF_dying)
#define _XEN_DOMINF_hvm_guest 1
#define XEN_DOMINF_hvm_guest (1U << _XEN_DOMINF_hvm_guest)
#define _XEN_DOMINF_shutdown 2
#define XEN_DOMINF_shutdown (1U << _XEN_DOMINF_shutdown)
#define _XEN_DOMINF_paused 3
#define XEN_DOMINF_paused (1U << _XEN_DOMINF_paused)
#define _XEN_DOMINF_blocked 4
#define XEN_DOMINF_blocked (1U << _XEN_DOMINF_blocked)
#define _XEN_DOMINF_running 5
#define XEN_DOMINF_running (1U << _XEN_DOMINF_running)
#define _XEN_DOMINF_debugged 6
#define XEN_DOMINF_debugged (1U << _XEN_DOMINF_debugged)
#define _XEN_DOMINF_xs_domain 7
#define XEN_DOMINF_xs_domain (1U << _XEN_DOMINF_xs_domain)
#define _XEN_DOMINF_hap 8
#define XEN_DOMINF_hap (1U << _XEN_DOMINF_hap)
#define XEN_DOMINF_shutdownmask 255
#define XEN_DOMINF_shutdownshift 16
#define XEN_INVALID_MAX_VCPU_ID (~0U)

struct xen_domctl_getdomaininfo {
	domid_t domain;
	uint16_t pad1;
	uint32_t flags; /* XEN_DOMINF_* */
	uint64_aligned_t tot_pages;
	uint64_aligned_t max_pages;
	uint64_aligned_t outstanding_pages;
	uint64_aligned_t shr_pages;
	uint64_aligned_t paged_pages;
	uint64_aligned_t shared_info_frame;
	uint64_aligned_t cpu_time;
	uint32_t nr_online_vcpus;
	uint32_t max_vcpu_id;
	uint32_t ssidref;
	xen_domain_handle_t handle;
	uint32_t cpupool;
	uint8_t gpaddr_bits;
	uint8_t pad2[7];
	struct xen_arch_domainconfig arch_config;
};
typedef struct xen_domctl_getdomaininfo xen_domctl_getdomaininfo_t;
typedef xen_domctl_getdomaininfo_t xc_domaininfo_t;

/*
 * Fill info[0..max_doms) with the running VMs whose domain id is
 * first_domid or above, in increasing id order.  Returns how many were
 * filled (0 when none), or -1 with errno set.
 */
int xc_domain_getinfo(xc_interface *xch, uint32_t first_domid, unsigned int max_doms,
		      xc_dominfo_t *info);

/* The same, in the flat xc_domaininfo_t form.  Returns the count or -1. */
int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains,
			  xc_domaininfo_t *info);

struct xen_domctl_getvcpuinfo {
	uint32_t vcpu;		   /* in */
	uint8_t online;		   /* up: vCPU 0, or brought up by the guest */
	uint8_t blocked;	   /* sleeping in the BLOCK hypercall */
	uint8_t running;	   /* online, not blocked, the domain not paused */
	uint64_aligned_t cpu_time; /* ns its thread ran (0 before it ran) */
	uint32_t cpu;		   /* host CPU its thread last ran on (0 if unknown) */
};
typedef struct xen_domctl_getvcpuinfo xc_vcpuinfo_t;

/* vCPU vcpu (0 to the domain's max_vcpu_id) of domain domid.  Returns 0
 * or -1 (errno EINVAL for a vCPU id past max_vcpu_id, as Xen; ESRCH for no
 * such domain). */
int xc_vcpu_getinfo(xc_interface *xch, uint32_t domid, uint32_t vcpu, xc_vcpuinfo_t *info);

/* ---- Domain control -------------------------------------------------------- */

/* Stop domid's vCPU; 0 also when it was paused already.  -1 and errno. */
int xc_domain_pause(xc_interface *xch, uint32_t domid);

/* Let a paused domain run; -1 with errno EINVAL when it was not paused. */
int xc_domain_unpause(xc_interface *xch, uint32_t domid);

/*
 * Ask the guest to power off (SHUTDOWN_poweroff) or reboot
 * (SHUTDOWN_reboot): a graceful request with Kapsel's default deadline
 * (10 s), after which the VM is destroyed.  Other reasons: -1, EINVAL.
 */
int xc_domain_shutdown(xc_interface *xch, uint32_t domid, int reason);

/* End the domain at once; returns once it is gone.  -1 and errno. */
int xc_domain_destroy(xc_interface *xch, uint32_t domid);

/* ---- Host ---------------------------------------------------------------- */

#define _XEN_SYSCTL_PHYSCAP_hvm 0
#define XEN_SYSCTL_PHYSCAP_hvm (1u << _XEN_SYSCTL_PHYSCAP_hvm)
#define _XEN_SYSCTL_PHYSCAP_pv 1
#define XEN_SYSCTL_PHYSCAP_pv (1u << _XEN_SYSCTL_PHYSCAP_pv)
#define _XEN_SYSCTL_PHYSCAP_directio 2
#define XEN_SYSCTL_PHYSCAP_directio (1u << _XEN_SYSCTL_PHYSCAP_directio)
#define _XEN_SYSCTL_PHYSCAP_hap 3
#define XEN_SYSCTL_PHYSCAP_hap (1u << _XEN_SYSCTL_PHYSCAP_hap)

struct xen_sysctl_physinfo {
	uint32_t threads_per_core;
	uint32_t cores_per_socket;
	uint32_t nr_cpus;
	uint32_t max_cpu_id;
	uint32_t nr_nodes;
	uint32_t max_node_id;
	uint32_t cpu_khz;
	uint32_t capabilities; /* XEN_SYSCTL_PHYSCAP_* */
	uint32_t arch_capabilities;
	uint32_t pad;
	uint64_aligned_t total_pages;
	uint64_aligned_t free_pages; /* MemAvailable of the host */
	uint64_aligned_t scrub_pages;
	uint64_aligned_t outstanding_pages;
	uint64_aligned_t max_mfn;
	uint32_t hw_cap[8]; /* x86 CPUID feature words, Xen's order */
};
typedef struct xen_sysctl_physinfo xen_sysctl_physinfo_t;
typedef struct xen_sysctl_physinfo xc_physinfo_t;

/* The host's CPUs and memory.  Returns 0 or -1 with errno. */
int xc_physinfo(xc_interface *xch, xc_physinfo_t *info);

/* xc_version commands and their argument types. */
#define XENVER_version 0
#define XENVER_extraversion 1
typedef char xen_extraversion_t[16];
#define XEN_EXTRAVERSION_LEN (sizeof(xen_extraversion_t))
#define XENVER_compile_info 2
struct xen_compile_info {
	char compiler[64];
	char compile_by[16];
	char compile_domain[32];
	char compile_date[32];
};
typedef struct xen_compile_info xen_compile_info_t;
#define XENVER_capabilities 3
typedef char xen_capabilities_info_t[1024];
#define XEN_CAPABILITIES_INFO_LEN (sizeof(xen_capabilities_info_t))
#define XENVER_changeset 4
typedef char xen_changeset_info_t[64];
#define XEN_CHANGESET_INFO_LEN (sizeof(xen_changeset_info_t))
#define XENVER_platform_parameters 5
struct xen_platform_parameters {
	xen_ulong_t virt_start;
};
typedef struct xen_platform_parameters xen_platform_parameters_t;
#define XENVER_get_features 6
struct xen_feature_info {
	unsigned int submap_idx;
	uint32_t submap;
};
typedef struct xen_feature_info xen_feature_info_t;
#define XENVER_pagesize 7
#define XENVER_guest_handle 8
#define XENVER_commandline 9
typedef char xen_commandline_t[1024];

/*
 * Version information about "the hypervisor", i.e. Kapsel: XENVER_version
 * returns (major << 16) | minor of Kapsel; XENVER_pagesize returns 4096;
 * the others fill arg (their type above) and return 0.  Unknown commands:
 * -1 with errno ENOSYS.
 */
int xc_version(xc_interface *xch, int cmd, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* KAPSEL_XENCTRL_H */
