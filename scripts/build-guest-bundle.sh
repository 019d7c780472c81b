#!/usr/bin/env bash
# Build kvmguest-net-reconfig as one executable file for guests: a Python zipapp holding
# kvmguest.guest (standard library only at run time) and, unless --no-pycdlib, pycdlib.
# Without pycdlib the guest reads the CD-ROM by mounting it (root, kernel iso9660 support).
# pyroute2 is never bundled: without it the guest uses the `ip` command.
#
#   scripts/build-guest-bundle.sh [--no-pycdlib] OUT.pyz
#
# The guest needs Python >= 3.8. Install: copy OUT.pyz to the guest as
# /usr/local/bin/kvmguest-net-reconfig (mode 0755), then
#   kvmguest-net-reconfig --print-unit > /etc/systemd/system/kvmguest-net-reconfig.service
#   systemctl enable kvmguest-net-reconfig
# PYTHON selects the interpreter that builds it and finds pycdlib (default: the project's
# .venv if there is one, else python3).
set -euo pipefail

usage() { echo "usage: $0 [--no-pycdlib] OUT.pyz" >&2; exit 2; }

with_pycdlib=1
out=""
for arg in "$@"; do
    case "$arg" in
        --no-pycdlib) with_pycdlib=0 ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [[ -z "$out" ]] || usage; out="$arg" ;;
    esac
done
[[ -n "$out" ]] || usage

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PYTHON="$repo/.venv/bin/python"; else PYTHON=python3; fi
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage/kvmguest/guest"
# Not the project's kvmguest/__init__.py: the bundle must not depend on the agent side.
printf '"""kvmguest, guest side only (single-file bundle)."""\n' >"$stage/kvmguest/__init__.py"
cp "$repo"/src/kvmguest/guest/*.py "$repo"/src/kvmguest/guest/*.service "$stage/kvmguest/guest/"
rm -f "$stage/kvmguest/guest/__main__.py"

if [[ "$with_pycdlib" == 1 ]]; then
    pycdlib_dir="$("$PYTHON" -c 'import os, pycdlib; print(os.path.dirname(pycdlib.__file__))' 2>/dev/null)" || {
        echo "$0: pycdlib is not importable by $PYTHON (use --no-pycdlib to build without it)" >&2
        exit 1
    }
    # pycdlib is pure Python (LGPL-2.1): shipped unmodified, as its own package.
    mkdir -p "$stage/pycdlib"
    (cd "$pycdlib_dir" && find . -name '*.py' -exec cp --parents {} "$stage/pycdlib/" \;)
fi

cat >"$stage/__main__.py" <<'PY'
import sys

if sys.version_info < (3, 8):
    sys.exit("kvmguest-net-reconfig needs Python 3.8 or later")

from kvmguest.guest.netreconfig import main  # noqa: E402

sys.exit(main())
PY

mkdir -p "$(dirname "$out")"
tmp_out="$(dirname "$out")/.$(basename "$out").tmp"
"$PYTHON" -m zipapp "$stage" -o "$tmp_out" -p "/usr/bin/env python3" -c
chmod 0755 "$tmp_out"
mv -f "$tmp_out" "$out"
echo "$out"
