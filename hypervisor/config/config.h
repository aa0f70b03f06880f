/* A VM's definition: filled from the command line or from libvirt domain XML. */
#ifndef KAPSEL_CONFIG_H
#define KAPSEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define VM_CONFIG_MAX_DISKS 8u
#define VM_CONFIG_MAX_NETS 4u
#define VM_CONFIG_NAME_MAX 64u
/* The most vCPUs a VM has (the ABI's KAPSEL_MAX_VCPUS; config.c checks). */
#define VM_CONFIG_MAX_VCPUS 16u

enum vm_lifecycle_action {
	VM_ACTION_DESTROY = 0,	/* end the VM (kapsel exits) */
	VM_ACTION_RESTART = 1,	/* boot the guest again */
	VM_ACTION_PRESERVE = 2, /* keep it stopped for inspection (crash) */
};

enum vm_disk_bus {
	VM_DISK_BUS_PV = 0,  /* PV ring device (libvirt bus='xen') */
	VM_DISK_BUS_ATA = 1, /* emulated ATA disk (libvirt bus='ide') */
};

enum vm_disk_cache {
	VM_DISK_CACHE_WRITEBACK = 0, /* host page cache */
	VM_DISK_CACHE_NONE = 1,	     /* O_DIRECT */
};

/* Token bucket: rate per second and burst size; 0 rate means unlimited. */
struct vm_rate_limit {
	uint64_t rate_per_second;
	uint64_t burst;
};

/* An image's format comes from the operator (or Kapsel's own state
 * records), never from the image's bytes: a guest writes those. */
enum vm_disk_format {
	VM_DISK_FORMAT_RAW = 0,	    /* the file is the disk, byte for byte */
	VM_DISK_FORMAT_OVERLAY = 1, /* a Kapsel copy-on-write overlay (disk_overlay.h) */
};

struct vm_disk_config {
	char *path;
	enum vm_disk_format format;
	bool readonly;
	enum vm_disk_bus bus;
	enum vm_disk_cache cache;
	struct vm_rate_limit ops_limit;
	struct vm_rate_limit bytes_limit;
	bool poll;	  /* backend busy-polls the ring before sleeping */
	uint32_t poll_us; /* how long it polls, when poll is set */
	uint32_t queues;  /* PV rings (queues=N, <driver queues='N'/>); 0 = one per vCPU */
};

enum vm_net_model {
	VM_NET_MODEL_PV = 0,	 /* PV two-ring device (libvirt model 'xen' / 'virtio') */
	VM_NET_MODEL_NE2000 = 1, /* emulated NE2000 at 0x300 (model 'ne2k_isa' / 'ne2000') */
};

enum vm_net_backend {
	VM_NET_BACKEND_SOCKET = 0, /* Unix datagram socket: bind path, send to peer */
	VM_NET_BACKEND_TAP = 1,	   /* /dev/net/tun, IFF_TAP | IFF_NO_PI */
};

/* A network interface (config_net.c); frames_limit / bytes_limit apply
 * to what the guest sends. */
struct vm_net_config {
	enum vm_net_model model;
	enum vm_net_backend backend;
	char *path; /* socket: the path this VM binds; tap: the interface name */
	char *peer; /* socket: the path frames are sent to; tap: NULL */
	uint8_t mac[6];
	bool has_mac; /* else derived from the VM's uuid and the net's index */
	struct vm_rate_limit frames_limit;
	struct vm_rate_limit bytes_limit;
};

/* --console-output FILE's size cap unless max=SIZE says otherwise. */
#define VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES (64ull << 20)
/* The smallest cap max=SIZE accepts (room for output and the note at the cap). */
#define VM_CONSOLE_OUTPUT_MIN_MAX_BYTES 4096ull

/* The PV entropy device (config_rng.c): present or not, and its limits on
 * what the guest may draw.  There is no host path: the bytes always come
 * from getrandom(2). */
struct vm_rng_config {
	bool enabled;
	struct vm_rate_limit requests_limit;
	struct vm_rate_limit bytes_limit;
};

