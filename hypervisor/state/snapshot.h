/* Save a VM to a state directory and bring it back: memory, vCPU, event channels, devices, disk references. */
#ifndef KAPSEL_SNAPSHOT_H
#define KAPSEL_SNAPSHOT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "state/vm_state.h"

struct kapsel_vm;

struct snapshot_save_stats {
	uint64_t memory_bytes;	    /* guest RAM */
	uint64_t memory_data_bytes; /* of it written (not holes) */
	uint64_t state_bytes;	    /* state.bin */
	uint64_t total_ns;	    /* whole save, devices quiesced to commit */
	/* A live save (snapshot_save_live) also fills these. */
	bool live;
	bool left_paused;	       /* options.keep_paused: the caller resumes */
	uint32_t rounds;	       /* pre-copy rounds after the first pass */
	uint64_t final_pages;	       /* written with the vCPU paused */
	uint64_t memory_written_bytes; /* to memory.img, all passes */
	uint64_t pause_start_ns;       /* left_paused: when the vCPU was paused */
	uint64_t vcpu_stopped_ns;      /* pause to resume (not left_paused) */
	bool diff;		       /* a diff state (options.diff) */
	uint32_t depth;		       /* diff: its place in the chain, 1.. */
	uint64_t diff_pages;	       /* diff: pages memory.map lists */
};

/* Pre-copy limits of a live save when the caller gives none: the same as
 * a migration's (migrate.h), and the same ranges are accepted. */
#define SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS 30u
#define SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS 30u

struct snapshot_save_options {
	uint32_t max_rounds;	  /* 0: SNAPSHOT_LIVE_DEFAULT_MAX_ROUNDS */
	uint32_t max_downtime_ms; /* 0: SNAPSHOT_LIVE_DEFAULT_MAX_DOWNTIME_MS */
	/* Leave the vCPU paused at the end (stats->left_paused), so the caller
	 * can stop the VM before it runs again (save --stop); otherwise it
	 * resumes as soon as the state is taken, before the files are synced. */
	bool keep_paused;
	/* Keep KVM dirty logging on afterwards and remember this state (its
	 * per-page CRCs) as the parent of a later diff. */
	bool track;
	/* A dirty-only snapshot (snapshot_chain.h): write only the pages that
	 * differ from the last tracked state of this VM (track or diff),
	 * which must be a directory next to path; record it as the parent.
	 * The new state is then the tracked one. */
	bool diff;
};

/*
 * Save vm into the directory path (created or atomically replaced; see
 * vm_state_dir_commit): quiesces devices, writes memory.img, state.bin,
 * domain.xml and the manifest, then lets devices serve again.  The caller
 * decides whether the VM continues or stops afterwards.
 * Preconditions: the vCPU is paused (vm_pause) or vm_run has returned
 * and vcpu_state_settle was called; the guest has not powered off.
 * Returns 0 or a negative errno with a message in error; on failure the
 * previous save at path (if any) is unchanged.
 */
int snapshot_save(struct kapsel_vm *vm, const char *path, struct snapshot_save_stats *stats,
		  char *error, size_t error_len);

/*
 * A snapshot: like snapshot_save, but first every writable disk is frozen:
 * its current file becomes a read-only base and the VM goes on writing to
 * a new copy-on-write overlay over it ("<image>@<time>.kovl", next to it;
 * disk_overlay.h).  The saved state refers to the frozen files (flag
 * VM_STATE_DISK_FROZEN), so it can be restored any number of times, each
 * restore on an overlay of its own, while the VM runs on.  Same
 * preconditions as snapshot_save.  Returns 0 or -errno with a message.
 */
int snapshot_take(struct kapsel_vm *vm, const char *path, struct snapshot_save_stats *stats,
		  char *error, size_t error_len);

/*
 * A live save (or, with snapshot, a live snapshot) of the running vm into
 * path: memory.img is written while the vCPU runs, by pre-copy rounds
 * with KVM dirty logging (precopy.h: pages pwritten at their offsets, the
 * same convergence rules as a migration), then the vCPU is paused for the
 * last dirty pages, the pages the VMM wrote, the device and vCPU state
 * (and, for a snapshot, the freezing of the disks: the disks are frozen
 * where memory is taken), and resumed before the files are synced.  The
 * directory is committed atomically as by snapshot_save; the manifest's
 * memory CRC32C is of the bytes written (per-page bookkeeping).  The
 * state is the VM as it was when the vCPU was paused, at the end.
 * Preconditions: vm_run runs (the vCPU may also be paused already: then
 * this is an ordinary save with extra steps); called on a thread that is
 * not a vCPU's.  Returns 0 or -errno with a message; on failure the
 * previous save at path is unchanged and the vCPU runs as before (a
 * snapshot whose disks were already frozen goes on on the overlays).
 */
