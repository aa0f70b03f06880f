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
	    try:
	        doc = json.loads(text)
	    except ValueError:
	        doc = None  # several documents: the code reads the file itself
	exec(code)
	PY
}

reply() { # reply VERB RESULT-JSON: one ok reply line of the fake's file
	printf '%s {"version":1,"id":null,"ok":true,"verb":"%s","result":%s}\n' "$1" "$1" "$2"
}

# start_vm (lib.sh) waits 20 s: cli-json-vm boots slowly under nested KVM.
START_VM_TRIES=400

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
	# A 'kapsel run --incoming' waiting for its VM (no KVM needed until the
	# stream comes) is listed too, with state incoming and where it listens.
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	timeout 30 "$KAPSEL" run --name mover --vcpus 2 --memory 96M --kernel "$GUESTS/hello.elf" \
		--incoming "tcp:127.0.0.1:$port,insecure" >"$TMP/incoming.out" 2>&1 </dev/null &
	VMPIDS+=($!)
	for _ in $(seq 100); do
		ls "$KAPSEL_RUNTIME_DIR"/.incoming-* >/dev/null 2>&1 && break
		sleep 0.05
	done
	"$KAPSEL" list --json >"$TMP/list" || fail "list --json with an incoming VM"
	check "$TMP/list" '
vms = {vm["name"]: vm for vm in doc["vms"]}
assert sorted(vms) == ["mover", "old", "web"], vms
m = vms["mover"]
assert (m["state"], m["domid"], m["uuid"], m["memory_bytes"], m["vcpu_count"], m["vcpus_up"]) == ("incoming", None, None, 96 << 20, 2, 0), m
assert m["listen"] == "tcp:127.0.0.1:'"$port"'", m
assert isinstance(m["pid"], int) and m["pid"] > 0, m'
	"$KAPSEL" list >"$TMP/list.txt" || fail "list with an incoming VM"
	grep -Eq '^ +- +mover +incoming +96M +2 ' "$TMP/list.txt" || { cat "$TMP/list.txt"; fail "incoming VM in list"; }
	STATUS=0
	"$KAPSEL" info --json old 2>"$TMP/err" || STATUS=$?
	expect_status 1
	expect_in "$TMP/err" "kapsel: old: this fake VM has no JSON reply for that"
	STATUS=0
	"$KAPSEL" list --json --names 2>"$TMP/err" || STATUS=$?
	expect_status 2
	# control --json: any verb in the JSON form; the whole reply, one line.
	"$KAPSEL" control --json web info >"$TMP/control" || fail "control --json"
	check "$TMP/control" 'assert doc["ok"] is True and doc["result"]["name"] == "web"'
	[ "$(wc -l <"$TMP/control")" -eq 1 ] || fail "control --json printed more than one line"
	STATUS=0
	"$KAPSEL" control --json old info >"$TMP/control" || STATUS=$?
	expect_status 1
	check "$TMP/control" 'assert doc["ok"] is False and doc["error"]["errno"] == "ENOSYS"'
	STATUS=0
	"$KAPSEL" control --json web set-limits disk 2>"$TMP/err" || STATUS=$?
	expect_status 2
	expect_in "$TMP/err" "argument 'disk' is not KEY=VALUE"
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
cli-json-vm)
	require_kvm
	start_vm web --vcpus 2 --memory 48M
	"$KAPSEL" list --json >"$TMP/list" || fail "list --json"
	check "$TMP/list" '
(web,) = [vm for vm in doc["vms"] if vm["name"] == "web"]
assert web["state"] == "running" and web["vcpu_count"] == 2 and web["memory_bytes"] == 48 << 20, web
assert isinstance(web["domid"], int) and web["uptime_ns"] > 0, web'
	"$KAPSEL" info --json web >"$TMP/info" || fail "info --json"
	check "$TMP/info" '
assert doc["schema"] == "kapsel.info/1" and doc["name"] == "web" and doc["state"] == "running"
assert doc["vcpu_count"] == 2 and [v["id"] for v in doc["vcpus"]] == [0, 1], doc["vcpus"]
assert doc["vcpus"][0]["power"] == "up" and doc["vcpus"][0]["exits"] > 0
assert doc["memory_bytes"] == 48 << 20 and doc["kernel"].endswith("idle.elf")
assert doc["guest_handles_shutdown"] is True and doc["disks"] == []
assert doc["devices"] and all(isinstance(d["name"], str) for d in doc["devices"])'
	# The text and JSON forms agree.
	"$KAPSEL" info web >"$TMP/info.txt"
	expect_in "$TMP/info.txt" "uuid $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["uuid"])' "$TMP/info")"
	# Counters are numbers that grow while the guest ticks.
	"$KAPSEL" stats --json web >"$TMP/stats1" || fail "stats --json"
	sleep 1
	"$KAPSEL" stats --json web >"$TMP/stats2" || fail "stats --json"
	cat "$TMP/stats1" "$TMP/stats2" | python3 -c '
import json, sys
text = sys.stdin.read()
decoder = json.JSONDecoder()
first, end = decoder.raw_decode(text)
second, _ = decoder.raw_decode(text[end:].lstrip())
for d in (first, second):
    assert d["schema"] == "kapsel.stats/1" and d["name"] == "web", d
c1, c2 = first["counters"], second["counters"]
assert c2["exits_total"] > c1["exits_total"] > 0, (c1, c2)
assert c2["hypercall_block"] > c1["hypercall_block"], (c1, c2)
assert second["uptime_ns"] > first["uptime_ns"]
assert [d["index"] for d in second["devices"]] == list(range(len(second["devices"])))
' || { cat "$TMP/stats1" "$TMP/stats2"; fail "stats --json did not grow"; }
	STATUS=0
	timeout 3 "$KAPSEL" stats --watch 0.5 --json web >"$TMP/watch.lines" || STATUS=$?
	expect_status 124
	check "$TMP/watch.lines" '
