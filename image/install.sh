#!/bin/sh
# Installs the project into the image's virtualenv, offline, from wheels only. The Dockerfile's final
# stage runs this script and image/build.py runs it chrooted into its Debian root filesystem, so both
# make the same /opt/computedomain.
#
# usage: install.sh WHEEL_DIR LOCK_FILE
#   WHEEL_DIR holds a wheel for every pin of LOCK_FILE (image/requirements.txt) and the project's wheel.
set -eu

wheels=$1
lock=$2
venv=/opt/computedomain

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_NO_INPUT=1
# Bytecode comes from compileall below only: Debian's pip imports some of what it has just installed,
# which would otherwise leave mtime-stamped pycs of those modules behind.
export PYTHONDONTWRITEBYTECODE=1

# No pip in the virtualenv: nothing installs packages at run time. Debian's own pip wheel (which
# python3-venv brings for ensurepip) runs once from its archive instead.
python3 -m venv --without-pip "$venv"
set -- /usr/share/python-wheels/pip-*.whl
[ $# -eq 1 ] && [ -f "$1" ] || { echo "install.sh: expected one pip wheel in /usr/share/python-wheels" >&2; exit 1; }
pip="$1/pip"
run_pip() { "$venv/bin/python" "$pip" "$@"; }

# Exactly the lock, checked against its hashes; --no-deps because the lock already holds every
# transitive dependency, and `pip check` below proves it.
run_pip install --no-index --find-links "$wheels" --no-deps --require-hashes --no-compile -r "$lock"
run_pip install --no-index --find-links "$wheels" --no-deps --no-compile computedomain-operator
run_pip check

# Bytecode is compiled here because the chart mounts the root filesystem read-only (and the image sets
# PYTHONDONTWRITEBYTECODE): without it every start would compile every module again. Unchecked hash
# pycs never look at a source's mtime, which the layer's fixed timestamps would otherwise invalidate,
# and nothing in the image ever edits a source.
"$venv/bin/python" -m compileall -q -f --invalidation-mode unchecked-hash "$venv/lib"
