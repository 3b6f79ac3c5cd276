# Shared by the scripts that build a cached venv of their own (isaac_venv.sh, lerobot_venv.sh).
# Source it; it defines:
#   pipq PY ARGS...   pip install, quiet; pip's output is shown only when it fails (and it returns 1)
#   fresh_venv PY DIR WHAT SIZE
#                     remove DIR, create a venv there with PY, saying what is being built and how big
pipq() {
  local py=$1; shift
  local log; log=$(mktemp)
  if ! "$py" -m pip install -q --disable-pip-version-check "$@" >"$log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2; rm -f "$log"; return 1
  fi
  rm -f "$log"
}

fresh_venv() {
  local py=$1 dir=$2 what=$3 size=$4
  echo "$what: building $dir with $("$py" --version) ($size, once per machine)"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  "$py" -m venv "$dir"
}
