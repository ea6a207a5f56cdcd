#!/usr/bin/env bash
# Print the path of a Python >= 3.12 found on this machine, or explain and fail.
# Order: $PYTHON, python3.12, python3.13, python3, then pyenv-installed versions.
set -u
ok() { "$@" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for cand in "${PYTHON:-}" python3.12 python3.13 python3; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null 2>&1 && ok "$cand"; then
    "$cand" -c 'import sys; print(sys.executable)'; exit 0
  fi
done
if command -v pyenv >/dev/null 2>&1; then
  root=$(pyenv root)
  for v in $(pyenv versions --bare 2>/dev/null | sort -V); do
    py="$root/versions/$v/bin/python3"
    if [ -x "$py" ] && ok "$py"; then echo "$py"; exit 0; fi
  done
fi
echo "No Python >= 3.12 found (torchgeo >= 0.9 needs it): install one (e.g. 'pyenv install 3.12') or run 'make PYTHON=/path/to/python3.12'." >&2
exit 1
