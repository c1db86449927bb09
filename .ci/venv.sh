# Sourced by .ci scripts: make_venv DIR creates a Python virtualenv at DIR unless one is
# there, installing Debian's python3-venv first (as root) when python3 lacks its venv module.
# Returns non-zero when DIR still has no python afterwards.
make_venv() {
  local venv=$1
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
      # Debian's python3 without its venv module.
      if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
      fi
    fi
  fi
  [ -x "$venv/bin/python" ]
}
