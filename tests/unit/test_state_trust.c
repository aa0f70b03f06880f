/* Regression tests for trust boundaries: image format never probed, overlay base identity, VM names, forged state records, record caps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config.h"
#include "cunit_main.h"
#include "devices/block/disk.h"
#include "devices/block/disk_overlay.h"
#include "state/snapshot.h"
#include "state/vm_state.h"

static char root[256];
static char error[1024];

static void make_root(void)
{
	if (root[0])
		return;
	snprintf(root, sizeof(root), "/tmp/kapsel-trust-XXXXXX");
	CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(root));
}

/* Write length bytes of fill to path (0600). */
static void write_file(const char *path, uint8_t fill, size_t length)
{
	uint8_t *data = malloc(length);
	CU_ASSERT_PTR_NOT_NULL_FATAL(data);
	memset(data, fill, length);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL_FATAL(write(fd, data, length), (ssize_t)length);
	close(fd);
	free(data);
}

/* What a guest with a writable raw disk can write into its sector 0: a
 * well-formed overlay header (right CRC) naming a host file. */
static void plant_overlay_header(const char *image, const char *target, uint64_t target_bytes)
{
	struct disk_overlay_header h;
	memset(&h, 0, sizeof(h));
	memcpy(h.magic, DISK_OVERLAY_MAGIC, 8);
	h.version = DISK_OVERLAY_VERSION;
	h.block_bytes = DISK_OVERLAY_BLOCK_BYTES;
	h.virtual_bytes = target_bytes;
	h.bitmap_offset = DISK_OVERLAY_HEADER_BYTES;
	h.bitmap_bytes = (target_bytes / h.block_bytes + 1 + 7) / 8;
	h.data_offset = 1u << 20;
	h.base_path_bytes = (uint32_t)strlen(target);
	memcpy(h.base_path, target, h.base_path_bytes);
	struct stat st;
	if (stat(target, &st) == 0) {
		/* Even a guest that guessed the identity right gains nothing. */
		h.base_identity.device = st.st_dev;
		h.base_identity.inode = st.st_ino;
		h.base_identity.size_bytes = (uint64_t)st.st_size;
		h.base_identity.mtime_ns =
			(int64_t)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec;
	}
	h.header_crc = 0;
	h.header_crc = vm_state_crc32c(0, &h, sizeof(h));
	int fd = open(image, O_WRONLY | O_CLOEXEC);
	CU_ASSERT_FATAL(fd >= 0);
	CU_ASSERT_EQUAL_FATAL(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
}

static void test_planted_header_in_raw_image(void)
{
	char image[512], secret[512];
	make_root();
	snprintf(image, sizeof(image), "%s/guest.img", root);
	snprintf(secret, sizeof(secret), "%s/secret", root);
	write_file(image, 0, 2u << 20);
	write_file(secret, 0x5e, 1u << 20);
	plant_overlay_header(image, secret, 1u << 20);

	/* No format given: raw, the default.  The guest must get its own
	 * bytes back, header and all, and never the secret. */
	struct vm_disk_config config = { .path = image };
	struct disk_image disk;
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_PTR_NULL(disk.overlay);
	CU_ASSERT_EQUAL(disk.size_bytes, 2u << 20);
	uint8_t sector[512];
	CU_ASSERT_EQUAL(disk_image_pread(&disk, sector, sizeof(sector), 0), 0);
	CU_ASSERT_EQUAL(memcmp(sector, DISK_OVERLAY_MAGIC, 8), 0);
	CU_ASSERT_EQUAL(disk_image_pread(&disk, sector, sizeof(sector), 8192), 0);
	CU_ASSERT_EQUAL(sector[0], 0); /* the secret holds 0x5e everywhere */
	disk_image_close(&disk);

	/* The --disk parser makes the same call: format defaults to raw. */
	struct vm_disk_config parsed;
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk(image, &parsed, error, sizeof(error)), 0);
	CU_ASSERT_EQUAL(parsed.format, VM_DISK_FORMAT_RAW);
	free(parsed.path);
	CU_ASSERT_EQUAL_FATAL(vm_config_parse_disk("x.img,format=overlay", &parsed, error,
						   sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(parsed.format, VM_DISK_FORMAT_OVERLAY);
	free(parsed.path);
	CU_ASSERT_EQUAL(vm_config_parse_disk("x.img,format=qcow2", &parsed, error, sizeof(error)),
			-EINVAL);
}

static void test_overlay_format_only_when_configured(void)
{
	char image[512];
	make_root();
	snprintf(image, sizeof(image), "%s/plain.img", root);
	write_file(image, 0x11, 1u << 20);
	/* The operator says overlay, the file is not one: refused, not
	 * silently served raw. */
	struct vm_disk_config config = { .path = image, .format = VM_DISK_FORMAT_OVERLAY };
	struct disk_image disk;
	CU_ASSERT_EQUAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), -EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "not one"));
}

