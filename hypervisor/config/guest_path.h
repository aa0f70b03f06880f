/* Where a domain XML's installed guest kernel is found when kapsel runs from its build tree. */
#ifndef KAPSEL_CONFIG_GUEST_PATH_H
#define KAPSEL_CONFIG_GUEST_PATH_H

/*
 * The examples (examples/NAME.xml) name their kernels where `meson install`
 * puts them, because libvirt's schema wants absolute paths.  A kapsel
 * started from its build tree, before anything is installed, finds them
 * in the tree instead:
 *
 * When kernel_path is a file directly in one of guest_dirs (a NULL-ended
 * list: the configured datadir/kapsel/guests, and the default prefix's
 * that the examples name) and does not exist, and exe_path (this
 * program, /proc/self/exe) is BUILD/hypervisor/kapsel in a meson build
 * tree BUILD (it has BUILD/meson-private), returns the first of
 * BUILD/guest-pv/examples/NAME and BUILD/guest-pv/minikernel/NAME that
 * exists (malloc'ed, caller frees).  Otherwise NULL: the path is used as
 * written, and its error, if any, names it.  The build tree is found from
 * where the program is, not compiled in, so an installed kapsel never
 * looks there.  Nothing here reads a guest's or an image's bytes: the XML
 * is the operator's and the build tree is the program's own.
 */
char *guest_path_in_build_tree(const char *kernel_path, const char *const *guest_dirs,
			       const char *exe_path);

#endif
