#!/usr/bin/env bash
# Read-path benchmark: mirrorgate against nginx, on 127.0.0.1 only, in one run.
#
#   large: GET of a 64 MiB object through two mirrorgate hops
#          (client -> A /replicator/local/... -> topology lookup -> B /replicator/remote/...,
#           SHA-256 verified at B on the way out of storage and at A on the way through)
#          vs client -> nginx reverse proxy (proxy_buffering off, upstream keepalive)
#                    -> nginx file server (sendfile on).
#   small: GET and HEAD of a 1 KiB object on B's remote route (metadata lookup, verified read)
#          vs the same nginx proxy -> file server pair serving a 1 KiB file.
#
# Every scenario is run ROUNDS times with the same oha settings, alternating which side goes
# first; the table shows medians and the mirrorgate/nginx ratio, then the peak resident memory
# (VmHWM) of every server process. A benchmark, not a test: nothing is asserted.
#
# Usage: loadtest/read-path.sh            (from anywhere; needs root or sudo-less apt for nginx)
# Environment (all optional):
#   DURATION=15s  LARGE_CONC=8  SMALL_CONC=32  ROUNDS=3  WARMUP=3s  LARGE_MIB=64
#   NGINX_WORKERS=$(nproc)  PROXY_BUFFER=64k  MIRRORGATE_BIN=target/release/mirrorgate
#   KEEP=1 keeps the work directory (configs, logs, raw oha JSON).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HERE="$ROOT/loadtest"
DURATION="${DURATION:-15s}"
LARGE_CONC="${LARGE_CONC:-8}"
SMALL_CONC="${SMALL_CONC:-32}"
ROUNDS="${ROUNDS:-3}"
WARMUP="${WARMUP:-3s}"
LARGE_MIB="${LARGE_MIB:-64}"
NGINX_WORKERS="${NGINX_WORKERS:-$(nproc)}"
PROXY_BUFFER="${PROXY_BUFFER:-64k}"
BIN="${MIRRORGATE_BIN:-$ROOT/target/release/mirrorgate}"
CLIENT=bench
BUCKET=bench
H="x-clonecloudstore-client-id: $CLIENT"

