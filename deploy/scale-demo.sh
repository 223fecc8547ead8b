#!/usr/bin/env bash
# NEX Backup scale-out demo: PostgreSQL for the catalog, SeaweedFS (S3) for the data,
# two controller replicas sharing both, one agent that knows both addresses.
#
# Runs a backup through the replicas, kills the replica the agent is connected to
# (SIGKILL), and restores through the other one, verified. Everything lives in one temp
# directory, removed on exit unless KEEP=1 is set.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. deploy/prereqs.sh
nexb_prereqs

echo ">> building"
cargo build --bins -q
BIN="$ROOT/target/debug"
WEED="$ROOT/.ci/.venv/bin/weed"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/nexb-scale.XXXXXX)
chmod 755 "$WORK"
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PGPORT=$(freeport); APORT=$(freeport); BPORT=$(freeport)
S3PORT=$(freeport); MPORT=$(freeport); VPORT=$(freeport); FPORT=$(freeport)
export DEMO_PG_PASSWORD="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
PIDS=()

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
if [ "${KEEP:-0}" = 1 ]; then trap 'echo "kept $WORK"' EXIT; else trap cleanup EXIT; fi
wait_line() { for _ in $(seq 1 300); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; return 1; }

echo ">> PostgreSQL on 127.0.0.1:$PGPORT: the catalog (database nexcat) and a sample database"
mkdir -p "$WORK/pg"
echo "$DEMO_PG_PASSWORD" > "$WORK/pg/pw"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/pw" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/pg.log" -w -t 30 \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
PSQL=("$PGBIN/psql" -X -q -h "$WORK/pg" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -c "CREATE DATABASE nexcat" -c "CREATE DATABASE invoices"
"${PSQL[@]}" -d invoices -v ON_ERROR_STOP=1 -f deploy/sample-invoices.sql >/dev/null
CATALOG="postgres://postgres:$DEMO_PG_PASSWORD@127.0.0.1:$PGPORT/nexcat"

echo ">> SeaweedFS S3 on 127.0.0.1:$S3PORT, bucket backups"
mkdir -p "$WORK/s3/data"
KEY=demokey; SECRET="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
cat > "$WORK/s3/s3.json" <<JSON
{"identities":[{"name":"nex","credentials":[{"accessKey":"$KEY","secretKey":"$SECRET"}],"actions":["Admin","Read","List","Tagging","Write"]}]}
JSON
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$KEY" "$SECRET" > "$WORK/s3/credentials"
chmod 600 "$WORK/s3/credentials"
"$WEED" mini -dir="$WORK/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
  -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
  -s3.port="$S3PORT" -master.port="$MPORT" -volume.port="$VPORT" -filer.port="$FPORT" \
  -admin.port="$(freeport)" -s3.config="$WORK/s3/s3.json" -bucket=backups \
  >/dev/null 2>"$WORK/s3/weed.log" &
PIDS+=($!)
STORE="s3://backups/nex?endpoint=http://127.0.0.1:$S3PORT&allow_http=true&region=us-east-1&credentials_file=$WORK/s3/credentials"

RK_PUB=$("$BIN/nex-backup" recovery-key create --out "$WORK/recovery.key" 2>/dev/null)
replica() { # name port
  "$BIN/nex-backup" serve --data-dir "$WORK/$1" --listen "127.0.0.1:$2" --recovery-key "$RK_PUB" \
    --catalog "$CATALOG" --store "$STORE" >"$WORK/$1.out" 2>"$WORK/$1.log" &
  PIDS+=($!)
  echo $! > "$WORK/$1.pid"
  wait_line "$WORK/$1.out" '^listening on'
}
echo ">> replica A on $APORT (first: creates the schema and the CA), then replica B on $BPORT"
for _ in $(seq 1 100); do "$BIN/nex-backup" --help >/dev/null && curl -s -o /dev/null "http://127.0.0.1:$S3PORT" && break; sleep 0.3; done
replica a "$APORT"
replica b "$BPORT"
wait_line "$WORK/a.log" 'this replica now leads'
echo "   A leads; B imported the CA: $(grep -c 'imported the controller CA' "$WORK/b.log") time(s)"

export NEX_CONFIG="$WORK/a/cli.toml"
CA_FP=$("$BIN/nex-backup" ca show --data-dir "$WORK/a")
cat > "$WORK/agent.toml" <<TOML
agent_id = "demo-server"
controller = "https://127.0.0.1:$BPORT, https://127.0.0.1:$APORT"
state_dir = "$WORK/agent-state"

[[targets]]
name = "invoices"
host = "127.0.0.1"
port = $PGPORT
user = "postgres"
dbname = "invoices"
password_env = "DEMO_PG_PASSWORD"
pg_bin_dir = "$PGBIN"
TOML
echo ">> enrolling through A; the agent lists B first, so its session lives on B"
TOKEN=$("$BIN/nex-backup" token create --site demo --expires 1h 2>/dev/null)
NEX_ENROLL_TOKEN="$TOKEN" "$BIN/nex-backup-agent" enroll --config "$WORK/agent.toml" \
  --ca-fingerprint "$CA_FP" 2>>"$WORK/agent.log"
"$BIN/nex-backup-agent" run --config "$WORK/agent.toml" 2>>"$WORK/agent.log" &
PIDS+=($!)
for _ in $(seq 1 100); do
  "$BIN/nex-backup" status --json 2>/dev/null | grep -q '"online": true' && break
  sleep 0.3
done

echo ">> backup, asked of A, run by the agent through B"
"$BIN/nex-backup" backup --site demo --target invoices
echo ">> SIGKILL replica B (the agent's)"
kill -9 "$(cat "$WORK/b.pid")"
for _ in $(seq 1 100); do
  [ "$(grep -c 'agent connected' "$WORK/a.log")" -ge 1 ] && "$BIN/nex-backup" status --json 2>/dev/null | grep -q '"online": true' && break
  sleep 0.3
done
echo ">> restore through A into a new database, verified"
"$BIN/nex-backup" restore --site demo --target invoices --to-database invoices_restored
"$BIN/nex-backup" snapshots --site demo
echo "   restored rows: $("${PSQL[@]}" -d invoices_restored -tAc 'SELECT count(*) FROM invoices')"
echo "   objects in the bucket: chunks and manifests under s3://backups/nex/"