int snapshot_save_live(struct kapsel_vm *vm, const char *path, bool snapshot,
		       const struct snapshot_save_options *options,
		       struct snapshot_save_stats *stats, char *error, size_t error_len);

/*
 * Before creating a VM from a saved state (after snapshot_bind_host_files):
 * give every frozen disk of the state (every writable disk with
 * overlay_all, for clones) a new overlay file next to the file bound to
 * it, named with tag, and point config's disk there (format overlay).
 * Returns 0 or -errno with a message.
 */
int snapshot_prepare_disks(const struct vm_state_records *state, struct vm_config *config,
			   bool overlay_all, const char *tag, char *error, size_t error_len);

/* Host files the operator names for a restore, clone or incoming migration. */
struct snapshot_host_files {
	const char *kernel_path;	       /* --kernel, or NULL */
	char *disk_paths[VM_CONFIG_MAX_DISKS]; /* --disk N=PATH (owned), or NULL */
	enum vm_disk_format disk_formats[VM_CONFIG_MAX_DISKS];
	bool disk_format_given[VM_CONFIG_MAX_DISKS]; /* ",format=" was there */
	/* --net N=SPEC: interface N's link (socket and peer, or tap) and
	 * limits, as kapsel run's --net SPEC (owned when net_given). */
	struct vm_net_config nets[VM_CONFIG_MAX_NETS];
	bool net_given[VM_CONFIG_MAX_NETS];
	/* A clone: its interfaces get MACs of their own (mac= in SPEC, else
	 * derived from the clone's new uuid). */
	bool new_identity;
};

/* Parse "N=PATH[,format=raw|overlay]" into files.  Returns 0 or -EINVAL
 * with a message. */
int snapshot_parse_disk_mapping(const char *text, struct snapshot_host_files *files, char *error,
				size_t error_len);
/* Parse "N=SPEC" (SPEC as kapsel run's --net) into files.  Returns 0 or
 * -EINVAL with a message. */
int snapshot_parse_net_mapping(const char *text, struct snapshot_host_files *files, char *error,
			       size_t error_len);
void snapshot_host_files_free(struct snapshot_host_files *files);

/* What `kapsel clone --net N=SPEC` replaces with each clone's number. */
#define SNAPSHOT_CLONE_NUMBER "{i}"

/*
 * `kapsel clone --net N=SPEC` for clone number clone_number (1 to
 * clone_count): every SNAPSHOT_CLONE_NUMBER in text becomes that number,
 * then as snapshot_parse_net_mapping.  With more than one clone, SPEC
 * must make each clone's own endpoint (socket=, tap=) differ, i.e. hold
 * the placeholder there, and must not give mac= (each clone derives one
 * of its own); a shared peer= is fine.  Returns 0 or -EINVAL with a
 * message naming the fix.
 */
int snapshot_parse_clone_net_mapping(const char *text, unsigned long clone_number,
				     unsigned long clone_count, struct snapshot_host_files *files,
				     char *error, size_t error_len);

/*
 * A saved state is untrusted input: it never chooses which host files are
 * opened.  Replace config's kernel and disk paths (read from state by
 * snapshot_config_from_records) with the files the operator named in files
 * (may be NULL), or, for what was not named, with the recorded file if it
 * lies inside state_dir (may be NULL: nothing is taken from the state;
 * for a disk, snapshot_bind_disks says which recorded file).  A disk's
 * format is the operator's; a recorded file inside state_dir takes the
 * format of its disk record.  Anything else is refused with
 * -EPERM and a message saying which option names it.  Network interfaces
 * take their link (socket and peer, or tap) and limits from the
 * operator's --net N=SPEC, which must name every one and keep its model;
 * the MAC stays the saved one (a mac= in SPEC must agree) unless
 * files->new_identity (a clone: SPEC's mac=, else one derived from the
 * clone's uuid).
 */
int snapshot_bind_host_files(const struct vm_state_records *state, const char *state_dir,
			     const struct snapshot_host_files *files, struct vm_config *config,
			     char *error, size_t error_len);

/*
 * The disks of snapshot_bind_host_files alone (kapsel merge, which needs
 * no kernel or network): each disk of config takes the file the operator
 * named (files->disk_paths, may be NULL) in the operator's format, or, if
 * not named, the file inside state_dir (may be NULL) that its record
 * names (a frozen disk) or its definition names (any other), in the
 * record's format; a recorded plain file name (no '/') is that file of
 * state_dir.  With frozen_only, only frozen disks (VM_STATE_DISK_FROZEN)
 * are bound, the others keep their saved paths and may not be named.
 * Returns 0, or -EPERM (a disk is neither named nor inside state_dir) /
 * -EINVAL / -EPROTO with a message saying which --disk names it.
 */
int snapshot_bind_disks(const struct vm_state_records *state, const char *state_dir,
			const struct snapshot_host_files *files, bool frozen_only,
			struct vm_config *config, char *error, size_t error_len);

