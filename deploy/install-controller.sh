#!/usr/bin/env bash
# Install (or upgrade) the NEX Backup controller on this host, as root:
#   bash deploy/install-controller.sh --recovery-key nexb-rk1:... --tls-name backup.example.net
#   bash deploy/install-controller.sh --upgrade --binary ./nex-backup   # new version, same data
# It creates the service user, /etc/nex-backup/controller.env (the recovery keys),
# the data directory, the binary and the systemd unit (checked with systemd-analyze
# verify), then starts it when systemd runs the machine. Run it again to upgrade.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/install-lib.sh"

binary=""; keys=(); names=(); listen="0.0.0.0:7420"; upgrade=0; start=1
data_dir=/var/lib/nex-backup; etc=/etc/nex-backup; user=nex-backup
bin_path=/usr/local/bin/nex-backup; unit_path=/etc/systemd/system/nex-backup.service
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --recovery-key) keys+=("$2"); shift 2 ;;
        --tls-name) names+=("$2"); shift 2 ;;
        --listen) listen=$2; shift 2 ;;
        --data-dir) data_dir=$2; shift 2 ;;
        --etc-dir) etc=$2; shift 2 ;;
        --unit) unit_path=$2; shift 2 ;;
        --bin-dir) bin_path=$2/nex-backup; shift 2 ;;
        --upgrade) upgrade=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$binary" ] || binary="$here/../target/release/nex-backup"
env_file="$etc/controller.env"

ensure_user "$user" "$data_dir"
install_binary "$binary" "$bin_path"
install_dir 0750 "root:$user" "$etc"
if [ -f "$env_file" ]; then
    say "$env_file kept (recovery keys unchanged)"
    [ ${#keys[@]} -eq 0 ] || say "--recovery-key ignored: edit $env_file to change the keys"
else
    [ $upgrade = 0 ] || die "--upgrade, but $env_file does not exist: install first"
    [ ${#keys[@]} -gt 0 ] || die "give --recovery-key nexb-rk1:... (create one offline: nex-backup recovery-key create --out FILE; see docs/security.md)"
    ( IFS=,; printf 'NEX_RECOVERY_KEYS=%s\n' "${keys[*]}" ) > "$env_file"
    chown "root:$user" "$env_file"; chmod 0640 "$env_file"
    say "wrote $env_file"
fi
install_dir 0700 "$user:$user" "$data_dir"

flags="--data-dir $data_dir --listen $listen"
for n in "${names[@]}"; do flags="$flags --tls-name $n"; done
if [ $upgrade = 1 ] && [ -f "$unit_path" ]; then
    exec_start=$(sed -n 's/^ExecStart=//p' "$unit_path")
    say "keeping the unit's ExecStart: $exec_start"
else
    exec_start="$bin_path serve $flags"
fi
unit=$(sed -e "s|^ExecStart=.*|ExecStart=$exec_start|" \
           -e "s|^EnvironmentFile=.*|EnvironmentFile=$env_file|" \
           -e "s|^ReadWritePaths=.*|ReadWritePaths=$data_dir|" \
           -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$user|" \
           "$here/nex-backup.service")
install_unit "$unit" "$unit_path"
[ $start = 0 ] || start_unit "$(basename "$unit_path")" "$upgrade"

cat <<MSG
==> done. Next:
    nex-backup ca show --data-dir $data_dir        # the fingerprint agents pin
    export NEX_CONFIG=$data_dir/cli.toml           # the CLI on this host (as root or $user)
    nex-backup token create --site SITE --expires 24h
    Back up this controller: sync $data_dir/blobs off site (rsync -a); it holds the
    snapshots and, every hour, a sealed copy of the controller's own state
    (docs/RECOVERY_GUIDE.md, scenario 5).
MSG