enum vm_console_mode {
	VM_CONSOLE_AUTO = 0, /* offer PV console and UART; guest picks PV */
	VM_CONSOLE_UART = 1, /* offer only the emulated UART */
};

struct vm_config {
	char name[VM_CONFIG_NAME_MAX];
	uint8_t uuid[16];
	bool has_uuid;
	uint64_t memory_bytes;
	unsigned vcpus;
	char *kernel_path;
	char *cmdline;
	enum vm_lifecycle_action on_poweroff;
	enum vm_lifecycle_action on_reboot;
	enum vm_lifecycle_action on_crash;
	enum vm_console_mode console_mode;
	char *console_output_path;	   /* NULL: stdout */
	uint64_t console_output_max_bytes; /* the file's size cap, 0: none (not for stdout) */
	bool console_input;		   /* forward host stdin to the guest */
	struct vm_disk_config disks[VM_CONFIG_MAX_DISKS];
	unsigned disk_count;
	struct vm_net_config nets[VM_CONFIG_MAX_NETS];
	unsigned net_count;
	struct vm_rng_config rng; /* attached after the nets */
	bool print_stats;	  /* --stats: print counters at exit */
	char *stats_path;	  /* write counters here on SIGUSR1 */
	char *source_xml_path;	  /* where the definition came from, if XML */
};

/* The name of a lifecycle action as domain XML and the control verb 'info'
 * spell it ("destroy", "restart", "preserve"); a value outside the enum
 * reads as "destroy", what Kapsel does with it. */
const char *vm_lifecycle_action_name(enum vm_lifecycle_action action);

/* The lifecycle action called name (a NUL-terminated string): 0, or
 * -EINVAL for a name that is none. */
int vm_lifecycle_action_parse(const char *name, enum vm_lifecycle_action *action);

/*
 * The one check for a VM name, wherever it comes from (command line, XML,
 * a state file, a migration stream): 1 to VM_CONFIG_NAME_MAX - 1 printable
 * ASCII characters, no space, '/' or '\\', not starting with '.' (a name
 * becomes a file name in the runtime directory).  Returns 0, or -EINVAL
 * with a message in error (the name shown escaped) when error is not NULL.
 */
int vm_config_check_name(const char *name, char *error, size_t error_len);

/*
 * The one check for a vCPU count, wherever it comes from (--vcpus, domain
 * XML <vcpu>, a state file's definition): decimal digits only, 1 to
 * VM_CONFIG_MAX_VCPUS.  Returns 0 and sets *vcpus, -EINVAL for text that
 * is not a whole number (NULL, empty, sign, spaces, trailing text) or
 * -ERANGE for a number outside the range; *vcpus is then unchanged.
 */
int vm_config_parse_vcpus(const char *text, unsigned *vcpus);

/* Defaults: 64 MiB, 1 vCPU, destroy on poweroff/crash, console on stdout. */
void vm_config_init(struct vm_config *config);

/* Free every string the config owns. */
void vm_config_free(struct vm_config *config);

/*
 * Parse a --disk value: path[,format=raw|overlay][,readonly][,bus=pv|ata]
 * [,cache=none|writeback][,iops=N][,iops_burst=N][,bps=N][,bps_burst=N][,poll=US].  Returns 0, or
 * -EINVAL with a message naming the bad part in error.
 */
int vm_config_parse_disk(const char *text, struct vm_disk_config *disk, char *error,
			 size_t error_len);

/*
 * Parse a --console-output value, FILE[,max=SIZE] (SIZE in bytes or with
 * K/M/G; max=0 means no cap; the default is
 * VM_CONSOLE_OUTPUT_DEFAULT_MAX_BYTES), into config's console_output_path
 * and console_output_max_bytes.  Returns 0, or -EINVAL with a message
 * naming the bad part in error (config is then unchanged), or -ENOMEM.
 */
int vm_config_parse_console_output(const char *text, struct vm_config *config, char *error,
				   size_t error_len);

