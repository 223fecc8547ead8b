#!/usr/bin/env bash
# NEX Backup quickstart: the main job end to end on the embedded default.
#
# Creates a throwaway PostgreSQL cluster with a sample invoice database, creates an
# offline recovery key, starts a controller (mutual TLS, its own CA), enrolls an agent
# with a single-use token pinned to the CA fingerprint, takes a backup, restores it into
# a new database, and prints the verification. Everything lives in one temp directory, removed on exit unless
# KEEP=1 is set (then it prints how to stop and remove it).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
. deploy/prereqs.sh
nexb_prereqs

echo ">> building"
cargo build --bins -q
BIN="$ROOT/target/debug"
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/nexb-demo.XXXXXX)
chmod 755 "$WORK"
PGPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 55432)
CPORT=$((PGPORT + 1))
export DEMO_PG_PASSWORD="demo-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  [ -n "${AGENT_PID:-}" ] && kill "$AGENT_PID" 2>/dev/null || true
  [ -n "${CTRL_PID:-}" ] && kill "$CTRL_PID" 2>/dev/null || true
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
if [ "${KEEP:-0}" = 1 ]; then trap 'echo "kept $WORK"' EXIT; else trap cleanup EXIT; fi

echo ">> starting a throwaway PostgreSQL on 127.0.0.1:$PGPORT"
mkdir -p "$WORK/pg"
echo "$DEMO_PG_PASSWORD" > "$WORK/pg/pw"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$WORK/pg"
as_pg "$PGBIN/initdb" -D "$WORK/pg/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  --pwfile="$WORK/pg/pw" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/pg.log" -w -t 30 \
  -o "-p $PGPORT -k $WORK/pg -c listen_addresses=127.0.0.1" start >/dev/null
PSQL=("$PGBIN/psql" -X -q -h "$WORK/pg" -p "$PGPORT" -U postgres)
"${PSQL[@]}" -c "CREATE DATABASE invoices"
"${PSQL[@]}" -d invoices -v ON_ERROR_STOP=1 -f deploy/sample-invoices.sql >/dev/null
echo "   sample database 'invoices': $("${PSQL[@]}" -d invoices -tAc 'SELECT count(*) FROM invoices') invoices"

echo ">> creating the offline recovery key (kept in $WORK/recovery.key for the demo only)"
RK_PUB=$("$BIN/nex-backup" recovery-key create --out "$WORK/recovery.key" 2>/dev/null)
echo "   recovery public key: $RK_PUB"

echo ">> starting the controller on 127.0.0.1:$CPORT (mutual TLS 1.3)"
WPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 17443)
"$BIN/nex-backup" serve --data-dir "$WORK/controller" --listen "127.0.0.1:$CPORT" \
  --http-listen "127.0.0.1:$WPORT" \
  --recovery-key "$RK_PUB" >"$WORK/controller.out" 2>"$WORK/controller.log" &
CTRL_PID=$!
for _ in $(seq 1 100); do grep -q '^listening on' "$WORK/controller.out" 2>/dev/null && break; sleep 0.1; done
export NEX_CONFIG="$WORK/controller/cli.toml"   # URL, CA fingerprint, admin credential file
CA_FP=$("$BIN/nex-backup" ca show --data-dir "$WORK/controller")
echo "   CA fingerprint: $CA_FP"
cat > "$WORK/agent.toml" <<TOML
agent_id = "demo-server"
controller = "https://127.0.0.1:$CPORT"
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
echo ">> enrolling the agent for site demo with a single-use token"
TOKEN=$("$BIN/nex-backup" token create --site demo --expires 1h 2>/dev/null)
NEX_ENROLL_TOKEN="$TOKEN" "$BIN/nex-backup-agent" enroll --config "$WORK/agent.toml" \
  --ca-fingerprint "$CA_FP" 2>>"$WORK/agent.log"
echo ">> starting the agent (site demo, target invoices)"
"$BIN/nex-backup-agent" run --config "$WORK/agent.toml" 2>"$WORK/agent.log" &
AGENT_PID=$!
for _ in $(seq 1 100); do
  "$BIN/nex-backup" status --json 2>/dev/null | grep -q '"online": true' && break
  sleep 0.2
done
"$BIN/nex-backup" status
"$BIN/nex-backup" agents list

echo ">> backup"
"$BIN/nex-backup" backup --site demo --target invoices
echo ">> restore into a new database and verify"
"$BIN/nex-backup" restore --site demo --target invoices --to-database invoices_restored
"$BIN/nex-backup" snapshots --site demo
echo ">> a dashboard account"
DASH_PW=$("$BIN/nex-backup" account add demo-admin --role admin | tail -n 1)

cat <<MSG

The dashboard: https://127.0.0.1:$WPORT/ (the controller's own certificate; log in as
demo-admin with the password $DASH_PW).

The backup was restored into 'invoices_restored' and verified (chunk tags and ids,
the stream digest, per-table row counts). To look around while it runs, use KEEP=1:
  KEEP=1 bash deploy/demo.sh
  export NEX_CONFIG=$NEX_CONFIG
  $BIN/nex-backup status
  $BIN/nex-backup snapshots --site demo --json
  ${PSQL[*]} -d invoices_restored -c 'SELECT status, count(*) FROM invoices GROUP BY 1'
MSG
if [ "${KEEP:-0}" = 1 ]; then
  echo "Kept in $WORK. Stop with: kill $AGENT_PID $CTRL_PID; runuser -u postgres -- $PGBIN/pg_ctl -D $WORK/pg/data stop; rm -rf $WORK"
fi
