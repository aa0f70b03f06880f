/* Unit tests: libvirt domain XML parsing (vm_config_load_xml) and writing (vm_config_write_xml). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "cunit_main.h"

static char dir[] = "/tmp/kapsel-config-xml.XXXXXX";
static char path[512];
static char error[8192]; /* room for a list of problems */

/* Write text to a fresh XML file and parse it into config (initialised). */
static int load(const char *text, struct vm_config *config)
{
	static unsigned n;
	snprintf(path, sizeof(path), "%s/domain%u.xml", dir, n++);
	FILE *f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputs(text, f);
	fclose(f);
	vm_config_init(config);
	error[0] = '\0';
	return vm_config_load_xml(path, config, error, sizeof(error));
}

/* The error message without the "domain XML 'PATH': " prefix. */
static const char *reason(void)
{
	const char *colon = strstr(error, "': ");
	return colon ? colon + 3 : error;
}

static void test_full_domain(void)
{
	struct vm_config c;
	int err = load(
		"<domain type='kvm'>\n"
		"  <name>web-1</name>\n"
		"  <uuid>0123456789abcdef0123456789ABCDEF</uuid>\n"
		"  <memory unit='GiB'>1</memory>\n"
		"  <currentMemory unit='MiB'>1024</currentMemory>\n"
		"  <vcpu placement='static' current='1'>1</vcpu>\n"
		"  <os><type arch='x86_64' machine='pc'>hvm</type>\n"
		"    <kernel>/boot/guest.elf</kernel><cmdline>a=1 b</cmdline></os>\n"
		"  <on_poweroff>restart</on_poweroff><on_reboot>destroy</on_reboot>\n"
		"  <on_crash>preserve</on_crash>\n"
		"  <devices>\n"
		"    <disk type='file' device='disk'>\n"
		"      <driver name='qemu' type='raw' cache='none' io='native' queues='2'/>\n"
		"      <source file='/img/a.img'/><target dev='xvda' bus='xen'/>\n"
		"      <iotune><total_iops_sec>100</total_iops_sec><total_iops_sec_max>200</total_iops_sec_max>\n"
		"        <total_bytes_sec>1000000</total_bytes_sec><total_bytes_sec_max>2000000</total_bytes_sec_max></iotune>\n"
		"    </disk>\n"
		"    <disk type='file' device='disk'><source file='/img/b.img'/>\n"
		"      <target dev='hda' bus='ide'/><readonly/></disk>\n"
		"    <serial type='file'><source path='/var/log/c.log'/><target port='0'/></serial>\n"
		"    <console type='file'><source path='/var/log/c.log'/><target type='xen'/></console>\n"
		"  </devices>\n"
		"</domain>\n",
		&c);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	CU_ASSERT_STRING_EQUAL(c.name, "web-1");
	CU_ASSERT(c.has_uuid);
	CU_ASSERT_EQUAL(c.uuid[0], 0x01);
	CU_ASSERT_EQUAL(c.uuid[7], 0xef);
	CU_ASSERT_EQUAL(c.uuid[15], 0xef);
	CU_ASSERT_EQUAL(c.memory_bytes, 1ull << 30);
	CU_ASSERT_EQUAL(c.vcpus, 1);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, "/boot/guest.elf");
	CU_ASSERT_STRING_EQUAL(c.cmdline, "a=1 b");
	CU_ASSERT_EQUAL(c.on_poweroff, VM_ACTION_RESTART);
	CU_ASSERT_EQUAL(c.on_reboot, VM_ACTION_DESTROY);
	CU_ASSERT_EQUAL(c.on_crash, VM_ACTION_PRESERVE);
	CU_ASSERT_EQUAL_FATAL(c.disk_count, 2);
	CU_ASSERT_STRING_EQUAL(c.disks[0].path, "/img/a.img");
	CU_ASSERT_EQUAL(c.disks[0].bus, VM_DISK_BUS_PV);
	CU_ASSERT_EQUAL(c.disks[0].cache, VM_DISK_CACHE_NONE);
	CU_ASSERT_EQUAL(c.disks[0].queues, 2);
	CU_ASSERT_EQUAL(c.disks[1].queues, 0); /* no queues=: one per vCPU */
	CU_ASSERT_EQUAL(c.disks[0].ops_limit.rate_per_second, 100);
	CU_ASSERT_EQUAL(c.disks[0].ops_limit.burst, 200);
	CU_ASSERT_EQUAL(c.disks[0].bytes_limit.rate_per_second, 1000000);
	CU_ASSERT_EQUAL(c.disks[0].bytes_limit.burst, 2000000);
	CU_ASSERT(!c.disks[0].readonly);
	CU_ASSERT_EQUAL(c.disks[1].bus, VM_DISK_BUS_ATA);
	CU_ASSERT(c.disks[1].readonly);
	CU_ASSERT_STRING_EQUAL(c.console_output_path, "/var/log/c.log");
	CU_ASSERT_EQUAL(c.console_mode, VM_CONSOLE_AUTO);
	CU_ASSERT_STRING_EQUAL(c.source_xml_path, path);
	vm_config_free(&c);
}

