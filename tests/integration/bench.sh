#!/bin/bash
# Integration tests: `kapsel bench` itself on tiny runs (same data on every path, complete JSON, clear option errors); no performance assertions.
. "$(dirname "$0")/lib.sh"
require_kvm
make_temp_dir
out=$TMP/out err=$TMP/err

# bench ARGS...: runs kapsel bench with a timeout (under nested KVM, where
# meson's own timeout is multiplied by 4, four times as long); sets STATUS.
bench() {
	local limit=100
	[ -n "${KAPSEL_NESTED:-}" ] && limit=400
	STATUS=0
	timeout --kill-after=5 "$limit" "$KAPSEL" bench "$@" >"$out" 2>"$err" </dev/null || STATUS=$?
}

show_and_fail() {
	echo "--- stdout:"; head -c 4000 "$out"; echo "--- stderr:"; tail -c 4000 "$err"
	fail "$@"
}

# check_json FILE PATHS...: FILE is one well-formed JSON document with every
# key a reader needs, every row has a result for each of PATHS (status ok),
# fixed-size write rows wrote the same data on all paths, and reads found
# the pattern everywhere.
check_json() {
	python3 - "$@" <<'EOF'
import json, math, sys
path, want_paths = sys.argv[1], sys.argv[2:]
doc = json.load(open(path))
problems = []
def need(obj, keys, where):
    for k in keys:
        if k not in obj:
            problems.append('%s: missing key %r' % (where, k))
need(doc, ['tool', 'version', 'schema', 'machine', 'options', 'metric_units', 'rows', 'goals',
           'fio_available', 'chart', 'total_seconds'], 'top level')
need(doc['options'], ['disk', 'size_bytes', 'runtime_s', 'ops', 'repeat', 'iodepths', 'cache',
                      'paths', 'workloads', 'seed'], 'options')
metrics = ['mb_per_s', 'iops', 'lat_p50_us', 'lat_p99_us', 'lat_p99_9_us', 'exits_per_op',
           'notifications_per_op', 'cpu_us_per_op', 'submit_to_pickup_us',
           'pickup_to_complete_us', 'complete_to_reap_us']
rows = doc['rows']
if not rows:
    problems.append('no rows')
kinds = set()
for row in rows:
    where = '%s qd=%s' % (row.get('workload'), row.get('iodepth'))
    need(row, ['workload', 'kind', 'rw', 'block_bytes', 'iodepth', 'cache', 'paths', 'ratios',
               'checksums', 'fio', 'cpu'], where)
    kinds.add(row['kind'])
    if row['kind'] == 'cpu':
        # check_cpu looks closer (bench-cpu); here only that both paths ran.
        for p in want_paths:
            if p != 'emulated' and row['paths'][p]['status'] != 'ok':
                problems.append('%s %s: status %s (%s)' % (where, p, row['paths'][p]['status'],
                                                           row['paths'][p]['message']))
        continue
    for p in ['native', 'pv', 'emulated', 'qemu-virtio', 'qemu-ide']:
        r = row['paths'].get(p)
        if r is None:
            problems.append('%s: no %s entry' % (where, p))
            continue
        if p.startswith('qemu') and row['kind'] != 'block':
            if r['status'] != 'skipped':
                problems.append('%s %s: status %s on a row QEMU does not run' % (where, p, r['status']))
            continue
        need(r, ['status', 'message', 'runs', 'metrics', 'exits_per_op_by_reason', 'verify',
                 'checksum_crc32', 'run_values'], where + ' ' + p)
        for m in metrics:
            if m not in r['metrics']:
                problems.append('%s %s: metric %s missing' % (where, p, m))
            else:
                need(r['metrics'][m], ['median', 'min', 'max', 'spread', 'n'], where + ' ' + m)
        if p not in want_paths:
            # The QEMU paths run by default where QEMU is installed.
            if r['status'] != 'skipped' and not (p.startswith('qemu') and r['status'] == 'ok'):
                problems.append('%s %s: status %s, expected skipped' % (where, p, r['status']))
            continue
        if r['status'] != 'ok':
            problems.append('%s %s: status %s (%s)' % (where, p, r['status'], r['message']))
            continue
        med = r['metrics']['mb_per_s']['median']
        if not (isinstance(med, (int, float)) and med > 0):
            problems.append('%s %s: no throughput' % (where, p))
        # QEMU's exits come from KVM's debugfs, when it can be read.
        if p != 'native' and not p.startswith('qemu') and row['kind'] == 'block':
            if not r['metrics']['exits_per_op']['median'] or not r['exits_per_op_by_reason']:
                problems.append('%s %s: no exits counted' % (where, p))
        if r['verify']['errors']:
            problems.append('%s %s: %d sectors read back wrong' % (where, p, r['verify']['errors']))
        if row['kind'] == 'block' and row['rw'] in ('read', 'randread', 'randrw') and not r['verify']['sectors']:
            problems.append('%s %s: reads were not verified' % (where, p))
    c = row['checksums']
    if row['kind'] == 'block' and row['rw'] in ('write', 'randwrite', 'randrw') and doc['options']['ops']:
        sums = [row['paths'][p]['checksum_crc32'] for p in want_paths]
        if None in sums or c['before_crc32'] is None:
            problems.append('%s: checksums missing: %s' % (where, sums))
        elif len(set(sums)) != 1 or c['all_paths_match'] is not True:
            problems.append('%s: paths wrote different data: %s' % (where, sums))
        elif sums[0] == c['before_crc32']:
            problems.append('%s: the region did not change' % where)
if 'pv' in want_paths and 'native' in want_paths:
    for row in rows:
        if row['kind'] == 'cpu':
            continue
        if not isinstance(row['ratios']['pv_native'], (int, float)):
            problems.append('%s: no pv/native ratio' % row['workload'])
for g in doc['goals']:
    need(g, ['goal', 'row', 'target', 'measured', 'met'], 'goal')
# The boot row, when it ran: every setup asked for booted and exited.
boot = doc['boot']
if boot['ran']:
    setups = ['kapsel'] + (['qemu-microvm', 'qemu-pc'] if 'qemu-virtio' in want_paths else [])
    for name in setups:
        b = boot[name]
        if not b['ok'] or not (b['median_ms'] > 0) or len(b['runs_ms']) < 3:
            problems.append('boot %s: %s' % (name, b['error'] or b))
    if 'qemu-virtio' in want_paths and not isinstance(boot['ratio_kapsel_qemu_microvm'], float):
        problems.append('boot: no kapsel/qemu-microvm ratio')
if problems:
    print('\n'.join(problems[:30]))
    sys.exit(1)
print('json ok: %d rows, kinds %s' % (len(rows), sorted(kinds)))
EOF
}

