/* x86-64 primitives for guests: port I/O, CPUID, TSC and memory barriers. */
#ifndef KAPSEL_GUEST_ARCH_H
#define KAPSEL_GUEST_ARCH_H

/*
 * Several vCPUs: these are single instructions, safe anywhere.
 */

#include <stdint.h>

static inline void kg_outb(uint16_t port, uint8_t value)
{
	__asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline void kg_outw(uint16_t port, uint16_t value)
{
	__asm__ volatile("outw %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline void kg_outl(uint16_t port, uint32_t value)
{
	__asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}
static inline uint8_t kg_inb(uint16_t port)
{
	uint8_t value;
	__asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port) : "memory");
	return value;
}
static inline uint16_t kg_inw(uint16_t port)
{
	uint16_t value;
	__asm__ volatile("inw %1, %0" : "=a"(value) : "Nd"(port) : "memory");
	return value;
}
static inline uint32_t kg_inl(uint16_t port)
{
	uint32_t value;
	__asm__ volatile("inl %1, %0" : "=a"(value) : "Nd"(port) : "memory");
	return value;
}
/* rep insw / rep outsw: one exit for the whole transfer. */
static inline void kg_insw(uint16_t port, void *buffer, uint32_t count)
{
	__asm__ volatile("rep insw" : "+D"(buffer), "+c"(count) : "d"(port) : "memory");
}
static inline void kg_outsw(uint16_t port, const void *buffer, uint32_t count)
{
	__asm__ volatile("rep outsw" : "+S"(buffer), "+c"(count) : "d"(port) : "memory");
}

/* rep insl / rep outsl: 32-bit string I/O.  KVM moves up to 1 KiB of a
 * rep ins per exit but exits once per element of a rep outs, so 32-bit
 * elements halve the exits of an output string. */
static inline void kg_insl(uint16_t port, void *buffer, uint32_t count)
{
	__asm__ volatile("rep insl" : "+D"(buffer), "+c"(count) : "d"(port) : "memory");
}
static inline void kg_outsl(uint16_t port, const void *buffer, uint32_t count)
{
	__asm__ volatile("rep outsl" : "+S"(buffer), "+c"(count) : "d"(port) : "memory");
}

static inline void kg_cpuid(uint32_t leaf, uint32_t *eax, uint32_t *ebx, uint32_t *ecx,
			    uint32_t *edx)
{
	__asm__ volatile("cpuid"
			 : "=a"(*eax), "=b"(*ebx), "=c"(*ecx), "=d"(*edx)
			 : "a"(leaf), "c"(0));
}

static inline uint64_t kg_rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void kg_cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

/* Compiler barrier only: orders the compiler, not the CPU. */
#define kg_barrier() __asm__ volatile("" ::: "memory")
/* x86 keeps stores ordered with stores and loads with loads; only a store
 * followed by a load of another location needs a real fence. */
#define kg_smp_wmb() kg_barrier()
#define kg_smp_rmb() kg_barrier()
#define kg_smp_mb() __asm__ volatile("mfence" ::: "memory")

#endif