static void test_overlay_base_identity(void)
{
	char base[512], overlay[512];
	make_root();
	snprintf(base, sizeof(base), "%s/base.img", root);
	snprintf(overlay, sizeof(overlay), "%s/base.img@1.kovl", root);
	write_file(base, 0x42, 1u << 20);
	CU_ASSERT_EQUAL_FATAL(disk_overlay_create(overlay, base, VM_DISK_FORMAT_RAW, error,
						  sizeof(error)),
			      0);

	struct vm_disk_config config = { .path = overlay,
					 .format = VM_DISK_FORMAT_OVERLAY,
					 .readonly = true };
	struct disk_image disk;
	CU_ASSERT_EQUAL_FATAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), 0);
	CU_ASSERT_PTR_NOT_NULL(disk.overlay);
	uint8_t byte = 0;
	CU_ASSERT_EQUAL(disk_image_pread(&disk, &byte, 1, 4096), 0);
	CU_ASSERT_EQUAL(byte, 0x42);
	disk_image_close(&disk);

	/* Another file of the same size planted at the base's path (a new
	 * inode): refused, and the message does not name it. */
	CU_ASSERT_EQUAL_FATAL(unlink(base), 0);
	write_file(base, 0x66, 1u << 20);
	error[0] = '\0';
	CU_ASSERT_EQUAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), -ESTALE);
	CU_ASSERT_PTR_NULL(strstr(error, "base.img'"));
	CU_ASSERT_PTR_NULL(strstr(error, "/base.img "));
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "not the file the overlay was made over"));

	/* A missing base gets the very same message (no probing of
	 * whether some host file exists). */
	char missing_message[1024];
	snprintf(missing_message, sizeof(missing_message), "%s", error);
	CU_ASSERT_EQUAL_FATAL(unlink(base), 0);
	CU_ASSERT_EQUAL(disk_image_open(&disk, &config, 0, error, sizeof(error)), -ESTALE);
	CU_ASSERT_STRING_EQUAL(error, missing_message);
}