/*
 * Parse a --net value (config_net.c): socket=PATH,peer=PATH or tap=IFNAME,
 * then [,model=pv|ne2000][,mac=XX:XX:XX:XX:XX:XX][,pps=N][,pps_burst=N]
 * [,bps=N][,bps_burst=N].  Returns 0, or -EINVAL with a message naming
 * the bad part in error; on failure net owns nothing.
 */
int vm_config_parse_net(const char *text, struct vm_net_config *net, char *error, size_t error_len);

/*
 * Parse a --rng value (config_rng.c): NULL or "" (defaults: unlimited),
 * else [bps=N][,bps_burst=N][,iops=N][,iops_burst=N] (bytes and requests
 * per second the guest may draw).  Sets rng->enabled.  Returns 0, or
 * -EINVAL with a message naming the bad part in error.
 */
int vm_config_parse_rng(const char *text, struct vm_rng_config *rng, char *error, size_t error_len);

/* Free the strings of one net (config_net.c). */
void vm_net_config_free(struct vm_net_config *net);

/*
 * The MAC of net number index: the configured one, else a locally
 * administered unicast address derived from the VM's uuid (or name when
 * it has none) and index, so clones with new uuids get new addresses.
 */
void vm_config_net_mac(const struct vm_config *config, unsigned index, uint8_t mac[6]);

/* The largest domain XML Kapsel reads (a file or a state file's definition):
 * a definition with every disk and interface at PATH_MAX is under 64 KiB. */
#define VM_CONFIG_XML_MAX_BYTES (1u << 20)

/*
 * The Kapsel extension namespace of domain XML (docs/state.md): settings
 * libvirt has no element for, inside <metadata><kapsel:domain>.  A
 * namespace with the same prefix and another version is refused.
 */
#define VM_CONFIG_XML_NAMESPACE "https://kapsel.example/xmlns/domain/1"
#define VM_CONFIG_XML_NAMESPACE_PREFIX "https://kapsel.example/xmlns/domain/"

/*
 * Parse libvirt domain XML held in memory (data, length_bytes; no NUL
 * needed) into config: the one parser of domain XML, for --xml FILE and
 * for the definition a state file or migration stream carries.  name
 * names the document in messages; base_dir is where relative paths start
 * (NULL: they stay relative).  The parser never touches the network, never
 * loads a DTD or XInclude, and refuses a document with a <!DOCTYPE> (no
 * entities at all) or over VM_CONFIG_XML_MAX_BYTES.  Returns 0, or -EINVAL
 * with a message naming the element in error (config may then hold part
 * of the definition: free it).
 */
int vm_config_parse_xml(const char *data, size_t length_bytes, const char *name,
			const char *base_dir, struct vm_config *config, char *error,
			size_t error_len);

/*
 * Parse a libvirt domain XML file into config (config_xml.c): reads it and
 * calls vm_config_parse_xml with the file's folder as base_dir.  Returns
 * 0, or -EINVAL with a message naming the element in error.
 */
int vm_config_load_xml(const char *path, struct vm_config *config, char *error, size_t error_len);

/* What vm_config_format_xml writes. */
enum vm_config_xml_form {
	/* kapsel dumpxml and a state directory's domain.xml: the definition
	 * as the operator sees it, console file included. */
	VM_CONFIG_XML_DUMP = 0,
	/* The definition inside a state file or migration stream: the uuid
	 * always, the console on stdio (the restorer names its own file). */
	VM_CONFIG_XML_STATE = 1,
};

/*
 * Write config as libvirt domain XML (valid per libvirt's domain schema,
 * Kapsel's extras in VM_CONFIG_XML_NAMESPACE) into a new NUL-terminated
 * buffer *xml (caller frees) of *length_bytes.  Relative paths are made
 * absolute against the current directory.  Returns 0 or a negative errno
 * with a message in error.
 */
int vm_config_format_xml(const struct vm_config *config, enum vm_config_xml_form form, char **xml,
			 size_t *length_bytes, char *error, size_t error_len);

/* vm_config_format_xml(VM_CONFIG_XML_DUMP) written to out. */
int vm_config_write_xml(const struct vm_config *config, FILE *out, char *error, size_t error_len);

#endif
