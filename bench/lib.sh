# What bench/run and bench/ab share: starting an `sts` under test and
# measuring its size. Source it after scripts/lib/postgres.sh, with LOADGEN
# (the loadgen binary), WORK (a scratch directory) and CHILDREN (an array of
# pids the caller kills on exit) set.

# The bootstrap administrator of every instance under test.
ADMIN=bench-admin ADMIN_PASSWORD=bench-admin-password-long-enough

# bench_start_sts NAME BINARY DATABASE_URL: starts BINARY as `sts serve` on
# a free loopback port with DATABASE_URL, a long access-token lifetime and no
# per-source login limit (every request of a benchmark comes from
# 127.0.0.1), waits until it is ready, and sets <NAME>_PID and <NAME>_BASE.
bench_start_sts() {
    local name=$1 binary=$2 url=$3 port pid
    port=$(sts_pg_free_port)
    cat >"$WORK/$name.toml" <<EOT
[server]
listen = "127.0.0.1:$port"
[database]
url = "$url"
[tokens]
issuer = "http://127.0.0.1:$port"
access_ttl_secs = 3600
[keys]
dir = "$WORK/keys-$name"
[login]
source_failures_per_minute = 4294967295
EOT
    STS_CONFIG=$WORK/$name.toml STS_BOOTSTRAP_ADMIN_USERNAME=$ADMIN STS_BOOTSTRAP_ADMIN_PASSWORD=$ADMIN_PASSWORD \
        "$binary" serve >"$WORK/$name.log" 2>&1 &
    pid=$!
    CHILDREN+=("$pid")
    "$LOADGEN" fetch --url "http://127.0.0.1:$port/health/ready" --secs 60 ||
        { tail -n 20 "$WORK/$name.log" >&2; sts_die "sts ($name) did not become ready"; }
    printf -v "${name}_PID" '%s' "$pid"
    printf -v "${name}_BASE" '%s' "http://127.0.0.1:$port"
}

# bench_rss_kib PID: the resident size of PID in KiB.
bench_rss_kib() { "$LOADGEN" rss --pid "$1" | sed -E 's/.*rss_kib=([0-9]+).*/\1/'; }