static void test_vm_names(void)
{
	const char *bad[] = {
		"",
		"../x",
		"../../x",
		"a/b",
		"/",
		".hidden",
		"a b",
		"tab\there",
		"nl\nx",
		"esc\x1b[2J",
		"back\\slash",
		"\x7f",
		"0123456789012345678901234567890123456789012345678901234567890123", /* 64 */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error[0] = '\0';
		CU_ASSERT_EQUAL(vm_config_check_name(bad[i], error, sizeof(error)), -EINVAL);
		/* The message never passes a control byte through. */
		for (const char *p = error; *p; p++)
			CU_ASSERT((unsigned char)*p >= 0x20 && *p != 0x7f);
	}
	const char *good[] = { "vm1", "web-01.example", "kapsel-1234", "a",
			       "012345678901234567890123456789012345678901234567890123456789012" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CU_ASSERT_EQUAL(vm_config_check_name(good[i], error, sizeof(error)), 0);
}

/* A state's records: a definition and one disk record per disk path. */
struct forged_state {
	struct vm_state_stored_record recs[4];
	struct vm_state_records records;
	uint8_t disk_payload[3][sizeof(struct vm_state_disk) + 256];
};

static void forge_state(struct forged_state *f, const char *config_text, const char *const *disks,
			unsigned disk_count, uint32_t disk_flags)
{
	memset(f, 0, sizeof(*f));
	/* Domain XML is format 2's definition, "key=value" text format 1's. */
	bool xml = config_text[0] == '<';
	f->records.begin.format_version = xml ? 2 : 1;
	f->recs[0].type = xml ? VM_STATE_DEFINITION : VM_STATE_CONFIG_TEXT;
	f->recs[0].payload = (uint8_t *)config_text;
	f->recs[0].length_bytes = strlen(config_text);
	for (unsigned i = 0; i < disk_count; i++) {
		struct vm_state_disk d = { .index = i, .flags = disk_flags };
		d.path_bytes = (uint32_t)strlen(disks[i]);
		struct stat st;
		if (stat(disks[i], &st) == 0)
			d.size_bytes = (uint64_t)st.st_size;
		memcpy(f->disk_payload[i], &d, sizeof(d));
		memcpy(f->disk_payload[i] + sizeof(d), disks[i], d.path_bytes);
		f->recs[1 + i].type = VM_STATE_DISK;
		f->recs[1 + i].payload = f->disk_payload[i];
		f->recs[1 + i].length_bytes = sizeof(d) + d.path_bytes;
	}
	f->records.records = f->recs;
	f->records.count = 1 + disk_count;
}

/* A saved definition naming kernel and disks (each a PV raw disk), in the
 * format-2 XML form or the format-1 text form. */
static void definition(char *out, size_t out_len, bool xml, const char *name, const char *kernel,
		       const char *const *disks, unsigned disk_count)
{
	size_t used = 0;
#define PUT(...) used += (size_t)snprintf(out + used, out_len - used, __VA_ARGS__)
	if (!xml) {
		PUT("name=%s\nkernel=%s\n", name, kernel);
		for (unsigned i = 0; i < disk_count; i++)
			PUT("disk=%s\ndisk_options=0 0 0 0 0\n", disks[i]);
		return;
	}
	PUT("<domain type='kvm'><name>%s</name><uuid>00112233-4455-6677-8899-aabbccddeeff</uuid>"
	    "<memory unit='MiB'>64</memory><os><type>hvm</type><kernel>%s</kernel></os><devices>",
	    name, kernel);
	for (unsigned i = 0; i < disk_count; i++)
		PUT("<disk type='file' device='disk'><source file='%s'/>"
		    "<target dev='xvd%c' bus='xen'/></disk>",
		    disks[i], 'a' + i);
	PUT("</devices></domain>");
#undef PUT
	CU_ASSERT_FATAL(used < out_len);
}

static void test_forged_state_name(void)
{
	const char *names[] = { "../../x", "a%2fb", "%2e%2e", "x%0ay", "" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char text[256];
		snprintf(text, sizeof(text), "name=%s\nkernel=/k\n", names[i]);
		struct forged_state f;
		forge_state(&f, text, NULL, 0, 0);
		struct vm_config config;
		vm_config_init(&config);
		CU_ASSERT_EQUAL(snapshot_config_from_records(&f.records, &config, error,
							     sizeof(error)),
				-EPROTO);
		CU_ASSERT_STRING_EQUAL(config.name, "kapsel"); /* untouched */
		vm_config_free(&config);
	}
	/* The XML form: the same one check of names. */
	const char *xml_names[] = { "../../x", "a/b", ".hidden", "x&#10;y", "" };
	for (size_t i = 0; i < sizeof(xml_names) / sizeof(xml_names[0]); i++) {
		char text[1024];
		definition(text, sizeof(text), true, xml_names[i], "/k", NULL, 0);
		struct forged_state f;
		forge_state(&f, text, NULL, 0, 0);
		struct vm_config config;
		vm_config_init(&config);
		CU_ASSERT_EQUAL(snapshot_config_from_records(&f.records, &config, error,
							     sizeof(error)),
				-EPROTO);
		CU_ASSERT_PTR_NOT_NULL(strstr(error, "/domain/name"));
		CU_ASSERT_STRING_EQUAL(config.name, "kapsel"); /* untouched */
		vm_config_free(&config);
	}
}

static void forged_state_paths(bool xml)
{
	char dir[300], inside[600], outside[600], kernel_inside[600], mine[600];
	make_root();
	snprintf(dir, sizeof(dir), "%s/save", root);
	mkdir(dir, 0700);
	snprintf(inside, sizeof(inside), "%s/disk0.img", dir);
	snprintf(kernel_inside, sizeof(kernel_inside), "%s/kernel", dir);
	snprintf(outside, sizeof(outside), "%s/other-tenant.img", root);
	snprintf(mine, sizeof(mine), "%s/mine.img", root);
	write_file(inside, 1, 4096);
	write_file(kernel_inside, 2, 4096);
	write_file(outside, 3, 8192);
	write_file(mine, 4, 8192);

	/* disk= and kernel= pointing outside the state directory: refused,
	 * nothing of the forged paths kept. */
	char text[4096];
	const char *disks[] = { outside };
	definition(text, sizeof(text), xml, "x", "/etc/shadow", disks, 1);
	struct forged_state f;
	forge_state(&f, text, disks, 1, 0);
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f.records, dir, NULL, &config, error,
						 sizeof(error)),
			-EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--kernel"));
	struct snapshot_host_files files = { .kernel_path = kernel_inside };
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f.records, dir, &files, &config, error,
						 sizeof(error)),
			-EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--disk 0="));
	vm_config_free(&config);

	/* A symlink inside the directory pointing out is outside. */
	char link_path[600];
	snprintf(link_path, sizeof(link_path), "%s/link.img", dir);
	unlink(link_path); /* from the other form's run */
	CU_ASSERT_EQUAL_FATAL(symlink(outside, link_path), 0);
	const char *linked[] = { link_path };
	definition(text, sizeof(text), xml, "x", kernel_inside, linked, 1);
	forge_state(&f, text, linked, 1, 0);
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f.records, dir, NULL, &config, error,
						 sizeof(error)),
			-EPERM);
	vm_config_free(&config);

	/* Files inside the directory are used; the operator's mapping wins. */
	const char *two[] = { inside, outside };
	definition(text, sizeof(text), xml, "x", kernel_inside, two, 2);
	forge_state(&f, text, two, 2, 0);
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	memset(&files, 0, sizeof(files));
	char mapping[700];
	snprintf(mapping, sizeof(mapping), "1=%s", mine);
	CU_ASSERT_EQUAL_FATAL(snapshot_parse_disk_mapping(mapping, &files, error, sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f.records, dir, &files, &config, error,
						 sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(config.kernel_path, kernel_inside);
	CU_ASSERT_STRING_EQUAL(config.disks[0].path, inside);
	CU_ASSERT_STRING_EQUAL(config.disks[1].path, mine);
	/* mine.img has outside's size: the size check passes for it. */
	CU_ASSERT_EQUAL(snapshot_check_disks(&f.records, &config, error, sizeof(error)), 0);
	vm_config_free(&config);
	snapshot_host_files_free(&files);

	/* A record saying "overlay" does not make an operator's file one:
	 * the operator must say format=overlay. */
	definition(text, sizeof(text), xml, "x", kernel_inside, disks, 1);
	forge_state(&f, text, disks, 1, VM_STATE_DISK_OVERLAY);
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	snprintf(mapping, sizeof(mapping), "0=%s", mine);
	CU_ASSERT_EQUAL_FATAL(snapshot_parse_disk_mapping(mapping, &files, error, sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f.records, dir, &files, &config, error,
						 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "format=overlay"));
	vm_config_free(&config);
	snapshot_host_files_free(&files);

	CU_ASSERT_EQUAL(snapshot_parse_disk_mapping("9=/x", &files, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(snapshot_parse_disk_mapping("/x", &files, error, sizeof(error)), -EINVAL);
	CU_ASSERT_EQUAL(snapshot_parse_disk_mapping("0=/x,readonly", &files, error, sizeof(error)),
			-EINVAL);
	snapshot_host_files_free(&files);
}

static void test_forged_state_paths(void)
{
	forged_state_paths(true);  /* format 2: domain XML */
	forged_state_paths(false); /* format 1: text */
}

/* Bind disk 0 of a forged format-2 state whose definition names defined
 * and whose frozen disk record names recorded; on success the bound path
 * goes to bound (may be NULL). */
static int bind_frozen(const char *dir, const char *kernel, const char *defined,
		       const char *recorded, char *bound, size_t bound_len)
{
	char text[4096];
	const char *defined_disks[] = { defined }, *recorded_disks[] = { recorded };
	definition(text, sizeof(text), true, "x", kernel, defined_disks, 1);
	struct forged_state f;
	forge_state(&f, text, recorded_disks, 1, VM_STATE_DISK_FROZEN);
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	int err = snapshot_bind_host_files(&f.records, dir, NULL, &config, error, sizeof(error));
	if (!err && bound)
		snprintf(bound, bound_len, "%s", config.disks[0].path);
	vm_config_free(&config);
	return err;
}

/* A frozen disk is found in the state directory by its record (a merged
 * state names its images by plain file names); nothing outside it is. */
static void test_frozen_disk_in_state_dir(void)
{
	char dir[300], kernel[600], image[600], outside[600], link_path[600], bound[PATH_MAX];
	make_root();
	snprintf(dir, sizeof(dir), "%s/merged", root);
	mkdir(dir, 0700);
	snprintf(kernel, sizeof(kernel), "%s/kernel", dir);
	snprintf(image, sizeof(image), "%s/disk0.kovl", dir);
	snprintf(outside, sizeof(outside), "%s/tenant.img", root);
	snprintf(link_path, sizeof(link_path), "%s/disk1.kovl", dir);
	write_file(kernel, 2, 4096);
	write_file(image, 5, 8192);
	write_file(outside, 6, 8192);
	unlink(link_path);
	CU_ASSERT_EQUAL_FATAL(symlink(outside, link_path), 0);

	/* A plain name is that file of the directory, whatever the
	 * definition says (the VM went on on another file). */
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, outside, "disk0.kovl", bound, sizeof(bound)), 0);
	CU_ASSERT_STRING_EQUAL(bound, image);
	/* Neither a symlink in the directory pointing out, nor a relative
	 * path leaving it, nor one the current directory would resolve. */
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, image, "disk1.kovl", NULL, 0), -EPERM);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--disk 0="));
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, image, "../tenant.img", NULL, 0), -EPERM);
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, image, "merged/disk0.kovl", NULL, 0), -EPERM);
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, image, "..", NULL, 0), -EPERM);
	/* A frozen record naming a file outside is refused even when the
	 * definition names one inside. */
	CU_ASSERT_EQUAL(bind_frozen(dir, kernel, image, outside, NULL, 0), -EPERM);

	/* kapsel merge binds frozen disks only: a disk the VM went on
	 * writing is neither opened nor namable. */
	char text[4096];
	const char *disks[] = { outside };
	definition(text, sizeof(text), true, "x", kernel, disks, 1);
	struct forged_state f;
	forge_state(&f, text, disks, 1, 0);
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL_FATAL(snapshot_config_from_records(&f.records, &config, error,
							   sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_disks(&f.records, dir, NULL, true, &config, error,
					    sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(config.disks[0].path, outside); /* kept, not opened */
	struct snapshot_host_files files = { 0 };
	char mapping[700];
	snprintf(mapping, sizeof(mapping), "0=%s", image);
	CU_ASSERT_EQUAL_FATAL(snapshot_parse_disk_mapping(mapping, &files, error, sizeof(error)),
			      0);
	CU_ASSERT_EQUAL(snapshot_bind_disks(&f.records, dir, &files, true, &config, error,
					    sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "leave out --disk 0"));
	snapshot_host_files_free(&files);
	vm_config_free(&config);
}

/* A state with no disk records (for snapshot_bind_host_files). */
static const struct vm_state_records f_dummy_records;

/* Parse a forged format-2 definition into config (initialised here);
 * returns what snapshot_config_from_records returned. */
static int load_forged(const char *xml, struct vm_config *config)
{
	struct forged_state f;
	forge_state(&f, xml, NULL, 0, 0);
	vm_config_init(config);
	error[0] = '\0';
	return snapshot_config_from_records(&f.records, config, error, sizeof(error));
}

#define DOMAIN_HEAD                                                                      \
	"<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>" \
	"<memory unit='MiB'>64</memory><os><kernel>/k</kernel></os>"

static void test_forged_state_hostile_xml(void)
{
	char secret[512];
	make_root();
	snprintf(secret, sizeof(secret), "%s/secret.txt", root);
	FILE *s = fopen(secret, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(s);
	fputs("TOPSECRET", s);
	fclose(s);

	char xxe[2048], xxe_param[2048];
	snprintf(xxe, sizeof(xxe),
		 "<?xml version='1.0'?><!DOCTYPE domain [<!ENTITY x SYSTEM 'file://%s'>]>"
		 "<domain type='kvm'><name>x</name><os><kernel>/k</kernel><cmdline>&x;</cmdline></os>"
		 "<memory unit='MiB'>64</memory></domain>",
		 secret);
	snprintf(xxe_param, sizeof(xxe_param),
		 "<!DOCTYPE d [<!ENTITY %% p SYSTEM 'file://%s'> %%p;]>" DOMAIN_HEAD "</domain>",
		 secret);
	const struct {
		const char *xml, *message;
	} cases[] = {
		{ xxe, "<!DOCTYPE>" },
		{ xxe_param, "<!DOCTYPE>" },
		{ "<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>"
		  "<!ENTITY c '&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;'><!ENTITY d '&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;'>]>" DOMAIN_HEAD
		  "<description>&d;</description></domain>",
		  "<!DOCTYPE>" },
		/* XInclude is never processed: an unknown element. */
		{ DOMAIN_HEAD
		  "<xi:include xmlns:xi='http://www.w3.org/2001/XInclude' href='/etc/passwd'/>"
		  "</domain>",
		  "/domain/include is not supported" },
		{ DOMAIN_HEAD
		  "<metadata><k:domain xmlns:k='https://kapsel.example/xmlns/domain/2'/>"
		  "</metadata></domain>",
		  "another version of Kapsel's" },
		{ DOMAIN_HEAD
		  "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
		  "<k:interface index='3' socket='/a' peer='/b'/></k:domain></metadata></domain>",
		  "leaves a gap" },
		{ DOMAIN_HEAD "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
			      "<k:interface index='0' socket='/a'/></k:domain></metadata></domain>",
		  "needs peer=" },
		{ DOMAIN_HEAD "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
			      "<k:rng iops='5'/></k:domain></metadata></domain>",
		  "has no <rng>" },
		{ DOMAIN_HEAD "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'>"
			      "<k:disk index='0' poll_us='5'/></k:domain></metadata></domain>",
		  "names no disk" },
		{ "<domain type='kvm'><uuid>00112233445566778899aabbccddeeff</uuid>"
		  "<memory unit='MiB'>64</memory><os><kernel>/k</kernel></os></domain>",
		  "/domain/name is missing" },
		{ "<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>"
		  "<memory unit='MiB'>64</memory></domain>",
		  "/domain/os/kernel is missing" },
		{ "<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>"
		  "<os><kernel>/k</kernel></os></domain>",
		  "/domain/memory is missing" },
		{ "<domain type='kvm'><name>x</name><memory unit='MiB'>64</memory>"
		  "<os><kernel>/k</kernel></os></domain>",
		  "/domain/uuid is missing" },
		{ DOMAIN_HEAD "<vcpu>17</vcpu></domain>", "1 to 16 vCPUs" },
		{ DOMAIN_HEAD "<vcpu current='1'>4</vcpu></domain>", "no vCPU hot-plug" },
		{ DOMAIN_HEAD, "not well-formed" },
		{ "<nodomain/>", "expected <domain>" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vm_config config;
		CU_ASSERT_EQUAL(load_forged(cases[i].xml, &config), -EPROTO);
		if (!strstr(error, cases[i].message))
			fprintf(stderr, "case %zu: '%s' lacks '%s'\n", i, error, cases[i].message);
		CU_ASSERT_PTR_NOT_NULL(strstr(error, cases[i].message));
		CU_ASSERT_PTR_NULL(strstr(error, "TOPSECRET"));
		CU_ASSERT_STRING_EQUAL(config.name, "kapsel"); /* untouched */
		vm_config_free(&config);
	}

	/* The XXE in UTF-16, where a byte search for "<!DOCTYPE" finds
	 * nothing: refused after parsing, the secret never read into it. */
	size_t xxe_len = strlen(xxe);
	char *wide = calloc(2, xxe_len + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(wide);
	wide[0] = (char)0xff;
	wide[1] = (char)0xfe;			     /* little-endian BOM */
	const char *body = strstr(xxe, "<!DOCTYPE"); /* no declaration saying UTF-8 */
	for (size_t i = 0; body[i]; i++)
		wide[2 + 2 * i] = body[i];
	struct forged_state f;
	forge_state(&f, "<", NULL, 0, 0);
	f.recs[0].payload = (uint8_t *)wide;
	f.recs[0].length_bytes = 2 + 2 * strlen(body);
	struct vm_config config;
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&f.records, &config, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "<!DOCTYPE>"));
	CU_ASSERT_PTR_NULL(config.cmdline);
	vm_config_free(&config);
	free(wide);

	/* Over the size cap: refused before parsing. */
	size_t huge_len = VM_CONFIG_XML_MAX_BYTES + 64;
	char *huge = malloc(huge_len + 1);
	CU_ASSERT_PTR_NOT_NULL_FATAL(huge);
	size_t head = (size_t)snprintf(huge, huge_len + 1, DOMAIN_HEAD "<description>");
	memset(huge + head, 'a', huge_len - head);
	huge[huge_len] = '\0';
	CU_ASSERT_EQUAL(load_forged(huge, &config), -EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "more than a definition may be"));
	vm_config_free(&config);
	free(huge);

	/* Two definitions (XML and text): which one would the loader trust? */
	struct vm_state_stored_record two[2] = {
		{ .type = VM_STATE_DEFINITION,
		  .payload = (uint8_t *)DOMAIN_HEAD "</domain>",
		  .length_bytes = strlen(DOMAIN_HEAD "</domain>") },
		{ .type = VM_STATE_CONFIG_TEXT,
		  .payload = (uint8_t *)"name=y\nkernel=/k\n",
		  .length_bytes = strlen("name=y\nkernel=/k\n") },
	};
	struct vm_state_records records = { .records = two, .count = 2 };
	records.begin.format_version = 1;
	vm_config_init(&config);
	CU_ASSERT_EQUAL(snapshot_config_from_records(&records, &config, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "more than one VM definition"));
	vm_config_free(&config);
}

/* A saved definition's vCPU count, in either format: 1 to 16, the one
 * check; anything else refused with the range, hostile bytes not shown. */
static void test_forged_state_vcpus(void)
{
	const struct {
		const char *definition;
		int err;
		unsigned vcpus;
		const char *message;
	} cases[] = {
		{ DOMAIN_HEAD "<vcpu placement='static'>4</vcpu></domain>", 0, 4, NULL },
		{ DOMAIN_HEAD "<vcpu>16</vcpu></domain>", 0, 16, NULL },
		{ DOMAIN_HEAD "<vcpu>0</vcpu></domain>", -EPROTO, 0,
		  "/domain/vcpu is '0'; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "name=x\nkernel=/k\nvcpus=1\n", 0, 1, NULL },
		{ "name=x\nkernel=/k\nvcpus=16\n", 0, 16, NULL },
		{ "name=x\nkernel=/k\nvcpus=17\n", -EPROTO, 0,
		  "the saved VM definition has vcpus=17; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "name=x\nkernel=/k\nvcpus=0\n", -EPROTO, 0,
		  "the saved VM definition has vcpus=0; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "name=x\nkernel=/k\nvcpus=4294967297\n", -EPROTO, 0,
		  "the saved VM definition has vcpus=4294967297; Kapsel runs 1 to 16 vCPUs per VM" },
		/* An escape sequence for the terminal: refused, never echoed. */
		{ "name=x\nkernel=/k\nvcpus=2%1b[2J\n", -EPROTO, 0,
		  "the saved VM definition's vcpus is not a whole number; Kapsel runs 1 to 16 vCPUs per VM" },
		{ "name=x\nkernel=/k\nvcpus=\n", -EPROTO, 0,
		  "the saved VM definition's vcpus is not a whole number; Kapsel runs 1 to 16 vCPUs per VM" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct forged_state f;
		forge_state(&f, cases[i].definition, NULL, 0, 0);
		struct vm_config config;
		vm_config_init(&config);
		error[0] = '\0';
		int err = snapshot_config_from_records(&f.records, &config, error, sizeof(error));
		CU_ASSERT_EQUAL(err, cases[i].err);
		if (!err) {
			CU_ASSERT_EQUAL(config.vcpus, cases[i].vcpus);
		} else if (!strstr(error, cases[i].message)) {
			fprintf(stderr, "\ncase %zu: got '%s'\n      want '%s'\n", i, error,
				cases[i].message);
			CU_FAIL("error message");
		}
		CU_ASSERT_PTR_NULL(strchr(error, 0x1b));
		vm_config_free(&config);
	}
}

/* What a well-formed state definition may name but never gets: a console
 * file to write, network endpoints. */
static void test_forged_state_outputs_and_nets(void)
{
	char dir[300], kernel_inside[600];
	make_root();
	snprintf(dir, sizeof(dir), "%s/save-nets", root);
	mkdir(dir, 0700);
	snprintf(kernel_inside, sizeof(kernel_inside), "%s/kernel", dir);
	write_file(kernel_inside, 2, 4096);

	char xml[2048];
	snprintf(xml, sizeof(xml),
		 "<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>"
		 "<memory unit='MiB'>64</memory><os><kernel>%s</kernel></os><devices>"
		 "<serial type='file'><source path='/etc/cron.d/evil'/></serial></devices></domain>",
		 kernel_inside);
	struct vm_config config;
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_PTR_NULL(config.console_output_path); /* dropped */
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, NULL, &config, error,
						 sizeof(error)),
			0);
	vm_config_free(&config);

	/* A tap or socket interface in a saved definition: a restore refuses
	 * it, naming why, and uses nothing of it. */
	const char *nets[] = {
		"<devices><interface type='ethernet'><target dev='tap-victim'/></interface></devices>",
		"<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'><k:interface index='0' "
		"socket='/run/victim.sock' peer='/run/peer.sock'/></k:domain></metadata>",
	};
	for (size_t i = 0; i < sizeof(nets) / sizeof(nets[0]); i++) {
		snprintf(xml, sizeof(xml),
			 "<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>"
			 "<memory unit='MiB'>64</memory><os><kernel>%s</kernel></os>%s</domain>",
			 kernel_inside, nets[i]);
		CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
		CU_ASSERT_EQUAL(config.net_count, 1);
		CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, NULL, &config,
							 error, sizeof(error)),
				-EPERM);
		CU_ASSERT_PTR_NOT_NULL(strstr(error, "network interface"));
		vm_config_free(&config);
	}
}

