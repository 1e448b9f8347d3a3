# Sourced by scripts/demo and scripts/test: everything a fresh machine needs, installed once.
#   - the Debian packages named in DEBIAN_PACKAGES (when missing, and we may install them);
#   - a virtual environment in .venv (or $SSLSOCKET_VENV, or .venv-X.Y for PYTHON=...) with sslsocket and the
#     extras in EXTRAS.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Another Python (PYTHON=...) gets a virtual environment of its own: .venv-3.12 and so on.
if [ -n "${PYTHON:-}" ] && [ -z "${SSLSOCKET_VENV:-}" ]; then
    venv=$root/.venv-$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
else
    venv=${SSLSOCKET_VENV:-$root/.venv}
fi

missing=()
for package in ${DEBIAN_PACKAGES:-}; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "Installing Debian packages: ${missing[*]}" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.sslsocket-installed-${EXTRAS:-base}"
if [ ! -e "$stamp" ] || [ "$root/setup.cfg" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root${EXTRAS:+[$EXTRAS]}"
    touch "$stamp"
fi
