/* Where a domain XML's installed guest kernel is found when kapsel runs from its build tree. */
#define _GNU_SOURCE
#include "config/guest_path.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* True when path is dir/NAME with NAME a plain file name; *name is NAME. */
static bool directly_in(const char *path, const char *dir, const char **name)
{
	size_t dir_len = strlen(dir);
	while (dir_len > 1 && dir[dir_len - 1] == '/')
		dir_len--;
	if (strncmp(path, dir, dir_len) != 0 || path[dir_len] != '/')
		return false;
	const char *rest = path + dir_len + 1;
	if (!*rest || strchr(rest, '/') || strcmp(rest, ".") == 0 || strcmp(rest, "..") == 0)
		return false;
	*name = rest;
	return true;
}

/* The meson build tree exe_path was built in (BUILD of
 * BUILD/hypervisor/kapsel, with BUILD/meson-private), or NULL. */
static char *build_root_of(const char *exe_path)
{
	char *exe = realpath(exe_path, NULL);
	char *slash = exe ? strrchr(exe, '/') : NULL;
	if (!slash || strcmp(slash, "/kapsel") != 0) {
		free(exe);
		return NULL;
	}
	*slash = '\0';
	slash = strrchr(exe, '/');
	if (!slash || slash == exe || strcmp(slash, "/hypervisor") != 0) {
		free(exe);
		return NULL;
	}
	*slash = '\0';
	char *marker = NULL;
	bool is_tree = asprintf(&marker, "%s/meson-private", exe) >= 0 && access(marker, F_OK) == 0;
	free(marker);
	if (!is_tree) {
		free(exe);
		return NULL;
	}
	return exe;
}

char *guest_path_in_build_tree(const char *kernel_path, const char *const *guest_dirs,
			       const char *exe_path)
{
	if (!kernel_path || !guest_dirs || !exe_path)
		return NULL;
	const char *name = NULL;
	for (const char *const *dir = guest_dirs; *dir && !name; dir++)
		if (!directly_in(kernel_path, *dir, &name))
			name = NULL;
	if (!name || access(kernel_path, F_OK) == 0)
		return NULL;
	char *build_root = build_root_of(exe_path);
	if (!build_root)
		return NULL;
	static const char *const tree_dirs[] = { "guest-pv/examples", "guest-pv/minikernel" };
	char *found = NULL;
	for (size_t i = 0; i < sizeof(tree_dirs) / sizeof(tree_dirs[0]) && !found; i++) {
		if (asprintf(&found, "%s/%s/%s", build_root, tree_dirs[i], name) < 0)
			found = NULL;
		else if (access(found, R_OK) != 0) {
			free(found);
			found = NULL;
		}
	}
	free(build_root);
	return found;
}
