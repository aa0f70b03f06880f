/* Unit tests: a domain XML's installed guest kernel found in the build tree kapsel runs from (guest_path_in_build_tree). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/guest_path.h"
#include "cunit_main.h"

static char root[] = "/tmp/kapsel-guest-path.XXXXXX";

static void make_file(const char *relative)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, relative);
	FILE *f = fopen(path, "w");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fclose(f);
}

static void make_dir(const char *relative)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, relative);
	CU_ASSERT_EQUAL_FATAL(mkdir(path, 0755), 0);
}

/* A fake build tree: build/{meson-private,hypervisor/kapsel,guest-pv/...},
 * an installed-guest folder "installed" and a kapsel outside any tree. */
static void make_tree(void)
{
	make_dir("build");
	make_dir("build/meson-private");
	make_dir("build/hypervisor");
	make_file("build/hypervisor/kapsel");
	make_dir("build/guest-pv");
	make_dir("build/guest-pv/examples");
	make_dir("build/guest-pv/minikernel");
	make_file("build/guest-pv/examples/hello.elf");
	make_file("build/guest-pv/examples/idle.elf"); /* also installed */
	make_file("build/guest-pv/minikernel/minikernel.elf");
	make_dir("installed");
	make_file("installed/idle.elf");
	make_dir("bin");
	make_file("bin/kapsel");
	make_dir("notree");
	make_dir("notree/hypervisor");
	make_file("notree/hypervisor/kapsel");
	make_dir("notree/guest-pv");
	make_dir("notree/guest-pv/examples");
	make_file("notree/guest-pv/examples/hello.elf");
}

static char *lookup(const char *kernel, const char *exe)
{
	char kernel_path[512], exe_path[512], installed[512];
	snprintf(kernel_path, sizeof(kernel_path), "%s/%s", root, kernel);
	snprintf(exe_path, sizeof(exe_path), "%s/%s", root, exe);
	snprintf(installed, sizeof(installed), "%s/installed/", root);
	const char *const dirs[] = { "/nonexistent/share/kapsel/guests", installed, NULL };
	return guest_path_in_build_tree(kernel_path, dirs, exe_path);
}

static void expect_found(const char *kernel, const char *exe, const char *want)
{
	char *got = lookup(kernel, exe);
	char expected[512];
	snprintf(expected, sizeof(expected), "%s/%s", root, want);
	CU_ASSERT_PTR_NOT_NULL(got);
	if (got && strcmp(got, expected) != 0) {
		fprintf(stderr, "\n%s: got %s, want %s\n", kernel, got, expected);
		CU_FAIL("path");
	}
	free(got);
}

static void expect_none(const char *kernel, const char *exe)
{
	char *got = lookup(kernel, exe);
	if (got) {
		fprintf(stderr, "\n%s from %s: got %s, want none\n", kernel, exe, got);
		CU_FAIL("found a guest where none should be");
	}
	free(got);
}

static void test_build_tree_guest(void)
{
	make_tree();
	/* Missing in the installed folder: the tree's example, then its minikernel. */
	expect_found("installed/hello.elf", "build/hypervisor/kapsel",
		     "build/guest-pv/examples/hello.elf");
	expect_found("installed/minikernel.elf", "build/hypervisor/kapsel",
		     "build/guest-pv/minikernel/minikernel.elf");
	/* Installed: the installed file is used as written. */
	expect_none("installed/idle.elf", "build/hypervisor/kapsel");
	/* Not a guest the tree builds. */
	expect_none("installed/other.elf", "build/hypervisor/kapsel");
	/* Not the installed folder (a subfolder, or elsewhere): as written. */
	expect_none("installed/sub/hello.elf", "build/hypervisor/kapsel");
	expect_none("elsewhere/hello.elf", "build/hypervisor/kapsel");
	/* An installed kapsel, or one outside a meson tree, never looks. */
	expect_none("installed/hello.elf", "bin/kapsel");
	expect_none("installed/hello.elf", "notree/hypervisor/kapsel");
	CU_ASSERT_PTR_NULL(guest_path_in_build_tree(NULL, NULL, NULL));
}

int main(void)
{
	if (!mkdtemp(root))
		return 1;
	static const struct unit_test tests[] = {
		{ "the build tree's guest for an uninstalled one", test_build_tree_guest },
	};
	int status = UNIT_RUN("guest_path", tests);
	char command[600];
	snprintf(command, sizeof(command), "rm -rf '%s'", root);
	if (system(command) != 0)
		status = 1;
	return status;
}