# check_cpu OPS FILE...: in each FILE (the JSON of a --cpu run of OPS
# operations per run) every CPU row measured a plausible number on both
# paths: positive times, the exits each PV operation must take (a null
# hypercall is exactly one), deliveries no later than the round trips they
# are part of, no hypercall the measurement itself made counted against a
# row, an exit cost, and no disk image.  (One python3 for all files: under
# nested KVM on TCG, starting it takes half a minute.)
check_cpu() {
	python3 - "$@" <<'EOF'
import json, math, sys
ops = int(sys.argv[1])
problems = []
want = ['null-hypercall', 'trap', 'upcall', 'timer', 'timer-periodic',
        'syscall', 'fork', 'ctxsw', 'page-fault', 'as-switch', 'mmu-batch']
process_rows = want[5:]
# Exits each PV operation must take, by reason: (reason, least, most) per op.
exits = {
    'null-hypercall': [('hc_abi_info', 1, 1)],
    'trap': [('guest_fault', 1, 1), ('hc_iret', 1, 1)],
    'upcall': [('hc_evtchn_send', 1, 1), ('hc_iret', 1, 1)],
    'timer': [('hc_timer_set', 1, 1), ('hc_iret', 1, 1)],
    # About one upcall per expiry: fewer when an expiry comes while the
    # callback runs (it takes both in one upcall), a few more when one
    # comes before the timer is stopped at the end of the window.
    'timer-periodic': [('hc_iret', 0.5, 1.25)],
    # Process rows: every exit of one operation, exactly (the kernel
    # reports the entries outside its operations as untimed).
    'syscall': [('hlt', 1, 1), ('hc_iret', 1, 1)],
    'fork': [('hlt', 2, 2), ('hc_as_create', 1, 1), ('hc_mmu_update', 1, 1),
             ('hc_as_switch', 2, 2), ('hc_as_destroy', 1, 1), ('hc_iret', 2, 2)],
    'ctxsw': [('hlt', 1, 1), ('hc_as_switch', 1, 1), ('hc_iret', 1, 1)],
    'page-fault': [('guest_fault', 1, 1), ('hc_mmu_update', 1, 1), ('hc_iret', 1, 1)],
    'as-switch': [('hc_as_switch', 1, 1)],
    'mmu-batch': [('hc_mmu_update', 1, 1)],
}

def num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

def check_path(name, p, r):
    timer = name.startswith('timer')
    where = '%s %s' % (name, p)
    if r['status'] != 'ok':
        problems.append('%s: status %s (%s)' % (where, r['status'], r['message']))
        return
    m = {k: v['median'] for k, v in r['metrics'].items()}
    for run in r['run_values']:
        if run['ops'] != ops:
            problems.append('%s: a run did %r operations, asked for %d' % (where, run['ops'], ops))
    p50, p99, top = m.get('lat_p50_us'), m.get('lat_p99_us'), m.get('lat_max_us')
    if not all(num(v) for v in (p50, p99, top)):
        problems.append('%s: p50/p99/max %r %r %r' % (where, p50, p99, top))
        return
    # A round trip takes time; a timer may be on time, never early.
    if (p50 < 0 if timer else p50 <= 0) or not p50 <= p99 <= top:
        problems.append('%s: implausible p50 %r p99 %r max %r us' % (where, p50, p99, top))
    if not timer and not (num(m.get('us_per_op')) and m['us_per_op'] > 0):
        problems.append('%s: us_per_op %r' % (where, m.get('us_per_op')))
    if name in ('trap', 'upcall'):
        d = m.get('deliver_p50_us')
        if not (num(d) and 0 < d <= p50 * 1.05):
            problems.append('%s: handler entered %r us after the cause, round trip %r' % (where, d, p50))
    if p == 'native':
        if m.get('exits_per_op') is not None:
            problems.append('%s: native has exits %r' % (where, m['exits_per_op']))
        return
    e = m.get('exits_per_op')
    if not (num(e) and e > 0):
        problems.append('%s: exits/op %r' % (where, e))
        return
    by = r['exits_per_op_by_reason']
    for reason, least, most in exits[name]:
        v = by.get(reason, 0)
        if not least - 0.01 <= v <= most + 0.01:
            problems.append('%s: %s %.3f exits/op, expected %s-%s (all: %s)' % (where, reason, v, least, most, by))
    if 'hc_time_info' in by:
        problems.append("%s: the measurement's own TIME_INFO calls were counted: %s" % (where, by))
    listed = sum(most for _, _, most in exits[name])
    if name in process_rows and abs(e - listed) > 0.01:
        problems.append('%s: %.3f exits/op, expected %s (all: %s)' % (where, e, listed, by))
    if name == 'null-hypercall' and abs(e - 1) > 0.01:
        problems.append('%s: %.3f exits per null hypercall, expected 1' % (where, e))

def check(doc):
    if doc.get('schema') != 2:
        problems.append('schema %r, expected 2' % doc.get('schema'))
    if doc['options'].get('disk') is not None:
        problems.append('a --cpu run made a disk image: %r' % doc['options']['disk'])
    for k in ('cpu_runtime_s', 'cpu_warmup_s', 'timer_delay_us'):
        if not num(doc['options'].get(k)):
            problems.append('options.%s missing' % k)
    cost = doc.get('cpu', {}).get('exit_cost_us')
    if not (num(cost) and cost > 0):
        problems.append('no exit cost: %r' % cost)
    rows = {r['workload']: r for r in doc['rows'] if r['kind'] == 'cpu'}
    if sorted(rows) != sorted(want):
        problems.append('CPU rows %s, expected %s' % (sorted(rows), want))
    for name, row in rows.items():
        c = row.get('cpu') or {}
        for k in ('operation', 'native_operation', 'timer', 'value_metric', 'pv_value', 'native_value'):
            if k not in c:
                problems.append('%s: cpu.%s missing' % (name, k))
        if c.get('timer') != name.startswith('timer'):
            problems.append('%s: cpu.timer is %r' % (name, c.get('timer')))
        if c.get('process') != (name in process_rows) or (c.get('lmbench') is None) == (name in process_rows):
            problems.append('%s: cpu.process %r, cpu.lmbench %r' % (name, c.get('process'), c.get('lmbench')))
        if row['paths']['emulated']['status'] != 'skipped':
            problems.append('%s: emulated status %s, expected skipped' % (name, row['paths']['emulated']['status']))
        ratio = row['ratios'].get('cost_pv_native')
        if not (num(ratio) and ratio > 0):
            problems.append('%s: cost_pv_native %r' % (name, ratio))
        for p in ('native', 'pv'):
            check_path(name, p, row['paths'][p])
    return cost, rows

for path in sys.argv[2:]:
    cost, rows = check(json.load(open(path)))
if problems:
    print('\n'.join(problems[:30]))
    sys.exit(1)
print('cpu rows ok: exit cost %.3g us; pv/native p50 %s' % (cost, ', '.join(
    '%s %.3g/%.3g us' % (n, r['cpu']['pv_value'], r['cpu']['native_value']) for n, r in rows.items())))
EOF
}

