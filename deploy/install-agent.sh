#!/usr/bin/env bash
# Install (or upgrade) the NEX Backup agent on a Linux customer host, as root:
#   bash deploy/install-agent.sh --controller https://backup.example.net:7420 \
#        --token nexb-enroll-... --ca-fingerprint SHA256:...
#   bash deploy/install-agent.sh --upgrade --binary ./nex-backup-agent
# It creates the service user, its state directory (0700), /etc/nex-backup/agent.toml
# (from agent.example.toml, if absent) and agent.env (0600, the database password), the
# binary and the systemd unit (checked with systemd-analyze verify); with --token it
# enrolls AS THE SERVICE USER, so the agent's keys belong to it. Run it again to upgrade.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$here/install-lib.sh"

binary=""; controller=""; token="${NEX_ENROLL_TOKEN:-}"; fingerprint=""; upgrade=0; start=1
state_dir=/var/lib/nex-backup-agent; etc=/etc/nex-backup; user=nex-backup
bin_path=/usr/local/bin/nex-backup-agent; unit_path=/etc/systemd/system/nex-backup-agent.service
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=$2; shift 2 ;;
        --controller) controller=$2; shift 2 ;;
        --token) token=$2; shift 2 ;;
        --ca-fingerprint) fingerprint=$2; shift 2 ;;
        --state-dir) state_dir=$2; shift 2 ;;
        --etc-dir) etc=$2; shift 2 ;;
        --unit) unit_path=$2; shift 2 ;;
        --bin-dir) bin_path=$2/nex-backup-agent; shift 2 ;;
        --upgrade) upgrade=1; shift ;;
        --no-start) start=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ -n "$binary" ] || binary="$here/../target/release/nex-backup-agent"
config="$etc/agent.toml"; env_file="$etc/agent.env"

ensure_user "$user" "$state_dir"
install_binary "$binary" "$bin_path"
install_dir 0750 "root:$user" "$etc"
install_dir 0700 "$user:$user" "$state_dir"
if [ -f "$config" ]; then
    say "$config kept"
else
    [ -n "$controller" ] || die "give --controller https://HOST:7420 (the address agents dial)"
    sed -e "s|^controller = .*|controller = \"$controller\"|" \
        -e "s|^state_dir = .*|state_dir = \"$state_dir\"|" \
        "$here/agent.example.toml" > "$config"
    chown "root:$user" "$config"; chmod 0640 "$config"
    say "wrote $config: edit its [[targets]] (and file_sets), then: nex-backup-agent check-config --config $config --online"
fi
if [ ! -f "$env_file" ]; then
    printf '# The database password of each target (password_env in agent.toml).\nNEX_PG_PASSWORD=\n' > "$env_file"
    chown "$user:$user" "$env_file"; chmod 0600 "$env_file"
    say "wrote $env_file: put the database password there"
fi
unit=$(sed -e "s|^ExecStart=.*|ExecStart=$bin_path run --config $config|" \
           -e "s|^EnvironmentFile=.*|EnvironmentFile=-$env_file|" \
           -e "s|^ReadWritePaths=.*|ReadWritePaths=$state_dir|" \
           -e "s|^User=.*|User=$user|" -e "s|^Group=.*|Group=$user|" \
           "$here/nex-backup-agent.service")
install_unit "$unit" "$unit_path"

if [ -n "$token" ]; then
    [ -n "$fingerprint" ] || die "--token needs --ca-fingerprint SHA256:... (nex-backup ca show on the controller)"
    say "enrolling as $user"
    NEX_ENROLL_TOKEN="$token" runuser -u "$user" -- \
        "$bin_path" enroll --config "$config" --ca-fingerprint "$fingerprint"
fi
if [ ! -f "$state_dir/enrollment.toml" ]; then
    say "not enrolled yet: run this again with --token ... --ca-fingerprint ..., then it starts"
elif [ $start = 1 ]; then
    start_unit "$(basename "$unit_path")" "$upgrade"
fi
