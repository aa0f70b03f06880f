# Sourced by demo.sh and test.sh from the repository root: $build (KAPSEL_BUILD_DIR, default build) configured and built.
build=${KAPSEL_BUILD_DIR:-build}

# build_jobs: how many compilers ninja may run at once here.  ninja's own
# default (CPUs + 2) overloads a small machine that other work shares: use
# the CPUs this process may run on (nproc honours affinity and cgroup
# cpusets), no more than one per 512 MiB of available memory (the largest
# translation units take a few hundred MiB under -O2 -g), at least one.
# KAPSEL_BUILD_JOBS=N overrides.
build_jobs() {
	if [ -n "${KAPSEL_BUILD_JOBS:-}" ]; then
		echo "$KAPSEL_BUILD_JOBS"
		return
	fi
	local cpus memory_kib by_memory
	cpus=$(nproc 2>/dev/null || echo 1)
	memory_kib=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo 2>/dev/null)
	by_memory=$((${memory_kib:-0} / (512 * 1024)))
	[ "$by_memory" -ge 1 ] || by_memory=1
	[ "$cpus" -le "$by_memory" ] || cpus=$by_memory
	echo "$cpus"
}

if [ -f "$build/build.ninja" ]; then
	meson setup --reconfigure "$build" >/dev/null
else
	meson setup "$build"
fi
ninja -C "$build" -j "$(build_jobs)"