static void test_incoming_uses_local_definition(void)
{
	struct vm_config incoming, local;
	vm_config_init(&incoming);
	vm_config_init(&local);
	incoming.kernel_path = strdup("/etc/shadow");
	incoming.disk_count = 1;
	incoming.disks[0].path = strdup("/var/lib/other-tenant.img");
	/* No definition on the destination: nothing from the stream is opened. */
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(NULL, &incoming, error, sizeof(error)),
			-EPERM);
	local.kernel_path = strdup("/srv/k.elf");
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO); /* 1 disk vs 0 */
	local.disk_count = 1;
	local.disks[0].path = strdup("/srv/mine.img");
	local.disks[0].bus = VM_DISK_BUS_ATA;
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO); /* other bus */
	local.disks[0].bus = VM_DISK_BUS_PV;
	/* Another vCPU count: the destination says how many it runs. */
	incoming.vcpus = 3;
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_STRING_EQUAL(
		error,
		"the incoming VM has 3 vCPU(s), this definition 1; start the destination with --vcpus 3 (or <vcpu>3</vcpu>)");
	local.vcpus = 3;
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL(incoming.vcpus, 3);
	CU_ASSERT_STRING_EQUAL(incoming.kernel_path, "/srv/k.elf");
	CU_ASSERT_STRING_EQUAL(incoming.disks[0].path, "/srv/mine.img");

	/* Network endpoints: the destination's own, never the stream's. */
	incoming.net_count = 1;
	incoming.nets[0] = (struct vm_net_config){ .backend = VM_NET_BACKEND_SOCKET,
						   .path = strdup("/run/victim.sock"),
						   .peer = strdup("/run/victim-peer.sock") };
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO); /* 1 interface vs 0 */
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "network interface"));
	local.net_count = 1;
	local.nets[0] = (struct vm_net_config){ .backend = VM_NET_BACKEND_TAP,
						.model = VM_NET_MODEL_NE2000,
						.path = strdup("mytap0") };
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO); /* other model */
	local.nets[0].model = VM_NET_MODEL_PV;
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL(incoming.nets[0].backend, VM_NET_BACKEND_TAP);
	CU_ASSERT_STRING_EQUAL(incoming.nets[0].path, "mytap0");
	CU_ASSERT_PTR_NULL(incoming.nets[0].peer);
	/* The migrated VM keeps the MAC its guest and peers know (derived from
	 * its uuid here), and a destination naming another one is refused. */
	uint8_t mac[6];
	vm_config_net_mac(&incoming, 0, mac);
	CU_ASSERT_TRUE(incoming.nets[0].has_mac);
	local.nets[0].has_mac = true;
	memcpy(local.nets[0].mac, "\x02\x01\x02\x03\x04\x05", 6);
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "mac= differs from the incoming VM's"));
	memcpy(local.nets[0].mac, mac, 6);
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			0);
	vm_config_free(&incoming);
	vm_config_free(&local);
}