case "$1" in
bench-quick)
	# The whole harness on a tiny run, JSON on standard output.
	# With QEMU installed (scripts/install-deps.sh) its two paths and the
	# boot row's QEMU setups run by default and must succeed too.
	# Under scripts/nested-kvm.sh QEMU's firmware and every PIO exit are
	# emulated twice over (minutes per run): there bench-qemu (suite qemu,
	# TCG) covers the QEMU paths and this case leaves them out.
	paths=(native pv emulated)
	only=()
	if [ -n "${KAPSEL_NESTED:-}" ]; then
		only=(--paths native,pv,emulated)
	elif command -v qemu-system-x86_64 >/dev/null; then
		paths+=(qemu-virtio qemu-ide)
	fi
	bench --quick --format json --output-dir "$TMP/results" "${only[@]}"
	[ "$STATUS" -eq 0 ] || show_and_fail "kapsel bench --quick exited with $STATUS"
	check_json "$out" "${paths[@]}" || show_and_fail "JSON on stdout incomplete"
	check_json "$TMP/results/results.json" "${paths[@]}" || fail "results.json incomplete"
	expect_in "$TMP/results/results.txt" "Boot: "
	[ -s "$TMP/results/results.txt" ] || fail "no results.txt"
	expect_in "$TMP/results/results.txt" "pv/native"
	expect_in "$TMP/results/results.txt" "PV cost per request"
	expect_in "$TMP/results/results.txt" "CPU operations:"
	if command -v gnuplot >/dev/null; then
		[ -s "$TMP/results/bench.svg" ] || fail "no chart although gnuplot is installed"
		expect_in "$TMP/results/bench.svg" "<svg"
	fi
	if command -v fio >/dev/null; then
		python3 -c "
