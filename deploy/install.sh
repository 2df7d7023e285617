#!/bin/sh
# Blindpost's one installer, for the gateway: the installation runbook, the upgrade runbook,
# the container image (deploy/container/Containerfile) and the tests all run this script,
# so none of them can install differently.
#
#   install.sh [--prefix DIR] [--python PYTHON] [--switch] PACKAGE
#       Install a release (blindpost-VERSION-py3-none-any.whl or blindpost-VERSION.tar.gz,
#       from `make dist`) with its server extra into DIR/releases/VERSION, a virtual
#       environment of its own. The first release installed becomes current; a later one
#       only with --switch (an upgrade migrates the database with the new release first:
#       deploy/runbooks/upgrade.md).
#   install.sh [--prefix DIR] switch VERSION
#       Point DIR/current at DIR/releases/VERSION in one atomic rename: upgrade and
#       rollback are the same step. Restart the services afterwards.
#   install.sh [--prefix DIR] list
#       The installed releases, the current one marked with '*'.
#
# DIR is --prefix, else $BLINDPOST_PREFIX, else /opt/blindpost. The systemd units and the
# image run DIR/current/bin/blindpost; each install leaves this script as DIR/install.sh. A release directory is never moved or renamed once
# installed: a virtual environment's scripts name its interpreter by absolute path.
set -eu

prefix=${BLINDPOST_PREFIX:-/opt/blindpost}
python=python3
switch=no

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
        --switch) switch=yes; shift ;;
        -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        --) shift; break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || die "name a package to install, or 'switch VERSION' or 'list' (see --help)"
case $prefix in /*) ;; *) prefix=$(pwd)/$prefix ;; esac
releases=$prefix/releases

current_version() {
    link=$(readlink "$prefix/current" 2>/dev/null) || return 0
    basename "$link"
}

do_switch() {
    version=$1
    [ -f "$releases/$version/.installed" ] ||
        die "no complete release $version in $releases (installed: $(ls "$releases" 2>/dev/null | tr '\n' ' '))"
    # A new symlink renamed over the old one: a service starting at any moment sees either
    # the old release or the new one, never no release.
    ln -sfn "releases/$version" "$prefix/.current.new"
    mv -T "$prefix/.current.new" "$prefix/current"
    echo "current -> releases/$version"
}

case $1 in
    switch)
        [ $# -eq 2 ] || die "usage: install.sh [--prefix DIR] switch VERSION"
        do_switch "$2"
        exit 0 ;;
    list)
        now=$(current_version)
        for dir in "$releases"/*/; do
            [ -f "$dir.installed" ] || continue
            name=$(basename "$dir")
            if [ "$name" = "$now" ]; then echo "* $name"; else echo "  $name"; fi
        done
        exit 0 ;;
esac

[ $# -eq 1 ] || die "install one package at a time"
package=$1
[ -f "$package" ] || die "no such package: $package"
case $package in /*) ;; *) package=$(pwd)/$package ;; esac
# The version is in the file name (the wheel's name is specified; the sdist's is what
# `make dist` writes), so the release directory is known before anything is installed.
file=$(basename "$package")
case $file in
    blindpost-*-py3-none-any.whl) version=${file#blindpost-}; version=${version%%-*} ;;
    blindpost-*.tar.gz) version=${file#blindpost-}; version=${version%.tar.gz} ;;
    *) die "$file is not a Blindpost release (blindpost-VERSION-py3-none-any.whl or blindpost-VERSION.tar.gz)" ;;
esac
target=$releases/$version

if [ -f "$target/.installed" ]; then
    die "release $version is already installed in $target (switch to it: install.sh switch $version)"
fi
# A directory without the marker is what a failed install left: start it over.
rm -rf "$target"
mkdir -p "$releases"
umask 022
"$python" -m venv "$target"
"$target/bin/pip" install --quiet --disable-pip-version-check "$package[server]"
# Compiled now, so a read-only root (the image, ProtectSystem=strict) starts just as fast.
"$target/bin/python" -m compileall -q "$target/lib" >/dev/null
installed=$("$target/bin/blindpost" version)
[ "$installed" = "blindpost $version" ] ||
    die "$file installed as '$installed', not blindpost $version: left in $target, not switched"
touch "$target/.installed"
# This script stays with the releases, so switching back needs nothing from a release's files.
cp "$0" "$prefix/.install.sh.new" && chmod 0755 "$prefix/.install.sh.new" &&
    mv -f "$prefix/.install.sh.new" "$prefix/install.sh"
echo "installed blindpost $version in $target"

if [ "$switch" = yes ] || [ -z "$(current_version)" ]; then
    do_switch "$version"
else
    echo "current is still $(current_version); migrate, then: install.sh --prefix $prefix switch $version"
fi