/* Restore --net N=SPEC: the operator's link, the saved model and MAC; a
 * clone's own MAC. */
static void test_restore_net_binding(void)
{
	char dir[300], kernel_inside[600], xml[2048];
	make_root();
	snprintf(dir, sizeof(dir), "%s/save-net-bind", root);
	mkdir(dir, 0700);
	snprintf(kernel_inside, sizeof(kernel_inside), "%s/kernel", dir);
	write_file(kernel_inside, 2, 4096);
	snprintf(xml, sizeof(xml),
		 "<domain type='kvm'><name>x</name><uuid>00112233445566778899aabbccddeeff</uuid>"
		 "<memory unit='MiB'>64</memory><os><kernel>%s</kernel></os>"
		 "<metadata><k:domain xmlns:k='" VM_CONFIG_XML_NAMESPACE "'><k:interface index='0' "
		 "socket='/run/victim.sock' peer='/run/peer.sock' model='ne2000'/></k:domain></metadata>"
		 "</domain>",
		 kernel_inside);
	struct snapshot_host_files files = { 0 };
	struct vm_config config;
	uint8_t saved_mac[6], mac[6];

	/* Out of range, malformed, or an interface the saved VM lacks. */
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping("9=socket=/a,peer=/b", &files, error,
						   sizeof(error)),
			-EINVAL);
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping("0=socket=/a", &files, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "peer=PATH"));
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping("1=tap=t1,model=ne2000", &files, error,
						   sizeof(error)),
			0);
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			-EINVAL); /* the saved VM has no interface 1 */
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "the saved VM has 1 network interface"));
	vm_config_free(&config);
	snapshot_host_files_free(&files);
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			-EPERM); /* interface 0 not named */
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "--net 0=socket=PATH,peer=PATH"));
	vm_config_free(&config);

	/* Another model than the saved one. */
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping("0=socket=/srv/a,peer=/srv/b", &files, error,
						   sizeof(error)),
			0);
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "add model=ne2000"));
	vm_config_free(&config);
	snapshot_host_files_free(&files);

	/* Another MAC on a restore (not a clone). */
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping(
				"0=socket=/srv/a,peer=/srv/b,model=ne2000,mac=02:00:00:00:00:09",
				&files, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			-EPROTO);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "mac= differs"));
	vm_config_free(&config);

	/* The same spec for a clone: its own MAC. */
	files.new_identity = true;
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			0);
	vm_config_net_mac(&config, 0, mac);
	CU_ASSERT_EQUAL(memcmp(mac, "\x02\x00\x00\x00\x00\x09", 6), 0);
	vm_config_free(&config);
	snapshot_host_files_free(&files);

	/* A restore: the operator's link, the saved model and MAC. */
	CU_ASSERT_EQUAL(snapshot_parse_net_mapping("0=socket=/srv/a,peer=/srv/b,model=ne2000",
						   &files, error, sizeof(error)),
			0);
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	vm_config_net_mac(&config, 0, saved_mac);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(config.nets[0].path, "/srv/a");
	CU_ASSERT_STRING_EQUAL(config.nets[0].peer, "/srv/b");
	CU_ASSERT_EQUAL(config.nets[0].model, VM_NET_MODEL_NE2000);
	vm_config_net_mac(&config, 0, mac);
	CU_ASSERT_EQUAL(memcmp(mac, saved_mac, 6), 0);
	/* A clone without mac=: derived from its new uuid, so it differs. */
	vm_config_free(&config);
	files.new_identity = true;
	CU_ASSERT_EQUAL_FATAL(load_forged(xml, &config), 0);
	CU_ASSERT_EQUAL(snapshot_bind_host_files(&f_dummy_records, dir, &files, &config, error,
						 sizeof(error)),
			0);
	config.uuid[0] ^= 0x55; /* what the clone's new uuid does */
	vm_config_net_mac(&config, 0, mac);
	CU_ASSERT_NOT_EQUAL(memcmp(mac, saved_mac, 6), 0);
	vm_config_free(&config);
	snapshot_host_files_free(&files);
}