import json, sys
doc = json.load(open('$out'))
bad = [r['workload'] for r in doc['rows'] if r['kind'] == 'block' and not r['fio']['ok']]
sys.exit('fio cross-check failed for %s' % bad if bad else 0)" || fail "fio cross-check"
	fi
	# The temporary image is gone.
	img=$(python3 -c "import json; print(json.load(open('$out'))['options']['disk'])")
	[ ! -e "$img" ] || fail "temporary image $img was left behind"
	;;
bench-mq)
	# The multi-queue rows: 1 vCPU on 1 queue, then 2 vCPUs on 2 queues,
	# each with an IOPS figure and the host's load; the run exits 0 only
	# when both were measured.
	bench --workloads mq --paths pv --size 16M --runtime 300ms --warmup 50ms --repeat 1
	[ "$STATUS" -eq 0 ] || show_and_fail "kapsel bench --workloads mq exited with $STATUS"
	expect_in "$out" "multi-queue PV block, randread-4K qd=32"
	grep -Eq '^  1 vCPU, 1 queue +[1-9][0-9]* +1\.00x' "$out" || show_and_fail "no 1-queue row"
	grep -Eq '^  2 vCPUs, 2 queues +[1-9][0-9]* +[0-9.]+x' "$out" || show_and_fail "no 2-queue row"
	;;
