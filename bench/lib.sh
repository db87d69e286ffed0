# Shared by the scripts of bench/: sourced, never run.

# The tree bench/tree_workload.py builds: its size, how many files, and from where.
TREE_MB=${TREE_MB:-1024}
TREE_FILES=${TREE_FILES:-$((20000 * TREE_MB / 1024))}
TREE_SOURCES=${TREE_SOURCES:-/usr/lib /usr/share $HOME/.cargo/registry/src}

# require_root WHY: stops unless run as root.
require_root() {
  [ "$(id -u)" = 0 ] || { echo "run as root: $1" >&2; exit 2; }
}

# require_tools TOOL...: stops at the first tool that is missing.
require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install -y $tool)" >&2; exit 2; }
  done
}

# release_bin: the absolute folder of the snapfs and snapfsd to measure: $BIN when set, else
# the checkout, built in release.
release_bin() {
  local bin=${BIN:-}
  if [ -z "$bin" ]; then
    cargo build --release -p snapfsd -p snapfs >/dev/null
    bin=${CARGO_TARGET_DIR:-target}/release
  fi
  realpath "$bin"
}

# check_bin DIR: stops unless DIR holds snapfs and snapfsd.
check_bin() {
  [ -x "$1/snapfs" ] && [ -x "$1/snapfsd" ] || { echo "$1: no snapfs and snapfsd" >&2; exit 2; }
}
