# Shared by install-controller.sh and install-agent.sh (sourced, not run).
set -euo pipefail

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

[ "$(id -u)" = 0 ] || die "run as root (it creates the service user, directories and the systemd unit)"

# The service account: a system user without a login shell or a home of its own.
ensure_user() {
    local user=$1 home=$2
    if id "$user" >/dev/null 2>&1; then
        say "service user $user exists"
    else
        useradd --system --user-group --home-dir "$home" --no-create-home \
            --shell /usr/sbin/nologin "$user"
        say "created service user $user"
    fi
}

# install_dir MODE OWNER:GROUP DIR: create or fix a directory's owner and mode.
install_dir() {
    install -d -m "$1" -o "${2%%:*}" -g "${2##*:}" "$3"
}

# Install the binary (atomically: copy beside, then rename over the old one).
install_binary() {
    local src=$1 dst=$2
    [ -x "$src" ] || die "binary $src not found or not executable (build it: cargo build --release)"
    install -d -m 0755 "$(dirname "$dst")"
    install -m 0755 "$src" "$dst.new"
    mv -f "$dst.new" "$dst"
    say "installed $dst ($("$dst" --version))"
}

# Write a unit file and check it with systemd-analyze verify.
install_unit() {
    local content=$1 path=$2
    install -d -m 0755 "$(dirname "$path")"
    printf '%s\n' "$content" > "$path.new"
    chmod 0644 "$path.new"
    mv -f "$path.new" "$path"
    if command -v systemd-analyze >/dev/null; then
        local out
        if ! out=$(systemd-analyze verify "$path" 2>&1); then
            die "systemd-analyze verify $path: $out"
        fi
        say "unit $path verified (systemd-analyze verify)"
    else
        say "systemd-analyze not found: $path not verified"
    fi
}

# Enable and (re)start a unit when systemd runs this machine; otherwise say how.
start_unit() {
    local unit=$1 restart=$2
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        if [ "$restart" = 1 ]; then
            systemctl restart "$unit"
        else
            systemctl enable --now "$unit"
        fi
        say "$unit started; logs: journalctl -u $unit"
    else
        say "systemd is not running here: start it with  systemctl enable --now $unit"
    fi
}