bench-net)
	# The network rows on every path: native (two host threads), pv (two VMs
	# with PV NICs on the socket link) and emulated (NE2000): each row has a
	# result on each path, every frame was checked and none failed, and the
	# JSON carries the per-frame figures.  Figures are not judged.
	bench --quick --workloads frame-rr-64,frame-stream-1514 --no-chart --format json \
		--output-dir "$TMP/results"
	[ "$STATUS" -eq 0 ] || show_and_fail "kapsel bench --workloads frame-rr-64,frame-stream-1514 exited with $STATUS"
	python3 - "$out" <<'EOF' || show_and_fail "net rows incomplete"
import json, math, sys
doc = json.load(open(sys.argv[1]))
problems = []
rows = {r['workload']: r for r in doc['rows']}
if sorted(rows) != ['frame-rr-64', 'frame-stream-1514']:
    problems.append('rows %s' % sorted(rows))
for name, row in rows.items():
    if row['kind'] != 'net' or not row.get('net'):
        problems.append('%s: kind %s net %s' % (name, row['kind'], row.get('net')))
        continue
    net = row['net']
    for k in ['pattern', 'frame_bytes', 'outstanding', 'ops_are', 'link']:
        if k not in net:
            problems.append('%s: net.%s missing' % (name, k))
    if net.get('frame_bytes') != int(name.rsplit('-', 1)[1]):
        problems.append('%s: frame_bytes %s' % (name, net.get('frame_bytes')))
    stream = net.get('pattern') == 'stream'
    for k in ['pv_native', 'pv_emulated']:
        v = row['ratios'].get(k)
        if not isinstance(v, (int, float)) or not v > 0:
            problems.append('%s: ratio %s = %r' % (name, k, v))
    for p in ['native', 'pv', 'emulated']:
        r = row['paths'][p]
        where = '%s %s' % (name, p)
        if r['status'] != 'ok':
            problems.append('%s: status %s (%s)' % (where, r['status'], r['message']))
            continue
        if r['verify'].get('errors') != 0 or not r['verify'].get('frames', 0) > 0:
            problems.append('%s: verify %s' % (where, r['verify']))
        m = r['metrics']
        want = ['iops', 'mb_per_s', 'cpu_us_per_op']
        if not stream:
            want += ['lat_p50_us', 'lat_p99_us', 'lat_p99_9_us']
        if p != 'native':
            want += ['exits_per_op', 'notifications_per_op']
        for k in want:
            v = m.get(k, {}).get('median')
            if not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
                problems.append('%s: %s = %r' % (where, k, v))
        for k in ['iops', 'mb_per_s']:
            v = m.get(k, {}).get('median')
            if isinstance(v, (int, float)) and not v > 0:
                problems.append('%s: %s = %r' % (where, k, v))
        for run in r['run_values']:
            c = run['counters']
            if run['ops'] < 1 or c.get('frames_sent') != 16:
                problems.append('%s: ops %s sent %s (--quick: 16)' % (where, run['ops'], c.get('frames_sent')))
            if p != 'native' and not run['exits']:
                problems.append('%s: no exits by reason' % where)