/* A stream of count optional (or mandatory) records of bytes each. */
static int read_big_stream(unsigned count, uint64_t bytes, uint32_t flags)
{
	struct vm_state_writer w;
	vm_state_writer_init_buffer(&w);
	vm_state_put_begin(&w, VM_STATE_KIND_STATE);
	uint8_t *payload = calloc(1, (size_t)bytes);
	CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
	for (unsigned i = 0; i < count; i++)
		vm_state_put(&w, VM_STATE_NOTE, flags, payload, bytes);
	vm_state_put_end(&w);
	free(payload);
	CU_ASSERT_EQUAL_FATAL(w.error, 0);
	struct vm_state_reader r;
	struct vm_state_records records;
	vm_state_reader_init_buffer(&r, w.buffer, w.buffer_bytes, "state.bin", VM_STATE_KIND_STATE,
				    error, sizeof(error));
	error[0] = '\0';
	int err = vm_state_read_all(&r, &records);
	vm_state_reader_free(&r);
	if (err == 0)
		vm_state_records_free(&records);
	vm_state_writer_free(&w);
	return err;
}

/* kapsel clone --net N=SPEC: {i} is each clone's number; several clones
 * need their own endpoints and MACs. */
static void test_clone_net_mapping(void)
{
	struct snapshot_host_files files;
	char error[512];
	memset(&files, 0, sizeof(files));

	/* Every {i} becomes the clone's number; the peer may be shared. */
	CU_ASSERT_EQUAL(
		snapshot_parse_clone_net_mapping("1=socket=/run/c{i}/n{i}.sock,peer=/run/sw.sock",
						 12, 20, &files, error, sizeof(error)),
		0);
	CU_ASSERT_TRUE(files.net_given[1]);
	CU_ASSERT_FALSE(files.net_given[0]);
	CU_ASSERT_STRING_EQUAL(files.nets[1].path, "/run/c12/n12.sock");
	CU_ASSERT_STRING_EQUAL(files.nets[1].peer, "/run/sw.sock");
	snapshot_host_files_free(&files);

	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=tap=kc{i},model=ne2000", 3, 4, &files,
							 error, sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(files.nets[0].path, "kc3");
	CU_ASSERT_EQUAL(files.nets[0].model, VM_NET_MODEL_NE2000);
	snapshot_host_files_free(&files);

	/* One clone: no placeholder needed, a mac= allowed. */
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=socket=/a,peer=/b,mac=02:00:00:00:00:07",
							 1, 1, &files, error, sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(files.nets[0].path, "/a");
	snapshot_host_files_free(&files);

	/* Several clones on one socket, one tap, or one MAC: refused, naming the fix. */
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=socket=/a,peer=/b{i}", 1, 2, &files,
							 error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "would all use socket '/a'; put {i}"));
	snapshot_host_files_free(&files);
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=tap=kc", 2, 3, &files, error,
							 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "tap=kc{i}"));
	snapshot_host_files_free(&files);
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=socket=/a{i},peer=/b,mac=02:00:00:00:00:07",
							 1, 2, &files, error, sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "leave it out"));
	snapshot_host_files_free(&files);

	/* What the spec itself gets wrong is the run --net parser's message. */
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("0=socket=/a{i}", 1, 2, &files, error,
							 sizeof(error)),
			-EINVAL);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "peer=PATH"));
	CU_ASSERT_EQUAL(snapshot_parse_clone_net_mapping("x=socket=/a{i},peer=/b", 1, 2, &files,
							 error, sizeof(error)),
			-EINVAL);
	snapshot_host_files_free(&files);
}

