/* Hypercall dispatch: a table indexed by call number, with per-call counters. */
#include "core/hypercall.h"

#include <errno.h>
#include <string.h>

#include "core/log.h"

void hypercall_table_init(struct hypercall_table *table)
{
	memset(table, 0, sizeof(*table));
}

int hypercall_register(struct hypercall_table *table, uint64_t nr, const char *name,
		       hypercall_fn fn)
{
	if (!fn || !name)
		return -EINVAL;
	if (nr >= HYPERCALL_TABLE_SIZE)
		return -ERANGE;
	if (table->entries[nr].fn)
		return -EEXIST;
	table->entries[nr].fn = fn;
	table->entries[nr].name = name;
	table->entries[nr].calls = 0;
	return 0;
}

int hypercall_register_all(struct hypercall_table *table, const struct hypercall_def *calls,
			   size_t count)
{
	for (size_t i = 0; i < count; i++) {
		int err = hypercall_register(table, calls[i].nr, calls[i].name, calls[i].fn);
		if (err) {
			kapsel_error("cannot register hypercall %s: %s", calls[i].name,
				     strerror(-err));
			return err;
		}
	}
	return 0;
}

int64_t hypercall_dispatch(struct hypercall_table *table, struct kapsel_vcpu *vcpu, uint64_t nr,
			   const uint64_t args[HYPERCALL_ARG_COUNT])
{
	if (nr >= HYPERCALL_TABLE_SIZE || !table->entries[nr].fn) {
		/* The guest controls the rate: the VM's limiter bounds the lines. */
		table->unknown_calls++;
		kapsel_guest_warn(table->log_limit,
				  "guest made unknown hypercall %llu; answered -ENOSYS",
				  (unsigned long long)nr);
		return -KAPSEL_ENOSYS;
	}
	table->entries[nr].calls++;
	return table->entries[nr].fn(vcpu, args);
}