goals = [g['goal'] for g in doc['goals']]
for g in ['PV round trip p50 <= 2x native over the same link',
          'PV stream >= 80% of native frames/s', 'PV exits/frame <= 0.05 when streaming']:
    if g not in goals:
        problems.append('goal missing: %s' % g)
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
	;;
bench-same-data)
	# A sequential write on every path of the same image: afterwards the
	# image holds exactly what an independent implementation of the
	# documented pattern says, and its CRC-32 is what every path reported.
	img=$TMP/disk.img
	only=()
	[ -z "${KAPSEL_NESTED:-}" ] || only=(--paths native,pv,emulated) # as bench-quick
	bench --quick --workloads write-8K --iodepths 1 --no-fio --no-chart --disk "$img" \
		--format json --output-dir "$TMP/results" "${only[@]}"
	[ "$STATUS" -eq 0 ] || show_and_fail "kapsel bench exited with $STATUS"
	check_json "$out" native pv emulated || show_and_fail "JSON incomplete"
	python3 - "$out" "$img" <<'EOF' || fail "image contents"
import json, struct, sys, zlib
doc = json.load(open(sys.argv[1]))
opts = doc['options']
row = doc['rows'][0]
size, bs = opts['size_bytes'], row['block_bytes']
ops = opts['warmup_ops'] + opts['ops']  # one run per path; repeats rewrite the same blocks
gen_row = 1                             # the first row writes generation 1
MAGIC = 0x4b42454e43480000
def sector(s, gen):
    filler = bytes(((j * 7 + gen * 13 + 1) & 0xff) for j in range(16, 512))
    return struct.pack('<QQ', s, MAGIC | gen) + filler