static void test_memory_units(void)
{
	static const struct {
		const char *element;
		uint64_t bytes;
	} cases[] = {
		{ "<memory>65536</memory>", 64ull << 20 }, /* KiB by default */
		{ "<memory unit='KiB'>32768</memory>", 32ull << 20 },
		{ "<memory unit='M'>16</memory>", 16ull << 20 },
		{ "<memory unit='b'>8388608</memory>", 8ull << 20 },
		{ "<memory unit='G'>2</memory>", 2ull << 30 },
		{ "<memory unit='MB'>12582912</memory><!-- 12e12 is not 2M aligned --> ", 0 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		snprintf(text, sizeof(text),
			 "<domain type='kvm'><name>m</name>%s<os><kernel>/k</kernel></os></domain>",
			 cases[i].element);
		struct vm_config c;
		int err = load(text, &c);
		if (cases[i].bytes) {
			CU_ASSERT_EQUAL(err, 0);
			CU_ASSERT_EQUAL(c.memory_bytes, cases[i].bytes);
		} else {
			CU_ASSERT_EQUAL(err, -EINVAL);
			CU_ASSERT_STRING_EQUAL(
				reason(),
				"/domain/memory must be a multiple of 2 MiB between 4 MiB and 64 GiB");
		}
		vm_config_free(&c);
	}
}

static void test_console_modes(void)
{
	static const struct {
		const char *devices;
		enum vm_console_mode mode;
	} cases[] = {
		{ "", VM_CONSOLE_AUTO },
		{ "<serial type='stdio'/>", VM_CONSOLE_UART },
		{ "<serial type='pty'/><console type='pty'><target type='serial'/></console>",
		  VM_CONSOLE_UART },
		{ "<console type='stdio'><target type='xen'/></console>", VM_CONSOLE_AUTO },
		{ "<serial type='stdio'/><console type='stdio'/>", VM_CONSOLE_AUTO },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		snprintf(text, sizeof(text),
			 "<domain type='kvm'><name>c</name><memory>16384</memory><os><kernel>/k</kernel></os>"
			 "<devices>%s</devices></domain>",
			 cases[i].devices);
		struct vm_config c;
		CU_ASSERT_EQUAL(load(text, &c), 0);
		CU_ASSERT_EQUAL(c.console_mode, cases[i].mode);
		CU_ASSERT_PTR_NULL(c.console_output_path);
		vm_config_free(&c);
	}
}

static void test_relative_paths(void)
{
	struct vm_config c;
	CU_ASSERT_EQUAL_FATAL(load("<domain type='kvm'><name>r</name><memory>16384</memory>"
				   "<os><kernel>guests/k.elf</kernel></os><devices>"
				   "<disk type='file'><source file='../d.img'/><target dev='xvda'/></disk>"
				   "<console type='file'><source path='log/c.txt'/></console>"
				   "</devices></domain>",
				   &c),
			      0);
	char expected[600];
	snprintf(expected, sizeof(expected), "%s/guests/k.elf", dir);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, expected);
	snprintf(expected, sizeof(expected), "%s/../d.img", dir);
	CU_ASSERT_STRING_EQUAL(c.disks[0].path, expected);
	snprintf(expected, sizeof(expected), "%s/log/c.txt", dir);
	CU_ASSERT_STRING_EQUAL(c.console_output_path, expected);
	vm_config_free(&c);
}

