# Sourced by deploy/demo.sh and tests/run.sh: make sure what NEX Backup needs is installed.
# On Debian as root it installs missing packages; otherwise it says what is missing.

nexb_prereqs() {
  local need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  command -v zstd >/dev/null 2>&1 || need+=(zstd)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo ">> installing ${need[*]} from Debian's packages"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
    else
      echo "missing: ${need[*]} (install them, or run as root on Debian)" >&2
      return 1
    fi
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.88 or newer, e.g. with rustup)" >&2
    return 1
  fi
}