written = ops * bs // 512
expect = bytearray()
for s in range(size // 512):
    expect += sector(s, gen_row if s < written else 0)
data = open(sys.argv[2], 'rb').read(size)
if data != bytes(expect):
    first = next(i for i in range(len(data)) if data[i] != expect[i])
    sys.exit('image differs from the expected pattern at byte %d (sector %d)' % (first, first // 512))
crc = '%08x' % zlib.crc32(data)
sums = {p: row['paths'][p]['checksum_crc32'] for p in ('native', 'pv', 'emulated')}
if any(v != crc for v in sums.values()):
    sys.exit('path checksums %s, image crc32 %s' % (sums, crc))
before = '%08x' % zlib.crc32(b''.join(sector(s, 0) for s in range(size // 512)))
if row['checksums']['before_crc32'] != before:
    sys.exit('before_crc32 %s, expected %s' % (row['checksums']['before_crc32'], before))
print('image ok: %d sectors written by every path, crc32 %s' % (written, crc))
EOF
	;;
bench-cpu)
	# The CPU rows alone with few operations (KAPSEL_BENCH_CPU_OPS, default
	# 20: under nested KVM on TCG an exit takes up to milliseconds).
	cpu_ops=${KAPSEL_BENCH_CPU_OPS:-20}
	bench --cpu --ops "$cpu_ops" --repeat 1 --timer-delay 2ms --no-chart --format json \
		--output-dir "$TMP/results"
	[ "$STATUS" -eq 0 ] || show_and_fail "kapsel bench --cpu exited with $STATUS"
	check_json "$out" native pv || show_and_fail "JSON on stdout incomplete"
	check_cpu "$cpu_ops" "$out" "$TMP/results/results.json" || show_and_fail "CPU rows implausible"
	expect_in "$TMP/results/results.txt" "exit cost on this machine:"
	expect_in "$TMP/results/results.txt" "getppid() system call"
	expect_in "$TMP/results/results.txt" "Processes, lmbench style"
	expect_in "$TMP/results/results.txt" "fork(), child _exit(0), waitpid()"
	;;
bench-native-only)
	# One path: the others are reported as skipped, the table still prints.
	bench --quick --paths native --workloads randread-4K,console --no-fio --no-chart \
		--output-dir "$TMP/results"
	[ "$STATUS" -eq 0 ] || show_and_fail "exited with $STATUS"
	expect_in "$out" "randread-4K qd=1 cache=none"
	expect_in "$out" "native"
	check_json "$TMP/results/results.json" native || fail "results.json incomplete"
	;;
bench-options)
	# Invalid options: exit status 2 and a message naming the option and the fix.
	check_error() {
		local want=$1
		shift
		bench "$@"
		[ "$STATUS" -eq 2 ] || show_and_fail "kapsel bench $* exited with $STATUS, expected 2"
		expect_in "$err" "$want"
	}
	check_error "--iodepths: '0' is not a queue depth; each must be 1-256" --iodepths 0
	check_error "--workloads: 'randread-5K' is not a workload" --workloads randread-5K
	check_error "--cache 'sometimes' is unknown; use none (O_DIRECT), writeback or both" --cache sometimes
	check_error "--paths: 'warp' is not a path; use any of native, pv, emulated, qemu-virtio, qemu-ide (qemu: both)" --paths warp
	check_error "--format 'xml' is unknown; use table or json" --format xml
	check_error "--size '1K' is not a valid size; give at least 1M" --size 1K
	check_error "--runtime 'soon' is not a valid time" --runtime soon
	check_error "--repeat '0' is not valid; give 1-25" --repeat 0
	check_error "unknown option '--turbo'" --turbo
	check_error "option '--disk' needs a value" --disk
	check_error "unexpected argument 'now'" now
	mkdir "$TMP/dir"
	check_error "--disk '$TMP/dir' is not a regular file" --quick --paths native --disk "$TMP/dir" \
		--output-dir "$TMP/results"
	truncate -s 1M "$TMP/small.img"
	check_error "smaller than --size 4 MiB; give a smaller --size or a larger file" --quick \
		--paths native --disk "$TMP/small.img" --output-dir "$TMP/results"
	check_error "--guest '$TMP/none.elf' cannot be read" --quick --guest "$TMP/none.elf" \
		--output-dir "$TMP/results"
	check_error "--cpu-guest '$TMP/none.elf' cannot be read" --cpu --cpu-guest "$TMP/none.elf" \
		--output-dir "$TMP/results"
	check_error "--cpu and --workloads both choose the rows" --cpu --workloads trap
	check_error "--timer-delay '10us' is not a valid time" --cpu --timer-delay 10us
	touch "$TMP/file"
	check_error "--output-dir '$TMP/file/x' cannot be created or written" --quick \
		--output-dir "$TMP/file/x"
	# Help works and names the options.
	bench --help
	[ "$STATUS" -eq 0 ] || fail "--help exited with $STATUS"
	expect_in "$out" "--iodepths LIST"
	expect_in "$out" "--cache MODE"
	STATUS=0
	"$KAPSEL" help bench >"$out" 2>"$err" || STATUS=$?
	[ "$STATUS" -eq 0 ] || fail "kapsel help bench exited with $STATUS"
	expect_in "$out" "Usage: kapsel bench"
	;;
*)
	fail "unknown case '$1'"
	;;
esac
echo "PASS: $1"