static void test_record_caps(void)
{
	/* Small optional records are kept as before. */
	CU_ASSERT_EQUAL(read_big_stream(4, 1024, 0), 0);
	/* One optional record over 1 MiB: refused with a clear message. */
	CU_ASSERT_EQUAL(read_big_stream(1, VM_STATE_MAX_OPTIONAL_RECORD_BYTES + 1, 0), -EFBIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "optional record"));
	/* Records under each cap that add up past the total (the 12 x 60 MiB
	 * attack, scaled down): refused. */
	CU_ASSERT_EQUAL(read_big_stream(20, VM_STATE_MAX_KEPT_BYTES / 16,
					VM_STATE_RECORD_MANDATORY),
			-EFBIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(error, "exceed"));
	/* Too many tiny records. */
	CU_ASSERT_EQUAL(read_big_stream(VM_STATE_MAX_KEPT_RECORDS + 1, 1, 0), -EFBIG);
}

static void cleanup(void)
{
	if (root[0]) {
		char command[600];
		snprintf(command, sizeof(command), "rm -rf '%s'", root);
		CU_ASSERT_EQUAL(system(command), 0);
	}
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "planted overlay header in a raw image is served raw",
		  test_planted_header_in_raw_image },
		{ "overlay format only when configured", test_overlay_format_only_when_configured },
		{ "overlay base identity checked, not named", test_overlay_base_identity },
		{ "VM names: one check", test_vm_names },
		{ "forged state: name refused", test_forged_state_name },
		{ "forged state: kernel and disk paths not used", test_forged_state_paths },
		{ "frozen disks: a plain name is a file in the state directory",
		  test_frozen_disk_in_state_dir },
		{ "forged state: hostile XML definitions refused", test_forged_state_hostile_xml },
		{ "forged state: vCPU counts 1 to 16", test_forged_state_vcpus },
		{ "forged state: console file and network endpoints not used",
		  test_forged_state_outputs_and_nets },
		{ "incoming migration uses the local definition",
		  test_incoming_uses_local_definition },
		{ "restore --net: the operator's link, the saved model and MAC",
		  test_restore_net_binding },
		{ "clone --net: {i} is the clone's number, endpoints differ",
		  test_clone_net_mapping },
		{ "record caps", test_record_caps },
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("state_trust", tests);
}