log() { printf '[read-path] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- tools -------------------------------------------------------------------------------
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v nginx >/dev/null 2>&1; then
    log "installing nginx (Debian)"
    as_root apt-get update
    as_root apt-get install -y nginx
fi
NGINX="$(command -v nginx)"
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v oha >/dev/null 2>&1; then
    log "installing oha"
    # The newest oha first; if it needs a newer rustc than the one installed, a pinned one.
    cargo install oha --locked || cargo install oha --locked --version 1.16.0
fi
command -v python3 >/dev/null 2>&1 || { as_root apt-get update; as_root apt-get install -y python3; }
command -v curl >/dev/null 2>&1 || { as_root apt-get update; as_root apt-get install -y curl; }
if [ ! -x "$BIN" ]; then
    log "building mirrorgate (cargo build --release)"
    (cd "$ROOT" && cargo build --release)
fi
# oha renamed its JSON switch: -j up to 1.4, --output-format json from 1.5 on.
if oha --help 2>&1 | grep -q -- '--output-format'; then OHA_JSON=(--output-format json); else OHA_JSON=(-j); fi
OHA_WAIT=()
if oha --help 2>&1 | grep -q -- '--wait-ongoing-requests-after-deadline'; then
    OHA_WAIT=(--wait-ongoing-requests-after-deadline)
fi

# ---- work directory, processes, cleanup ----------------------------------------------------
WORK="$(mktemp -d /tmp/mirrorgate-read-path.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "${KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_http() { # url: bounded wait until it answers
    for _ in $(seq 200); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1 did not come up"
}

PA=$(free_port); PB=$(free_port); PF=$(free_port); PP=$(free_port)
while [ "$PB" = "$PA" ]; do PB=$(free_port); done
while [ "$PF" = "$PA" ] || [ "$PF" = "$PB" ]; do PF=$(free_port); done
while [ "$PP" = "$PA" ] || [ "$PP" = "$PB" ] || [ "$PP" = "$PF" ]; do PP=$(free_port); done

site_config() { # id port peer-id peer-port
    mkdir -p "$WORK/$1"
    cat > "$WORK/$1.toml" <<EOF
[site]
id = "$1"
listen = "127.0.0.1:$2"
public_url = "http://127.0.0.1:$2"
data_dir = "$WORK/$1"

[storage]
backend = "fs"

[[peers]]
id = "$3"
url = "http://127.0.0.1:$4"

# Reads only: nothing written here is fanned out, so B's copy stays the only one.
[replication]
enabled = false

[auth]
enabled = false
EOF
}
site_config site-a "$PA" site-b "$PB"
site_config site-b "$PB" site-a "$PA"
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/site-a.toml" > "$WORK/site-a.log" 2>&1 &
PID_A=$!; PIDS+=("$PID_A")
RUST_LOG="${RUST_LOG:-warn}" "$BIN" serve --config "$WORK/site-b.toml" > "$WORK/site-b.log" 2>&1 &
PID_B=$!; PIDS+=("$PID_B")

# nginx: a file server and a reverse proxy in front of it, each its own master.
NGINX_USER=""
[ "$(id -u)" -eq 0 ] && NGINX_USER="user root;"
WWW="$WORK/www"
mkdir -p "$WWW"
nginx_conf() { # template dir port [upstream-port]
    mkdir -p "$2"
    sed -e "s#@DIR@#$2#g" -e "s#@PORT@#$3#g" -e "s#@UPSTREAM_PORT@#${4:-}#g" \
        -e "s#@ROOT@#$WWW#g" -e "s#@WORKERS@#$NGINX_WORKERS#g" -e "s#@USER@#$NGINX_USER#g" \
        -e "s#@PROXY_BUFFER@#$PROXY_BUFFER#g" "$1" > "$2/nginx.conf"
}
nginx_conf "$HERE/nginx-files.conf.in" "$WORK/nginx-files" "$PF"
nginx_conf "$HERE/nginx-proxy.conf.in" "$WORK/nginx-proxy" "$PP" "$PF"
"$NGINX" -p "$WORK/nginx-files" -c "$WORK/nginx-files/nginx.conf" -e "$WORK/nginx-files/error.log" &
PID_NF=$!; PIDS+=("$PID_NF")
"$NGINX" -p "$WORK/nginx-proxy" -c "$WORK/nginx-proxy/nginx.conf" -e "$WORK/nginx-proxy/error.log" &
PID_NP=$!; PIDS+=("$PID_NP")

wait_http "http://127.0.0.1:$PA/healthz"
wait_http "http://127.0.0.1:$PB/healthz"

# ---- data ----------------------------------------------------------------------------------
LARGE=large.bin
SMALL=small.bin
log "writing a ${LARGE_MIB} MiB and a 1 KiB object at site B"
head -c "$((LARGE_MIB * 1024 * 1024))" /dev/urandom > "$WWW/$LARGE"
head -c 1024 /dev/urandom > "$WWW/$SMALL"
chmod 755 "$WORK" "$WWW"; chmod 644 "$WWW"/*
curl -fsS -o /dev/null -X POST -H "$H" "http://127.0.0.1:$PB/cloudclonestore/$BUCKET"
for f in "$LARGE" "$SMALL"; do
    curl -fsS -o /dev/null -X POST -H "$H" --data-binary "@$WWW/$f" \
        "http://127.0.0.1:$PB/cloudclonestore/$BUCKET/$f"
done
wait_http "http://127.0.0.1:$PF/$SMALL"
wait_http "http://127.0.0.1:$PP/$SMALL"

MG_LARGE="http://127.0.0.1:$PA/replicator/local/buckets/$BUCKET/$LARGE"
MG_SMALL="http://127.0.0.1:$PB/replicator/remote/buckets/$BUCKET/$SMALL"
NX_LARGE="http://127.0.0.1:$PP/$LARGE"
NX_SMALL="http://127.0.0.1:$PP/$SMALL"

# Both paths must return the very bytes written, A naming B as the holder.
want=$(sha256sum < "$WWW/$LARGE" | cut -d' ' -f1)
got=$(curl -fsS -H "$H" -D "$WORK/headers" "$MG_LARGE" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || die "mirrorgate A returned other bytes than written"
grep -qi '^x-clonecloudstore-target-id: site-b' "$WORK/headers" || die "A did not read through B"
got=$(curl -fsS "$NX_LARGE" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || die "nginx returned other bytes than written"
[ "$(curl -fsS -H "$H" "$MG_SMALL" | sha256sum)" = "$(sha256sum < "$WWW/$SMALL")" ] \
    || die "B's remote route returned other bytes than written"

# ---- load ----------------------------------------------------------------------------------
# run NAME DURATION CONC METHOD URL [header]: one oha run, JSON kept as $WORK/NAME.json
run() {
    local name=$1 dur=$2 conc=$3 method=$4 url=$5
    shift 5
    local hdr=()
    [ $# -gt 0 ] && hdr=(-H "$1")
    timeout 300 oha --no-tui "${OHA_JSON[@]}" "${OHA_WAIT[@]}" -z "$dur" -c "$conc" -m "$method" \
        "${hdr[@]}" "$url" > "$WORK/$name.json"
}
scenario() { # label side conc method round
    local label=$1 side=$2 conc=$3 method=$4 round=$5 dur=${6:-$DURATION}
    local url hdr=()
    case "$label/$side" in
        large/mg) url=$MG_LARGE; hdr=("$H") ;;
        large/nginx) url=$NX_LARGE ;;
        small/mg) url=$MG_SMALL; hdr=("$H") ;;
        small/nginx) url=$NX_SMALL ;;
    esac
    log "round $round: $label $method $side (-z $dur -c $conc)"
    run "$label-$method-$side-$round" "$dur" "$conc" "$method" "$url" "${hdr[@]}"
}

log "warm-up ($WARMUP per scenario)"
for side in mg nginx; do
    scenario large "$side" "$LARGE_CONC" GET warm "$WARMUP"
    scenario small "$side" "$SMALL_CONC" GET warm "$WARMUP"
done
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="mg nginx"; else order="nginx mg"; fi
    for side in $order; do scenario large "$side" "$LARGE_CONC" GET "$r"; done
    for side in $order; do scenario small "$side" "$SMALL_CONC" GET "$r"; done
    for side in $order; do scenario small "$side" "$SMALL_CONC" HEAD "$r"; done
done

# ---- peak memory ---------------------------------------------------------------------------
{
    echo "mirrorgate site A $PID_A"
    echo "mirrorgate site B $PID_B"
    for m in "$PID_NF:nginx files" "$PID_NP:nginx proxy"; do
        pid=${m%%:*}; what=${m#*:}
        echo "$what master $pid"
        for w in $(pgrep -P "$pid" || true); do echo "$what worker $w"; done
    done
} | while read -r line; do
    pid=${line##* }
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    echo "${line% *}|$pid|${hwm:-0}"
done > "$WORK/memory.txt"

# ---- report --------------------------------------------------------------------------------
python3 - "$WORK" "$ROUNDS" "$LARGE_MIB" "$DURATION" "$LARGE_CONC" "$SMALL_CONC" "$PROXY_BUFFER" <<'PY'
import json, statistics, sys, os, subprocess, datetime
work, rounds, mib, dur, lc, sc, pbuf = sys.argv[1:]
rounds = int(rounds)

def load(name):
    with open(os.path.join(work, name + ".json")) as f:
        return json.load(f)

def check(d, name):
    codes = d.get("statusCodeDistribution", {})
    bad = {k: v for k, v in codes.items() if not k.startswith("2")}
    errs = d.get("errorDistribution", {})
    if bad or errs:
        print(f"WARNING {name}: status {codes} errors {errs}", file=sys.stderr)

def metric(label, method, side, what):
    vals = []
    for r in range(1, rounds + 1):
        name = f"{label}-{method}-{side}-{r}"
        d = load(name)
        check(d, name)
        s = d["summary"]
        if what == "mibs":
            vals.append(s["sizePerSec"] / 2**20)
        elif what == "rps":
            # successful requests per second
            vals.append(s["requestsPerSec"] * s.get("successRate", 1.0))
        else:
            vals.append(d["latencyPercentiles"][what] * 1000.0)
    return statistics.median(vals), vals

def row(title, label, method, what, unit, higher_better):
    m, mv = metric(label, method, "mg", what)
    n, nv = metric(label, method, "nginx", what)
    ratio = m / n if n else float("nan")
    fmt = (lambda v: f"{v:,.0f}") if what in ("mibs", "rps") else (lambda v: f"{v:.2f}")
    per = lambda vs: "/".join(fmt(v) for v in vs)
    note = "higher is better" if higher_better else "lower is better"
    print(f"| {title} | {fmt(m)} {unit} | {fmt(n)} {unit} | **{ratio:.2f}x** ({note}) | {per(mv)} vs {per(nv)} |")

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
nproc = os.cpu_count()
print()
print(f"read-path.sh, {datetime.date.today()}, {nproc} CPUs ({cpu}), medians of {rounds} rounds,"
      f" oha -z {dur}, {lc} connections (large) / {sc} (small), nginx proxy_buffer_size {pbuf}")
print()
print("| scenario | mirrorgate | nginx | mirrorgate / nginx | per round (mirrorgate vs nginx) |")
print("|---|---|---|---|---|")
row(f"GET {mib} MiB, 2 hops: throughput", "large", "GET", "mibs", "MiB/s", True)
row("GET 1 KiB: requests/s", "small", "GET", "rps", "req/s", True)
row("GET 1 KiB: p50 latency", "small", "GET", "p50", "ms", False)
row("GET 1 KiB: p99 latency", "small", "GET", "p99", "ms", False)
row("HEAD 1 KiB: requests/s", "small", "HEAD", "rps", "req/s", True)
row("HEAD 1 KiB: p50 latency", "small", "HEAD", "p50", "ms", False)
row("HEAD 1 KiB: p99 latency", "small", "HEAD", "p99", "ms", False)
print()
print("| process (pid) | peak RSS (VmHWM) |")
print("|---|---|")
totals = {}
for line in open(os.path.join(work, "memory.txt")):
    what, pid, kb = line.strip().split("|")
    print(f"| {what} ({pid}) | {int(kb)/1024:.1f} MiB |")
    if what.startswith("nginx"):
        key = what.rsplit(" ", 1)[0]
        totals[key] = totals.get(key, 0) + int(kb)
print()
print("nginx master + workers (pages shared between them counted in each): " +
      ", ".join(f"{k} {v/1024:.1f} MiB" for k, v in totals.items()))
PY
