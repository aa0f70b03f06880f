# Sourced by demo.sh and test.sh from the repository root: $build (KAPSEL_BUILD_DIR, default build) configured and built.
build=${KAPSEL_BUILD_DIR:-build}

if [ -f "$build/build.ninja" ]; then
	meson setup --reconfigure "$build" >/dev/null
else
	meson setup "$build"
fi
ninja -C "$build"