static void test_refused(void)
{
	static const struct {
		const char *body;
		const char *message;
	} cases[] = {
		{ "<name>x</name><vcpu>17</vcpu>",
		  "/domain/vcpu is '17'; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "<name>x</name><vcpu>0</vcpu>",
		  "/domain/vcpu is '0'; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "<name>x</name><vcpu>two</vcpu>",
		  "/domain/vcpu is 'two'; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "<name>x</name><vcpu current='2'>4</vcpu>",
		  "/domain/vcpu current='2' differs from the count 4; Kapsel has no vCPU hot-plug (the guest brings up the vCPUs it wants), remove current= or make it 4" },
		{ "<name>x</name><vcpu current='0'>4</vcpu>",
		  "/domain/vcpu current='0' is not a vCPU count from 1 to 16" },
		/* currentMemory before memory is compared too. */
		{ "<name>x</name><currentMemory>8192</currentMemory>",
		  "/domain/currentMemory differs from /domain/memory; Kapsel has no balloon, make them equal" },
		{ "<name>x</name><maxMemory slots='2'>1</maxMemory>",
		  "/domain/maxMemory is not supported: Kapsel has no memory hotplug" },
		{ "<name>x</name><cpu/>", "/domain/cpu is not supported by Kapsel; remove it" },
		{ "<name>a/b</name>",
		  "/domain/name: VM name 'a/b' is not valid: use 1-63 printable characters without spaces, '/' or '\\', not starting with '.'" },
		{ "<name>a b</name>",
		  "/domain/name: VM name 'a\\x20b' is not valid: use 1-63 printable characters without spaces, '/' or '\\', not starting with '.'" },
		{ "", "/domain/name is missing; every VM needs a unique name" },
		{ "<name>x</name><uuid>1234</uuid>",
		  "/domain/uuid '1234' must have 32 hex digits" },
		{ "<name>x</name><uuid>0123456789abcdef0123456789abcdeg</uuid>",
		  "/domain/uuid '0123456789abcdef0123456789abcdeg' is not a UUID" },
		{ "<name>x</name><on_reboot>preserve</on_reboot>",
		  "/domain/on_reboot 'preserve' is not supported; use destroy or restart" },
		{ "<name>x</name><on_crash>coredump-destroy</on_crash>",
		  "/domain/on_crash 'coredump-destroy' is not supported; use destroy or restart (or preserve)" },
		{ "<name>x</name><devices><rng model='virtio'><backend model='egd' type='tcp'/></rng></devices>",
		  "/domain/devices/rng/backend model='egd' is not supported; use model='random' (Kapsel draws from the host kernel with getrandom)" },
		{ "<name>x</name><devices><rng model='virtio'><backend model='random'>/etc/shadow</backend></rng></devices>",
		  "/domain/devices/rng/backend '/etc/shadow' is not supported; use /dev/urandom (Kapsel never opens it: the bytes come from getrandom)" },
		{ "<name>x</name><devices><rng model='virtio'><rate bytes='0'/></rng></devices>",
		  "/domain/devices/rng/rate bytes='0' must be a whole number of bytes above 0" },
		{ "<name>x</name><devices><rng model='virtio'/><rng model='virtio'/></devices>",
		  "/domain/devices/rng: a second <rng>; Kapsel offers one entropy device" },
		{ "<name>x</name><devices><rng model='vhost'/></devices>",
		  "/domain/devices/rng model='vhost' is not supported; use model='virtio' (the PV entropy device)" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='hda' bus='ide'/></disk>"
		  "<disk type='file'><source file='/b'/><target dev='hda' bus='ide'/></disk></devices>",
		  "/domain/devices/disk/target: two disks with bus='ide'; Kapsel emulates one ATA drive, attach the others with bus='xen'" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='xvda'/>"
		  "<serial>abc</serial></disk></devices>",
		  "/domain/devices/disk/serial is not supported by Kapsel; remove it" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='xvda'/>"
		  "<iotune><total_iops_sec>-5</total_iops_sec></iotune></disk></devices>",
		  "/domain/devices/disk/iotune/total_iops_sec '-5' is not a whole number" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/></disk></devices>",
		  "/domain/devices/disk needs <target dev='...' bus='xen|ide'/>" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='xvda'/>"
		  "<driver cache='unsafe'/></disk></devices>",
		  "/domain/devices/disk/driver cache='unsafe' is not supported; use none or writeback" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='xvda'/>"
		  "<driver queues='0'/></disk></devices>",
		  "/domain/devices/disk/driver queues='0' must be 1-16" },
		{ "<name>x</name><devices><disk type='file'><source file='/a'/><target dev='xvda'/>"
		  "<driver queues='99'/></disk></devices>",
		  "/domain/devices/disk/driver queues='99' must be 1-16" },
		{ "<name>x</name><devices><serial type='file'><source path='/a'/></serial>"
		  "<console type='stdio'/></devices>",
		  "/domain/devices: one console is a file ('/a') and another stdio; Kapsel has one console, make them the same" },
		{ "<name>x</name><devices><serial type='file'/></devices>",
		  "/domain/devices/serial type='file' needs <source path='...'/>" },
		{ "<name>x</name><metadata><k:domain xmlns:k='https://kapsel.example/xmlns/domain/1'>"
		  "<k:disk index='0' poll_us='5'/></k:domain></metadata>",
		  "/domain/metadata/kapsel:domain/disk index='0' names no disk (metadata must come after <devices>)" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[1024];
		snprintf(text, sizeof(text),
			 "<domain type='kvm'>%s<memory>16384</memory><os><kernel>/k</kernel></os></domain>",
			 cases[i].body);
		struct vm_config c;
		CU_ASSERT_EQUAL(load(text, &c), -EINVAL);
		if (strcmp(reason(), cases[i].message) != 0) {
			fprintf(stderr, "\ncase %zu: got '%s'\n      want '%s'\n", i, reason(),
				cases[i].message);
			CU_FAIL("error message");
		}
		vm_config_free(&c);
	}
	struct vm_config c;
	CU_ASSERT_EQUAL(load("<domain type='kvm'><name>x</name", &c), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(reason(), "not well-formed XML"));
	vm_config_free(&c);
	vm_config_init(&c);
	CU_ASSERT_EQUAL(vm_config_load_xml("/nonexistent/x.xml", &c, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_STRING_EQUAL(reason(), "cannot read it: No such file or directory");
	vm_config_free(&c);
}

static void test_ignored_with_warning(void)
{
	struct vm_config c;
	CU_ASSERT_EQUAL(
		load("<domain type='kvm'><name>w</name><title>t</title><description>d</description>"
		     "<memory>16384</memory><features><acpi/></features><clock offset='utc'/>"
		     "<os><kernel>/k</kernel></os><metadata><other xmlns='urn:x'>1</other></metadata>"
		     "<devices><emulator>/usr/bin/qemu</emulator><controller type='usb'/>"
		     "<memballoon model='none'/></devices></domain>",
		     &c),
		0);
	vm_config_free(&c);
}

/* <vcpu>N</vcpu> for 1..16, with or without placement and current=N. */
static void test_vcpu_counts(void)
{
	static const struct {
		const char *element;
		unsigned vcpus;
	} cases[] = {
		{ "", 1 }, /* no <vcpu>: one */
		{ "<vcpu>1</vcpu>", 1 },
		{ "<vcpu>2</vcpu>", 2 },
		{ "<vcpu placement='static'>16</vcpu>", 16 },
		{ "<vcpu placement='static' current='3'>3</vcpu>", 3 },
		{ "<vcpu>\n  5\n</vcpu>", 5 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char text[512];
		snprintf(text, sizeof(text),
			 "<domain type='kvm'><name>v</name><memory>16384</memory>%s"
			 "<os><kernel>/k</kernel></os></domain>",
			 cases[i].element);
		struct vm_config c;
		int err = load(text, &c);
		if (err)
			fprintf(stderr, "\ncase %zu: %s\n", i, error);
		CU_ASSERT_EQUAL(err, 0);
		CU_ASSERT_EQUAL(c.vcpus, cases[i].vcpus);
		vm_config_free(&c);
	}
}

/* Writing then reading gives the same definition back. */
static void test_round_trip(void)
{
	struct vm_config a, b;
	vm_config_init(&a);
	snprintf(a.name, sizeof(a.name), "round");
	a.has_uuid = true;
	for (unsigned i = 0; i < 16; i++)
		a.uuid[i] = (uint8_t)(i * 17);
	a.memory_bytes = 96ull << 20;
	a.vcpus = 5;
	a.kernel_path = strdup("/k/guest.elf");
	a.cmdline = strdup("x=<1> & y='2' z=\"3\"");
	a.on_poweroff = VM_ACTION_RESTART;
	a.on_crash = VM_ACTION_PRESERVE;
	a.console_mode = VM_CONSOLE_UART;
	a.console_output_path = strdup("/var/log/round.log");
	a.disk_count = 2;
	a.disks[0] = (struct vm_disk_config){ .path = strdup("/img/0.img"),
					      .bus = VM_DISK_BUS_PV,
					      .cache = VM_DISK_CACHE_NONE,
					      .ops_limit = { 10, 20 },
					      .bytes_limit = { 30, 0 },
					      .poll = true,
					      .poll_us = 40 };
	a.disks[1] = (struct vm_disk_config){ .path = strdup("/img/1.img"),
					      .bus = VM_DISK_BUS_ATA,
					      .readonly = true };
	char *xml = NULL;
	size_t xml_len = 0;
	FILE *out = open_memstream(&xml, &xml_len);
	CU_ASSERT_EQUAL_FATAL(vm_config_write_xml(&a, out, error, sizeof(error)), 0);
	fclose(out);
	/* libvirt's own form of the count, as virsh dumpxml writes it. */
	CU_ASSERT_PTR_NOT_NULL(strstr(xml, "<vcpu placement='static'>5</vcpu>"));
	CU_ASSERT_EQUAL_FATAL(load(xml, &b), 0);
	CU_ASSERT_STRING_EQUAL(b.name, a.name);
	CU_ASSERT_EQUAL(b.vcpus, 5);
	CU_ASSERT(b.has_uuid);
	CU_ASSERT_EQUAL(memcmp(b.uuid, a.uuid, 16), 0);
	CU_ASSERT_EQUAL(b.memory_bytes, a.memory_bytes);
	CU_ASSERT_STRING_EQUAL(b.kernel_path, a.kernel_path);
	CU_ASSERT_STRING_EQUAL(b.cmdline, a.cmdline);
	CU_ASSERT_EQUAL(b.on_poweroff, a.on_poweroff);
	CU_ASSERT_EQUAL(b.on_reboot, a.on_reboot);
	CU_ASSERT_EQUAL(b.on_crash, a.on_crash);
	CU_ASSERT_EQUAL(b.console_mode, a.console_mode);
	CU_ASSERT_STRING_EQUAL(b.console_output_path, a.console_output_path);
	CU_ASSERT_EQUAL_FATAL(b.disk_count, 2);
	for (unsigned i = 0; i < 2; i++) {
		CU_ASSERT_STRING_EQUAL(b.disks[i].path, a.disks[i].path);
		CU_ASSERT_EQUAL(b.disks[i].bus, a.disks[i].bus);
		CU_ASSERT_EQUAL(b.disks[i].cache, a.disks[i].cache);
		CU_ASSERT_EQUAL(b.disks[i].readonly, a.disks[i].readonly);
		CU_ASSERT_EQUAL(b.disks[i].poll, a.disks[i].poll);
		CU_ASSERT_EQUAL(b.disks[i].poll_us, a.disks[i].poll_us);
		CU_ASSERT_EQUAL(b.disks[i].ops_limit.rate_per_second,
				a.disks[i].ops_limit.rate_per_second);
		CU_ASSERT_EQUAL(b.disks[i].ops_limit.burst, a.disks[i].ops_limit.burst);
		CU_ASSERT_EQUAL(b.disks[i].bytes_limit.rate_per_second,
				a.disks[i].bytes_limit.rate_per_second);
		CU_ASSERT_EQUAL(b.disks[i].bytes_limit.burst, a.disks[i].bytes_limit.burst);
	}
	free(xml);
	vm_config_free(&a);
	vm_config_free(&b);
}

/* Socket-linked NICs have no libvirt element: <kapsel:interface> places
 * them among the <interface> elements by index. */
static void test_kapsel_interfaces(void)
{
	struct vm_config c;
	int err =
		load("<domain type='kvm'><name>n</name><memory unit='MiB'>64</memory>"
		     "<os><kernel>/k</kernel></os><devices>"
		     "<interface type='ethernet'><target dev='tap1'/></interface>"
		     "<interface type='ethernet'><target dev='tap3'/><model type='ne2k_isa'/></interface>"
		     "<rng model='virtio'><rate bytes='100'/></rng></devices>"
		     "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
		     "<k:interface index='0' socket='/s0' peer='/p0' mac='02:00:00:00:00:01'/>"
		     "<k:interface index='2' socket='/s2' peer='/p2' bps='9'/>"
		     "<k:interface index='3' pps='5' pps_burst='6'/>"
		     "<k:rng iops='4'/></k:domain></metadata></domain>",
		     &c);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	CU_ASSERT_EQUAL_FATAL(c.net_count, 4);
	CU_ASSERT_EQUAL(c.nets[0].backend, VM_NET_BACKEND_SOCKET);
	CU_ASSERT_STRING_EQUAL(c.nets[0].path, "/s0");
	CU_ASSERT_STRING_EQUAL(c.nets[0].peer, "/p0");
	CU_ASSERT(c.nets[0].has_mac);
	CU_ASSERT_EQUAL(c.nets[0].mac[5], 1);
	CU_ASSERT_STRING_EQUAL(c.nets[1].path, "tap1");
	CU_ASSERT_STRING_EQUAL(c.nets[2].path, "/s2");
	CU_ASSERT_EQUAL(c.nets[2].bytes_limit.rate_per_second, 9);
	CU_ASSERT_STRING_EQUAL(c.nets[3].path, "tap3");
	CU_ASSERT_EQUAL(c.nets[3].model, VM_NET_MODEL_NE2000);
	CU_ASSERT_EQUAL(c.nets[3].frames_limit.rate_per_second, 5);
	CU_ASSERT_EQUAL(c.nets[3].frames_limit.burst, 6);
	/* kapsel:rng replaces what <rate> said, exactly. */
	CU_ASSERT_EQUAL(c.rng.requests_limit.rate_per_second, 4);
	CU_ASSERT_EQUAL(c.rng.bytes_limit.rate_per_second, 0);
	vm_config_free(&c);

	/* A second NE2000 through the namespace is refused like one in XML. */
	err = load("<domain type='kvm'><name>n</name><memory unit='MiB'>64</memory>"
		   "<os><kernel>/k</kernel></os><devices>"
		   "<interface type='ethernet'><target dev='t'/><model type='ne2k_isa'/></interface>"
		   "</devices><metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
		   "<k:interface index='1' socket='/s' peer='/p' model='ne2000'/>"
		   "</k:domain></metadata></domain>",
		   &c);
	CU_ASSERT_EQUAL(err, -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "one NE2000"));
	vm_config_free(&c);

	/* From a buffer, as a state file's definition is read: same parser,
	 * relative paths stay relative without a base directory. */
	const char *xml = "<domain type='kvm'><name>b</name><memory unit='MiB'>64</memory>"
			  "<os><kernel>rel/k.elf</kernel></os></domain>";
	vm_config_init(&c);
	CU_ASSERT_EQUAL(vm_config_parse_xml(xml, strlen(xml), "buffer", NULL, &c, error,
					    sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, "rel/k.elf");
	CU_ASSERT_PTR_NULL(c.source_xml_path);
	vm_config_free(&c);
	vm_config_init(&c);
	CU_ASSERT_EQUAL(vm_config_parse_xml(xml, strlen(xml), "buffer", "/base", &c, error,
					    sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, "/base/rel/k.elf");
	vm_config_free(&c);
}

/* virt-install's Xen PV guest (tests/fixtures): every problem in one
 * message, in document order, each with its line and what to do. */
static void test_xen_pv_fixture_problems(void)
{
	const char *fixtures = getenv("KAPSEL_FIXTURES");
	CU_ASSERT_PTR_NOT_NULL_FATAL(fixtures);
	char fixture[512], expected[4096];
	snprintf(fixture, sizeof(fixture), "%s/xen-pv-virt-install.xml", fixtures);
	struct vm_config c;
	vm_config_init(&c);
	CU_ASSERT_EQUAL(vm_config_load_xml(fixture, &c, error, sizeof(error)), -EINVAL);
	snprintf(expected, sizeof(expected),
		 "domain XML '%s': 6 problems; Kapsel runs it once all are fixed:\n"
		 "  line 18: /domain/devices/disk/driver type='qcow2' is not supported; use raw or kovl (a Kapsel overlay)\n"
		 "  line 22: /domain/devices/disk device='cdrom' is not supported: Kapsel has only disks; remove it, or attach the image as device='disk' with <readonly/>\n"
		 "  line 28: /domain/devices/interface type='bridge' is not supported; use type='ethernet' with <target dev='TAP'/> (a Unix socket link is --net socket=PATH,peer=PATH on the command line)\n"
		 "  line 39: /domain/devices/graphics is not supported: Kapsel has no display (the console is kapsel's standard output and 'kapsel console NAME'); remove it\n"
		 "  line 42: /domain/devices/video is not supported: Kapsel has no display (the console is kapsel's standard output and 'kapsel console NAME'); remove it\n"
		 "  /domain/bootloader '/usr/lib/xen-4.17/bin/pygrub' is not supported: Kapsel runs no bootloader; copy the guest's kernel out of its image and name it in /domain/os/kernel",
		 fixture);
	if (strcmp(error, expected) != 0) {
		fprintf(stderr, "\ngot:\n%s\nwant:\n%s\n", error, expected);
		CU_FAIL("problem list");
	}
	vm_config_free(&c);
}

/* type='xen' with what libvirt writes for a PV guest: accepted, and what
 * only informs (bootloader beside a kernel, boot order, balloon, input,
 * pty console) is ignored. */
static void test_xen_pv_accepted(void)
{
	struct vm_config c;
	int err = load(
		"<domain type='xen'><name>pv</name><memory unit='KiB'>65536</memory>\n"
		"<currentMemory unit='KiB'>65536</currentMemory><vcpu placement='static'>2</vcpu>\n"
		"<bootloader>/usr/lib/xen-4.17/bin/pygrub</bootloader><bootloader_args>-q</bootloader_args>\n"
		"<os><type arch='x86_64' machine='xenpv'>linux</type><kernel>/k.elf</kernel>\n"
		"<cmdline>console=hvc0</cmdline><boot dev='hd'/></os>\n"
		"<on_crash>restart</on_crash><devices>\n"
		"<disk type='file' device='disk'><driver name='file'/><source file='/d.img'/>"
		"<target dev='xvda' bus='xen'/></disk>\n"
		"<console type='pty'><target type='xen' port='0'/></console>\n"
		"<input type='keyboard' bus='xen'/><memballoon model='xen'/></devices></domain>",
		&c);
	if (err)
		fprintf(stderr, "\n%s\n", error);
	CU_ASSERT_EQUAL_FATAL(err, 0);
	CU_ASSERT_STRING_EQUAL(c.kernel_path, "/k.elf");
	CU_ASSERT_STRING_EQUAL(c.cmdline, "console=hvc0");
	CU_ASSERT_EQUAL(c.vcpus, 2);
	CU_ASSERT_EQUAL(c.memory_bytes, 64ull << 20);
	CU_ASSERT_EQUAL(c.on_crash, VM_ACTION_RESTART);
	CU_ASSERT_EQUAL(c.disk_count, 1);
	CU_ASSERT_EQUAL(c.disks[0].bus, VM_DISK_BUS_PV);
	CU_ASSERT_EQUAL(c.console_mode, VM_CONSOLE_AUTO);
	vm_config_free(&c);

	/* A domain type of neither family is still refused, and says which. */
	CU_ASSERT_EQUAL(load("<domain type='qemu'><name>q</name><memory>16384</memory>"
			     "<os><kernel>/k</kernel></os></domain>",
			     &c),
			-EINVAL);
	CU_ASSERT_STRING_EQUAL(
		reason(),
		"/domain type='qemu' is not supported; use type='kvm' (or 'xen' for a paravirtualized guest)");
	vm_config_free(&c);
}

/* Problems inside one element and across elements all appear, lines and
 * all; past the listing cap, the count still says how many. */
static void test_all_problems_listed(void)
{
	struct vm_config c;
	CU_ASSERT_EQUAL(load("<domain type='kvm'>\n"
			     "<name>a/b</name>\n"
			     "<vcpu>17</vcpu>\n"
			     "<devices><disk type='file'>\n"
			     "<driver type='qcow2'/>\n"
			     "<target dev='sda' bus='scsi'/></disk></devices>\n"
			     "<os><initrd>/i</initrd></os>\n"
			     "</domain>",
			     &c),
			-EINVAL);
	const char *want =
		"7 problems; Kapsel runs it once all are fixed:\n"
		"  line 2: /domain/name: VM name 'a/b' is not valid: use 1-63 printable characters without spaces, '/' or '\\', not starting with '.'\n"
		"  line 3: /domain/vcpu is '17'; Kapsel runs 1 to 16 vCPUs per VM\n"
		"  line 5: /domain/devices/disk/driver type='qcow2' is not supported; use raw or kovl (a Kapsel overlay)\n"
		"  line 6: /domain/devices/disk/target bus='scsi' is not supported; use bus='xen' (PV) or bus='ide' (emulated ATA)\n"
		"  line 7: /domain/os/initrd is not supported: Kapsel boots an ELF kernel directly (use <kernel>)\n"
		"  /domain/os/kernel is missing; Kapsel boots an ELF kernel\n"
		"  /domain/memory is missing";
	if (strcmp(reason(), want) != 0) {
		fprintf(stderr, "\ngot:\n%s\nwant:\n%s\n", reason(), want);
		CU_FAIL("problem list");
	}
	vm_config_free(&c);

	char text[4096] = "<domain type='kvm'><name>x</name><memory>16384</memory>"
			  "<os><kernel>/k</kernel></os>";
	for (int i = 0; i < 45; i++)
		strcat(text, "<cpu/>");
	strcat(text, "</domain>");
	CU_ASSERT_EQUAL(load(text, &c), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(reason(), "45 problems"));
	CU_ASSERT_PTR_NOT_NULL(strstr(reason(), "\n  ... and 5 more"));
	vm_config_free(&c);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 1;
	static const struct unit_test tests[] = {
		{ "a full domain", test_full_domain },
		{ "memory units", test_memory_units },
		{ "serial and console choose the console mode", test_console_modes },
		{ "relative paths start at the XML file", test_relative_paths },
		{ "unsupported or contradictory settings refused", test_refused },
		{ "informational elements ignored", test_ignored_with_warning },
		{ "vCPU counts 1 to 16", test_vcpu_counts },
		{ "write then read gives the same definition", test_round_trip },
		{ "socket interfaces and exact limits in the Kapsel namespace",
		  test_kapsel_interfaces },
		{ "virt-install's Xen PV domain: every problem at once",
		  test_xen_pv_fixture_problems },
		{ "type='xen' for a PV guest accepted", test_xen_pv_accepted },
		{ "every problem listed, with lines", test_all_problems_listed },
	};
	int status = UNIT_RUN("config_xml", tests);
	char command[600];
	snprintf(command, sizeof(command), "rm -rf '%s'", dir);
	if (system(command) != 0)
		status = 1;
	return status;
}