assert len(docs) >= 2, len(docs)
assert docs[0]["rates"] is None
r = docs[1]["rates"]
assert docs[1]["interval_ns"] > 0 and r["exits_total"] > 0 and r["hypercall_block"] > 0, docs[1]'
	# inspect --json of a saved state.
	"$KAPSEL" save --stop web "$TMP/saved" >"$TMP/save.out" 2>&1 || { cat "$TMP/save.out"; fail "save"; }
	wait "$VMPID" 2>/dev/null || true
	"$KAPSEL" inspect --json "$TMP/saved" >"$TMP/inspect" || fail "inspect --json"
	check "$TMP/inspect" '
assert doc["schema"] == "kapsel.inspect/1" and doc["valid"] is True and doc["restorable"] is True
assert doc["vm"]["name"] == "web" and doc["vm"]["memory_bytes"] == 48 << 20
assert doc["vm"]["exits_total"] > 0 and doc["format"] >= 1
assert "memory.img" in [f["name"] for f in doc["files"]]
assert doc["devices"] and doc["records"] and "idle.elf" in doc["definition"]'
	# A damaged state: valid false, the reason, exit status 1.
	printf 'garbage' >"$TMP/saved/state.bin"
	STATUS=0
	"$KAPSEL" inspect --json "$TMP/saved" >"$TMP/inspect.bad" 2>/dev/null || STATUS=$?
	expect_status 1
	check "$TMP/inspect.bad" 'assert doc["valid"] is False and doc["restorable"] is False and "state.bin" in doc["message"], doc'
	;;
control-json-protocol)
	require_kvm
	start_vm raw
	sock=$KAPSEL_RUNTIME_DIR/raw.sock
	{
		echo '{"version":1,"verb":"info","id":7}'
		echo '{"version":1,"verb":"info"'
		echo '{"version":2,"verb":"info","id":"x"}'
		echo '{"version":1,"verb":"frobnicate"}'
		echo '{"version":1,"verb":"dumpxml"}'
		echo '{"version":1,"verb":"set-limits","args":{"disk":"x"}}'
		echo '{"version":1,"verb":"pause","args":{"now":1}}'
		echo '{"version":1,"verb":"stats","args":{"a":[1]}}'
		echo 'help'
	} | "$SOCKCLIENT" "$sock" >"$TMP/reply" || fail "sockclient"
	check "$TMP/reply" '
lines = open(sys.argv[1]).read().splitlines()
replies = [json.loads(l) for l in lines[:8]]
for r in replies:
    assert r["version"] == 1, r
info, bad, version, unknown, xml, limits, pause, stats = replies
assert info["id"] == 7 and info["ok"] is True and info["verb"] == "info"
assert info["result"]["schema"] == "kapsel.info/1" and info["result"]["name"] == "raw"
def error(r, name, text):
    assert r["ok"] is False and r["error"]["errno"] == name and text in r["error"]["message"], r
error(bad, "EINVAL", "malformed JSON at column")
assert bad["id"] is None
error(version, "EPROTO", "speaks version 1")
assert version["id"] == "x"
error(unknown, "ENOSYS", "unknown request \x27frobnicate\x27")
assert xml["ok"] is True and xml["lines"][0].startswith("<domain") and xml["lines"][-1] == "</domain>"
error(limits, "EINVAL", "disk=\x27x\x27 is not a whole number")
error(pause, "EINVAL", "pause takes no arguments")
error(stats, "EINVAL", "argument \x27a\x27 must be")
assert lines[8].startswith("ok "), lines[8]  # a text request still gets text
'
	# kapsel control --json: arguments arrive as strings and still work.
	"$KAPSEL" control --json raw pause >"$TMP/control" || fail "control --json pause"
	"$KAPSEL" info --json raw >"$TMP/info" || fail "info --json"
	check "$TMP/info" 'assert doc["state"] == "paused", doc["state"]'
	"$KAPSEL" control --json raw resume >/dev/null || fail "control --json resume"
	STATUS=0
	"$KAPSEL" control --json raw set-limits disk=0 iops=5 >"$TMP/control" || STATUS=$?
	expect_status 1
	check "$TMP/control" 'assert doc["error"]["errno"] == "ENODEV" and "has no disk 0" in doc["error"]["message"], doc'
	# An overlong JSON request gets a JSON error, then the connection closes.
	{ printf '{"version":1,"verb":"info","id":"'; head -c 5000 /dev/zero | tr '\0' 'a'; } |
		"$SOCKCLIENT" "$sock" --keep-open >"$TMP/reply" || true
	check "$TMP/reply" 'assert doc["ok"] is False and doc["error"]["errno"] == "E2BIG", doc'
	# shutdown with wait: its reply, then the end of the VM, both JSON.
	echo '{"version":1,"verb":"shutdown","args":{"timeout":20,"wait":true},"id":"end"}' |
		"$SOCKCLIENT" "$sock" --keep-open --read-ms 30000 >"$TMP/reply" || true
	check "$TMP/reply" '
first, second = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
assert first["id"] == "end" and first["result"]["schema"] == "kapsel.shutdown/1", first
assert first["result"]["timeout_s"] == 20 and first["result"]["guest_handles_shutdown"] is True
assert second["id"] == "end" and second["verb"] == "wait", second
assert second["result"] == {"schema": "kapsel.wait/1", "exit_code": 0, "reason": "poweroff"}, second'
	;;
*)
	echo "unknown case '$CASE'" >&2
	exit 2
	;;
esac
