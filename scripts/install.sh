#!/bin/sh
# Build cachetta and install the binary and its systemd user unit.
#
#   scripts/install.sh                   ~/.local/bin/cachetta, ~/.config/systemd/user/cachetta.service
#   scripts/install.sh --prefix DIR      DIR/bin/cachetta, DIR/lib/systemd/user/cachetta.service
#   scripts/install.sh --binary PATH     install PATH instead of building (cargo build --release)
set -eu

usage() {
    sed -n '4,6s/^#  *//p' "$0"
}

prefix=""
binary=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a directory" >&2; exit 2; }
                  prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --binary) [ $# -ge 2 ] || { echo "install.sh: --binary needs a path" >&2; exit 2; }
                  binary=$2; shift 2 ;;
        --binary=*) binary=${1#--binary=}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "$binary" ]; then
    (cd "$repo" && cargo build --release)
    binary=${CARGO_TARGET_DIR:-$repo/target}/release/cachetta
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

if [ -n "$prefix" ]; then
    mkdir -p "$prefix"
    prefix=$(cd "$prefix" && pwd)
    bin_dir=$prefix/bin
    unit_dir=$prefix/lib/systemd/user
else
    : "${HOME:?install.sh: HOME is not set}"
    bin_dir=$HOME/.local/bin
    unit_dir=${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user
fi
case "$bin_dir" in
    *[[:space:]]*) echo "install.sh: $bin_dir contains white space, which a unit's ExecStart cannot hold unquoted; choose another --prefix" >&2; exit 2 ;;
esac

installed=$bin_dir/cachetta
unit=$unit_dir/cachetta.service
mkdir -p "$bin_dir" "$unit_dir"
# Copy then rename, so a running cachetta keeps its binary and never sees a half-written one.
cp "$binary" "$installed.new"
chmod 0755 "$installed.new"
mv -f "$installed.new" "$installed"

# systemd/cachetta.service is the one unit: scripts/package points it at /usr/bin/cachetta the
# same way. In a unit file `%` starts a specifier; in the sed replacement `\`, `|` and `&` are
# special.
unit_path=$(printf '%s' "$installed" | sed 's/%/%%/g; s/[\\|&]/\\&/g')
sed "s|%h/\.local/bin/cachetta|$unit_path|g" "$repo/systemd/cachetta.service" > "$unit.new"
mv -f "$unit.new" "$unit"

echo "installed $installed"
echo "installed $unit"
case ":${PATH:-}:" in
    *":$bin_dir:"*) ;;
    *) echo "note: $bin_dir is not on your PATH" ;;
esac
case "$unit_dir" in
    "${XDG_CONFIG_HOME:-${HOME:-/nonexistent}/.config}/systemd/user"|/usr/lib/systemd/user|/usr/local/lib/systemd/user|/etc/systemd/user) ;;
    *) echo "note: systemd does not look in $unit_dir; link the unit first: systemctl --user link $unit" ;;
esac
echo "mount ~/.cachetta now and at every login:"
echo "  systemctl --user daemon-reload && systemctl --user enable --now cachetta"
