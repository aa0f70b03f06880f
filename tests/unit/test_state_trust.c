/* Regression tests for trust boundaries: image format never probed, overlay base identity, VM names, forged state records, record caps. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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
	f->recs[0].type = VM_STATE_CONFIG;
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
}

static void test_forged_state_paths(void)
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
	char text[2048];
	snprintf(text, sizeof(text),
		 "name=x\nkernel=/etc/shadow\ndisk=%s\ndisk_options=0 0 0 0 0\n", outside);
	const char *disks[] = { outside };
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
	CU_ASSERT_EQUAL_FATAL(symlink(outside, link_path), 0);
	snprintf(text, sizeof(text), "name=x\nkernel=%s\ndisk=%s\ndisk_options=0 0 0 0 0\n",
		 kernel_inside, link_path);
	const char *linked[] = { link_path };
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
	snprintf(text, sizeof(text),
		 "name=x\nkernel=%s\ndisk=%s\ndisk_options=0 0 0 0 0\ndisk=%s\ndisk_options=0 0 0 0 0\n",
		 kernel_inside, inside, outside);
	const char *two[] = { inside, outside };
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
	snprintf(text, sizeof(text), "name=x\nkernel=%s\ndisk=%s\ndisk_options=0 0 0 0 0\n",
		 kernel_inside, outside);
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
	CU_ASSERT_EQUAL(snapshot_adopt_local_definition(&local, &incoming, error, sizeof(error)),
			0);
	CU_ASSERT_STRING_EQUAL(incoming.kernel_path, "/srv/k.elf");
	CU_ASSERT_STRING_EQUAL(incoming.disks[0].path, "/srv/mine.img");
	vm_config_free(&incoming);
	vm_config_free(&local);
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
		{ "incoming migration uses the local definition",
		  test_incoming_uses_local_definition },
		{ "record caps", test_record_caps },
		{ "cleanup", cleanup },
	};
	return UNIT_RUN("state_trust", tests);
}
