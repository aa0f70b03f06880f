/* Live migration over TLS with a pre-shared key (or plain TCP when asked): pre-copy of guest RAM with KVM dirty logging, then stop-and-copy of the rest, in the VM-state record stream. */
#ifndef KAPSEL_MIGRATE_H
#define KAPSEL_MIGRATE_H

/*
 * The stream is a VM_STATE_KIND_MIGRATION record stream (vm_state.h):
 *
 *   begin, vm.info, vm.config                  the destination creates the VM
 *   memory.pages / memory.zero  round 0..n     pre-copy while the VM runs
 *   memory.pages / memory.zero  (final)        the vCPU is paused here
 *   vcpu.*, vm.evtchn, device*, disk           as in state.bin
 *   vm.info, memory.done (CRC32C of all RAM), end
 *
 * then a short handshake of fixed-size messages (struct migrate_message):
 *   destination -> PREPARED   everything arrived and checked
 *   source      -> RELEASED   it unlocked its disk images
 *   destination -> RUNNING    it locked the disks, loaded the state, runs
 * The source stops only on RUNNING.  Anything else (a broken or garbled
 * stream, FAILED, a timeout) and the source takes its disks back and goes
 * on as if nothing happened; the destination never runs a VM it did not
 * receive completely.  Disk images are shared (same paths on both sides).
 *
 * Pre-copy (precopy.c, shared with live saves): round 0 sends every
 * non-zero page with dirty logging on;
 * round n sends the pages KVM_GET_DIRTY_LOG reports, skipping those whose
 * CRC32C equals what was sent.  It stops when the remaining dirty data
 * would take less than max_downtime_ms at the measured bandwidth, after
 * max_rounds, or when rounds stop shrinking the dirty set.  The final
 * round compares every page with the CRC of what was sent (this also
 * catches pages the VMM itself wrote, which KVM does not log).
 */

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct kapsel_vm;
struct migrate_security;

/* Pre-copy limits: defaults, and the largest values an operator may ask
 * for (kapsel migrate --max-rounds, --max-downtime; the control verb). */
#define MIGRATE_DEFAULT_MAX_ROUNDS 30u
#define MIGRATE_DEFAULT_MAX_DOWNTIME_MS 30u
#define MIGRATE_MAX_ROUNDS_LIMIT 1000u
#define MIGRATE_MAX_DOWNTIME_MS_LIMIT 60000u

struct migrate_options {
	uint32_t max_rounds;	  /* 0: MIGRATE_DEFAULT_MAX_ROUNDS */
	uint32_t max_downtime_ms; /* 0: MIGRATE_DEFAULT_MAX_DOWNTIME_MS */
	uint32_t timeout_ms;	  /* per network wait, default 30000 */
	/* PSK or INSECURE, chosen by the operator (migrate_transport.h);
	 * NULL or UNSET is refused. */
	const struct migrate_security *security;
};

struct migrate_stats {
	uint32_t rounds;     /* pre-copy rounds after round 0 */
	uint64_t pages_sent; /* all rounds, final included */
	uint64_t zero_pages_sent;
	uint64_t final_pages; /* sent while the vCPU was paused */
	uint64_t bytes_sent;  /* the whole stream */
	uint64_t downtime_ns; /* vCPU paused here until the destination ran */
	uint64_t total_ns;
};

/*
 * Migrate the running vm to uri ("tcp:HOST:PORT").  Call from a thread
 * that is not the vCPU's while vm_run runs.  On success the VM has been
 * stopped (vm_run returns) and stats are filled; on failure (-errno with a
 * message) the VM runs on unharmed (paused if it was paused before).
 */
int migrate_send(struct kapsel_vm *vm, const char *uri, const struct migrate_options *options,
		 struct migrate_stats *stats, char *error, size_t error_len);

/*
 * Destination: listen on uri ("tcp:ADDR:PORT,psk=FILE" or
 * "tcp:ADDR:PORT,insecure", see migrate_spec_parse), take one migration
 * (from a peer that holds the key), and create vm from it, ready for
 * vm_run.  overrides is the destination's own definition: its kernel and
 * disk images are the files opened (the stream's definition is only
 * checked against it for compatibility; see
 * snapshot_adopt_local_definition); name, console and stats settings come
 * from it when set.  config receives
 * the definition (free it with vm_config_free after vm_destroy).  Returns
 * 0 or -errno with a message; nothing runs on failure.
 */
int migrate_receive(const char *uri, const struct vm_config *overrides, struct kapsel_vm *vm,
		    struct vm_config *config, char *error, size_t error_len);

/* Parse "tcp:HOST:PORT" into host and port (host may be "[v6]"). */
int migrate_parse_uri(const char *uri, char *host, size_t host_len, char *port, size_t port_len);

#endif