/*
 * Everything a VM is besides RAM, as records (shared by save files and the
 * migration stream): VM info, config, vCPU, event channels, devices (each
 * followed by its private records), disks.  Same preconditions as
 * snapshot_save, devices already quiesced.  Returns 0 or -errno.
 */
int snapshot_write_vm_records(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			      size_t error_len);
/* Append the definition record (VM_STATE_DEFINITION, domain XML) of
 * config to out.  Returns 0 or -errno with a message. */
int snapshot_put_definition(const struct vm_config *config, struct vm_state_writer *out,
			    char *error, size_t error_len);

/* The two halves of snapshot_write_vm_records: VM info and definition
 * (what a migration destination needs to create the VM), then the rest. */
int snapshot_write_vm_header(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			     size_t error_len);
int snapshot_write_vm_body(struct kapsel_vm *vm, struct vm_state_writer *out, char *error,
			   size_t error_len);

/*
 * Fill config (initialised by the caller with vm_config_init) from the
 * definition state carries (definition.c): the domain XML record
 * VM_STATE_DEFINITION, parsed by the one domain XML parser; or, in a
 * format-1 state (state->begin.format_version 1), the text record
 * VM_STATE_CONFIG_TEXT.  The definition's host paths are kept only for
 * snapshot_bind_host_files / snapshot_adopt_local_definition to check and
 * replace; a console or statistics file it names is dropped.  Returns 0
 * or -EPROTO with a message (config then unchanged by the XML form).
 */
int snapshot_config_from_records(const struct vm_state_records *state, struct vm_config *config,
				 char *error, size_t error_len);

/*
 * An incoming migration: the destination's own definition local (its
 * command line or XML) decides every host file.  Check that incoming (the
 * definition the stream carried) is compatible with it (same RAM, same
 * vCPU count, same disks on the same buses with the same access, same
 * number and models of network interfaces, a MAC local names is the
 * incoming one), then replace incoming's kernel, disks and interfaces with
 * local's; the interfaces keep the incoming VM's MACs.  Disk sizes are checked later against
 * the stream's disk records (snapshot_check_disks).  Returns 0, or -EPERM
 * (local has no kernel: no definition was given) / -EPROTO with a message.
 */
int snapshot_adopt_local_definition(const struct vm_config *local, struct vm_config *incoming,
				    char *error, size_t error_len);

/* A disk record (VM_STATE_DISK) checked: its header, and its path (NUL
 * terminated, no NUL inside, shorter than PATH_MAX) copied to path.
 * Returns 0 or -EPROTO with a message. */
int snapshot_parse_disk_record(const struct vm_state_stored_record *rec, struct vm_state_disk *disk,
			       char path[PATH_MAX], char *error, size_t error_len);

/*
 * Check that the disks of config (paths already bound: never the paths the
 * records carry) match the state's disk records: one record per disk, in
 * order, same bus and access, and each image there with the size it had
 * (a missing overlay or a replaced image is refused).  Returns 0 or
 * -ENOENT / -EPROTO with a message naming the disk and the fix.
 */
int snapshot_check_disks(const struct vm_state_records *state, const struct vm_config *config,
			 char *error, size_t error_len);

struct snapshot_restore_options {
	/* Map memory.img copy-on-write and check it while the guest runs
	 * (memory_check.h); false: read it into guest RAM, checked, first. */
	bool map_private;
	bool memory_verified; /* memory.img's CRC was already checked */
	bool new_identity;    /* clone: the config's name and uuid are new */
	bool clone;	      /* restore --clone or kapsel clone: cheap copies */
};

/*
 * Put the saved state into vm, which was just created (vm_create) from
 * the state's config and has not run: guest RAM from memory.img (copied,
 * or mapped privately; then its check runs in the background, with the
 * guest's outputs held, until memory_check_finish), devices, event
 * channels and the vCPU; the Kapsel
 * clock continues where it stopped, the generation is bumped in start
 * info so the guest re-derives unique things, and a new identity is
 * written to start info when asked.  On failure vm must be destroyed
 * without running (its state is partly overwritten).  Returns 0 or a
 * negative errno with a message in error.
 */
int snapshot_restore(struct kapsel_vm *vm, const struct vm_state_dir *dir,
		     const struct snapshot_restore_options *options, char *error, size_t error_len);

/*
 * The non-memory part of a restore (also used by live migration): devices,
 * event channels, vCPU, clock, generation bump.  Guest RAM must already
 * hold the saved content.  Returns 0 or a negative errno with a message.
 */
int snapshot_apply_vm_records(struct kapsel_vm *vm, const struct vm_state_records *state,
			      bool new_identity, char *error, size_t error_len);

/* Quiesce / resume every device that has the op (vCPU paused). */
void snapshot_quiesce_devices(struct kapsel_vm *vm);
void snapshot_resume_devices(struct kapsel_vm *vm);

#endif
