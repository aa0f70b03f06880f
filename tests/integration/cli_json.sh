#!/bin/bash
# Integration tests: the CLI's --json output (list, info, stats, inspect, version) and the JSON control protocol; host-only cases use stand-in control sockets.
. "$(dirname "$0")/lib.sh"
make_temp_dir
export KAPSEL_RUNTIME_DIR=$TMP/rt
VMPIDS=()
trap 'for p in "${VMPIDS[@]}"; do { kill -9 "$p" && wait "$p"; } 2>/dev/null; done; rm -rf "$TMP"' EXIT

# fake_vm NAME [JSON_REPLIES]: a stand-in control socket (FAKE_VM) whose
# text 'info' is minimal and whose JSON replies come from the file
# JSON_REPLIES ("VERB REPLY-LINE" lines; see tests/xenctrl/fake_vm.c).
fake_vm() {
	local name=$1
	mkdir -p -m 700 "$KAPSEL_RUNTIME_DIR"
	printf 'name %s\nstate running\n' "$name" >"$TMP/$name.info"
	"$FAKE_VM" "$KAPSEL_RUNTIME_DIR/$name.sock" "$TMP/$name.info" ${2:+"$2"} 2>"$TMP/$name.err" &
	VMPIDS+=($!)
	for _ in $(seq 100); do
		[ -S "$KAPSEL_RUNTIME_DIR/$name.sock" ] && return 0
		sleep 0.02
	done
	cat "$TMP/$name.err"
	fail "fake VM $name did not come up"
}

# check FILE PYTHON: run the Python statements on doc = the JSON in FILE
# (or, with FILE ending in .lines, docs = one JSON document per line).
check() {
	python3 - "$1" "$2" <<-'PY' || { echo "--- $1:"; cat "$1"; fail "check failed: $2"; }
	import json, sys
	path, code = sys.argv[1], sys.argv[2]
	text = open(path).read()
	if path.endswith(".lines"):
	    docs = [json.loads(line) for line in text.splitlines() if line]
	else:
	    doc = json.loads(text)
	exec(code)
	PY
}

reply() { # reply VERB RESULT-JSON: one ok reply line of the fake's file
	printf '%s {"version":1,"id":null,"ok":true,"verb":"%s","result":%s}\n' "$1" "$1" "$2"
}

CASE=$1
case "$CASE" in
cli-json-fake) # suite: cli
	# version: no VM needed.
	"$KAPSEL" version --json >"$TMP/version" || fail "version --json"
	check "$TMP/version" 'assert doc["schema"] == "kapsel.version/1"; assert doc["hypercall_abi"]["major"] >= 1; assert doc["control_json_protocol"] == 1; assert isinstance(doc["state_format"], int)'
	"$KAPSEL" version >"$TMP/version.txt"
	v=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$TMP/version")
	expect_in "$TMP/version.txt" "kapsel $v "
	STATUS=0
	"$KAPSEL" version --frob 2>"$TMP/err" || STATUS=$?
	expect_status 2
	# A VM whose info says two vCPUs, one up; its stats move between samples.
	{
		reply info '{"schema":"kapsel.info/1","name":"web","uuid":"00112233-4455-6677-8899-aabbccddeeff","domid":7,"pid":123,"state":"running","uptime_ns":5000000000,"memory_bytes":33554432,"vcpu_count":2,"vcpus":[{"id":0,"power":"up","blocked":false,"exits":5,"cpu_time_ns":1,"host_cpu":0},{"id":1,"power":"down","blocked":false,"exits":0,"cpu_time_ns":0,"host_cpu":-1}]}'
		reply stats '{"schema":"kapsel.stats/1","name":"web","uptime_ns":1000000000,"counters":{"exits_total":100,"vcpu0_power":"up"},"devices":[{"index":0,"name":"console","counters":{"exits":10}}]}'
		reply stats '{"schema":"kapsel.stats/1","name":"web","uptime_ns":3000000000,"counters":{"exits_total":500,"vcpu0_power":"up"},"devices":[{"index":0,"name":"console","counters":{"exits":30}}]}'
	} >"$TMP/web.json"
	fake_vm web "$TMP/web.json"
	fake_vm old # a VM that answers no JSON (an older Kapsel)
	"$KAPSEL" info --json web >"$TMP/info" || fail "info --json"
	check "$TMP/info" 'assert doc["schema"] == "kapsel.info/1" and doc["name"] == "web" and doc["vcpu_count"] == 2'
	"$KAPSEL" list --json >"$TMP/list" || fail "list --json"
	check "$TMP/list" '
vms = {vm["name"]: vm for vm in doc["vms"]}
assert doc["schema"] == "kapsel.list/1" and sorted(vms) == ["old", "web"], vms
w = vms["web"]
assert (w["domid"], w["state"], w["memory_bytes"], w["vcpu_count"], w["vcpus_up"], w["pid"]) == (7, "running", 33554432, 2, 1, 123), w
assert vms["old"]["state"] == "unknown" and vms["old"]["domid"] is None'
	STATUS=0
	"$KAPSEL" info --json old 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: old: this fake VM has no JSON reply for that"
	STATUS=0
	"$KAPSEL" list --json --names 2>"$TMP/err" || STATUS=$?
	expect_status 2
	# --watch --json: one object per line; the second has the rates
	# between the samples: (500 - 100) exits over 2 s of uptime.
	STATUS=0
	timeout 1 "$KAPSEL" stats --watch 0.2 --json web >"$TMP/watch.lines" || STATUS=$?
	expect_status 124
	check "$TMP/watch.lines" '
assert len(docs) >= 3, len(docs)
first, second = docs[0], docs[1]
assert first["schema"] == "kapsel.stats/1" and first["rates"] is None and first["interval_ns"] is None
assert first["counters"]["exits_total"] == 100 and second["counters"]["exits_total"] == 500
assert second["interval_ns"] == 2000000000
assert second["rates"]["exits_total"] == 200.0, second["rates"]
assert "vcpu0_power" not in second["rates"]
assert second["devices"][0]["rates"]["exits"] == 10.0
# The fake repeats its last sample: no time passed, so no rates.
assert docs[2]["interval_ns"] is None and docs[2]["rates"] is None'
	# The text form shows each counter's rate beside its total.
	{ reply stats "$(sed -n 2p "$TMP/web.json" | cut -d' ' -f2- | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["result"]))')"
	  sed -n 3p "$TMP/web.json"; } >"$TMP/web2.json"
	fake_vm web2 "$TMP/web2.json"
	STATUS=0
	timeout 0.7 "$KAPSEL" stats --watch 0.2 web2 >"$TMP/watch.txt" || STATUS=$?
	expect_status 124
	expect_in "$TMP/watch.txt" "--- web2 "
	expect_in "$TMP/watch.txt" "  exits_total: 500  (200.0/s)"
	expect_in "$TMP/watch.txt" "  exits: 30  (10.0/s)"
	expect_in "$TMP/watch.txt" "  vcpu0_power: up"
	;;
*)
	echo "unknown case '$CASE'" >&2
	exit 2
	;;
esac
