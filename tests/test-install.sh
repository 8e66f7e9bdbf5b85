#!/bin/bash
# test-install.sh: installs loopd into a temporary DESTDIR and checks it is what a distribution ships and
# that it works installed: the exact file set, the unit, the bus and polkit policies, the man pages, bash
# completion, D-Bus activation of loopd from the installed activation file, and the desktop entry opening
# an ISO through `gio launch`. Runs as root; exits 1 if any check failed.
#
# `test-install.sh --package NAME` checks the Debian package NAME installed into / instead (tools/package-test
# runs it between `apt-get install ./loopd_*.deb` and `apt-get purge`): the same checks on the installed files,
# the file set being the regular files `dpkg -L NAME` lists (less /usr/share/doc/NAME/), which must be exactly
# the expected ones at Debian's paths (the unit in /lib/systemd/system, man pages gzipped), unchanged since
# they were unpacked (dpkg --verify). No build is needed.
# A TAP stream: one test point per check, a skip plan when it cannot run, which under CI=true is a
# failure instead.
#
# How the installed files are made to run without being installed into / (other engineers share this
# machine, and the build's prefix need not be /):
# - systemd-analyze verify runs on a copy of the installed unit whose ExecStart= has the DESTDIR prepended
#   (the original must name $libexecdir/loopd, which must exist in DESTDIR); the man pages of its
#   Documentation= are looked up in DESTDIR through MANPATH. A copy, rather than --root=DESTDIR, because
#   the unit's dependencies (dbus.socket, sysinit.target) come from the host's systemd.
# - D-Bus activation runs on a private system-like bus (<type>system</type>) that <include>s the installed
#   bus policy and whose <servicedir> holds the installed activation file with Exec= rewritten the same
#   way (DESTDIR prepended, --state-dir/--media-dir under the test's directory appended). The bus has no
#   <servicehelper>: the setuid dbus-daemon-launch-helper only reads the real system.conf and
#   /usr/share/dbus-1/system-services, so it cannot activate from a test directory; dbus-daemon, as root,
#   runs Exec= itself. The installed Name=, Exec= and its arguments are exercised as they are.
# - polkit reads actions only from /usr/share/polkit-1/actions: the policy is copied there (unless that
#   very file is already there) for pkaction, and removed right after.
set -uo pipefail

script=$(basename "$0")
build=${LOOPD_BUILD_ROOT:-}
package=""
case ${1:-} in
--package) package=${2:?--package needs a package name} ;;
"") ;;
*)
    echo "usage: $script [--package NAME]" >&2
    exit 2
    ;;
esac
# shellcheck source=tests/tap.sh
source "$(dirname "$0")/tap.sh"
# shellcheck source=tests/bash-complete.sh
source "$(dirname "$0")/bash-complete.sh"

say() { echo "# $*"; }
# Shows a command's output (indented) after a failed check.
show() { sed 's/^/#    /' "$@"; }
skip() {
    if [ "${CI:-}" = true ]; then
        echo "Bail out! cannot run, and CI=true must not skip: $*"
        exit 1
    fi
    echo "1..0 # SKIP $*"
    exit 0
}

[ -n "$build" ] || [ -n "$package" ] || die "LOOPD_BUILD_ROOT is not set (run this through meson test)"
[ "$(id -u)" -eq 0 ] || skip "not root: installing polkit actions, loop devices and mounts need root"
for tool in ${package:+dpkg} ${build:+meson} xmllint desktop-file-validate update-desktop-database systemd-analyze systemd-tmpfiles \
    man busctl dbus-daemon gdbus gio pkaction xorriso losetup partx sfdisk findmnt setpriv; do
    command -v "$tool" >/dev/null || skip "$tool is missing (tools/install-deps installs it)"
done
polkitd=/usr/lib/polkit-1/polkitd
bash_completion=/usr/share/bash-completion/bash_completion
[ -x "$polkitd" ] || skip "$polkitd is missing (tools/install-deps installs polkitd)"
[ -r "$bash_completion" ] || skip "$bash_completion is missing (tools/install-deps installs bash-completion)"
id nobody >/dev/null 2>&1 || skip "there is no user 'nobody' to call loopd as"

# Under tools/test, TMPDIR is its run directory: devices and mounts backed by it are told from others'.
work=$(mktemp -d "${TMPDIR:-/tmp}/loopd-test-install.XXXXXX") || die "cannot make a temporary directory"
chmod 0755 "$work" # nobody must reach the bus socket in it
dest="$work/dest"
[ -n "$package" ] && dest="" # the package's files are in /
state_dir="$work/state"
media_dir="$work/media"
mkdir -p "$state_dir" "$media_dir"

pids=()             # processes this script started (dbus-daemon, polkitd), by PID
loopd_pids=()       # loopd instances the bus activated for this test, by PID
policy_installed="" # the polkit policy file this script put into /usr/share/polkit-1/actions
completion_dev=""   # the loop device made for the completion check

# loopd instances activated on this test's bus: the bus names them (GetConnectionUnixProcessID), and as a
# fallback those whose command line names this test's state directory, which no one else uses.
our_loopds() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "--state-dir $state_dir " && echo "${p#/proc/}"
    done
}

# Stops a process that is not this shell's child: SIGTERM, then SIGKILL when it is still there after 10 s.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    timeout 10 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null
    return 0
}

cleanup() {
    set +e
    # Mounts and loop devices of images in $work: only ours.
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r target; do
        umount -l "$(printf '%b' "$target")"
    done
    losetup -nl -O NAME,BACK-FILE 2>/dev/null | awk -v w="$work/" 'index($2, w) == 1 { print $1 }' |
        while read -r dev; do
            partx -d "$dev" 2>/dev/null
            losetup -d "$dev"
        done
    for pid in "${loopd_pids[@]}" $(our_loopds); do
        stop_pid "$pid"
    done
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    [ -n "$policy_installed" ] && rm -f "$policy_installed"
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# The build's directories, from its configuration; for a package, Debian's.
option() {
    meson introspect --buildoptions "$build" |
        python3 -c '
import json, sys
print(next(o["value"] for o in json.load(sys.stdin) if o["name"] == sys.argv[1]))' "$1"
}
if [ -n "$package" ]; then
    dpkg-query -W -f='${Status}\n' "$package" 2>/dev/null | grep -qx 'install ok installed' ||
        die "the package $package is not installed"
    prefix=/usr bindir=/usr/bin sbindir=/usr/sbin libexecdir=/usr/libexec datadir=/usr/share mandir=/usr/share/man
    systemunitdir=/lib/systemd/system # Debian 12's packages (debian/rules moves it there)
    man_suffix=.gz                    # dh_compress
else
    prefix=$(option prefix) || die "cannot read the build's options with meson introspect"
    absolute() { case $1 in /*) echo "$1" ;; *) echo "$prefix/$1" ;; esac }
    bindir=$(absolute "$(option bindir)")
    sbindir=$(absolute "$(option sbindir)")
    libexecdir=$(absolute "$(option libexecdir)")
    datadir=$(absolute "$(option datadir)")
    mandir=$(absolute "$(option mandir)")
    systemunitdir=$prefix/lib/systemd/system
    man_suffix=""
fi

installed_loopd="$dest$libexecdir/loopd"
# What libfuse 2 drivers find in place of fusermount in loopd's sandbox, next to loopd.
installed_fusermount="$dest$libexecdir/loopd-fusermount"
installed_loopctl="$dest$bindir/loopctl"
installed_umount="$dest$sbindir/umount.loopd"
unit="$dest$systemunitdir/loopd.service"
activation="$dest$datadir/dbus-1/system-services/org.loopd1.service"
bus_policy="$dest$datadir/dbus-1/system.d/org.loopd1.conf"
polkit_policy="$dest$datadir/polkit-1/actions/org.loopd1.policy"
tmpfiles="$dest$prefix/lib/tmpfiles.d/loopd.conf"
desktop="$dest$datadir/applications/loopd-open.desktop"
completion="$dest$datadir/bash-completion/completions/loopctl"
zsh_completion="$dest$datadir/zsh/vendor-completions/_loopctl"
fish_completion="$dest$datadir/fish/vendor_completions.d/loopctl.fish"
man8="$dest$mandir/man8/loopd.8$man_suffix"
man1="$dest$mandir/man1/loopctl.1$man_suffix"
# The udev rule goes where udev.pc says (its udevdir is absolute, outside any prefix).
udev_rule="$dest$(pkg-config --variable=udevdir udev 2>/dev/null || echo "$prefix/lib/udev")/rules.d/90-loopd.rules"
man8_umount="$dest$mandir/man8/umount.loopd.8$man_suffix"
man5_dbus="$dest$mandir/man5/loopd.dbus.5$man_suffix"
interfaces="$dest$datadir/dbus-1/interfaces"
manager_xml="$interfaces/org.loopd1.Manager.xml"
device_xml="$interfaces/org.loopd1.Device.xml"

# --------------------------------------------------------------------------------------------------------
if [ -n "$package" ]; then
    say "the installed package $package ($(dpkg-query -W -f='${Version}' "$package"))"
    if dpkg --verify "$package" >"$work/verify-package.log" 2>&1 && [ ! -s "$work/verify-package.log" ]; then
        pass "dpkg --verify $package: every file is as the package unpacked it"
    else
        fail "dpkg --verify $package found changed or missing files:"
        show "$work/verify-package.log"
    fi
else
    say "meson install --destdir into $dest"
    if ! meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >"$work/install.log" 2>&1; then
        show "$work/install.log"
        die "meson install failed"
    fi
fi

expected=$(printf '%s\n' "$installed_loopd" "$installed_loopctl" "$unit" "$activation" "$bus_policy" \
    "$polkit_policy" "$tmpfiles" "$desktop" "$completion" "$man8" "$man1" "$udev_rule" \
    "$installed_umount" "$man8_umount" "$installed_fusermount" "$man5_dbus" "$manager_xml" "$device_xml" \
    "$zsh_completion" "$fish_completion" ${package:+"/usr/share/lintian/overrides/$package"} |
    sed "s|^$dest||" | sort)
if [ -n "$package" ]; then
    # Its regular files (not the directories, nor the copyright and changelog every package has); the
    # package adds its lintian overrides (debian/loopd.lintian-overrides) to what meson installs.
    actual=$(dpkg -L "$package" | while read -r f; do
        [ -f "$f" ] && [ ! -L "$f" ] && echo "$f"
    done | grep -v "^/usr/share/doc/$package/" | sort)
else
    actual=$(cd "$dest" && find . ! -type d | sed 's|^\.||' | sort)
fi
if [ "$expected" = "$actual" ]; then
    pass "the install is exactly the $(wc -l <<<"$expected") expected files"
else
    fail "the installed files differ from the expected set (-expected +installed):"
    diff <(echo "$expected") <(echo "$actual") | grep '^[<>]' | sed 's/^</#    -/; s/^>/#    +/'
fi

modes_ok=true
for f in $actual; do
    case $f in
    "${installed_loopd#$dest}" | "${installed_loopctl#$dest}" | "${installed_umount#$dest}" | \
        "${installed_fusermount#$dest}") want=755 ;;
    *) want=644 ;;
    esac
    mode=$(stat -c %a "$dest$f")
    [ "$mode" = "$want" ] || {
        modes_ok=false
        echo "#    $f has mode $mode, not $want"
    }
done
$modes_ok && pass "programs are 0755, everything else 0644, nothing setuid" ||
    fail "installed files have wrong modes"

if for f in "$unit" "$activation" "$man8" "$man1" "$man8_umount" "$man5_dbus"; do
    zcat -f "$f" | grep -n '@[A-Za-z_]*@' | sed "s|^|$f:|"
done | grep . >"$work/subst.log"; then
    fail "unsubstituted @VARIABLES@ in installed files:"
    show "$work/subst.log"
else
    pass "every @VARIABLE@ of the unit, the activation file and the man pages is substituted"
fi

# --------------------------------------------------------------------------------------------------------
say "the systemd unit"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
if [ "${exec_start%% *}" = "$libexecdir/loopd" ] && [ -x "$dest${exec_start%% *}" ]; then
    pass "ExecStart= runs the installed loopd ($exec_start)"
else
    fail "ExecStart= is '$exec_start', not the installed $libexecdir/loopd"
fi
mkdir -p "$work/verify"
sed "s|^ExecStart=/|ExecStart=$dest/|" "$unit" >"$work/verify/loopd.service"
if MANPATH="$dest$mandir" systemd-analyze verify "$work/verify/loopd.service" >"$work/verify.log" 2>&1 &&
    [ ! -s "$work/verify.log" ]; then
    pass "systemd-analyze verify: no complaints (ExecStart= binary and Documentation= man pages found)"
else
    fail "systemd-analyze verify complained:"
    show "$work/verify.log"
fi
grep -qx 'Type=dbus' "$unit" && grep -qx 'BusName=org.loopd1' "$unit" &&
    pass "the unit is Type=dbus with BusName=org.loopd1" ||
    fail "the unit is not Type=dbus, BusName=org.loopd1"
# What would give loopd a private mount namespace (its mounts and /dev/loop* nodes invisible to users) or
# a device allow-list (no /dev/loop-control, /dev/loop*, /dev/fuse).
forbidden=(ProtectSystem ProtectHome PrivateTmp PrivateDevices PrivateMounts PrivateNetwork PrivateUsers
    ProtectKernelLogs ProtectKernelTunables ProtectKernelModules ProtectControlGroups ProtectProc ProcSubset
    ReadOnlyPaths ReadWritePaths InaccessiblePaths ExecPaths NoExecPaths TemporaryFileSystem BindPaths
    BindReadOnlyPaths MountFlags RootDirectory RootImage MountAPIVFS DynamicUser ProtectClock DeviceAllow
    DevicePolicy)
if grep -En "^($(IFS='|' && echo "${forbidden[*]}"))=" "$unit" >"$work/forbidden.log"; then
    fail "the unit sets what gives loopd a private mount namespace or a device allow-list:"
    show "$work/forbidden.log"
else
    pass "the unit has no private mount namespace and no device allow-list"
fi
lacking=""
for want in NoNewPrivileges=yes 'RestrictAddressFamilies=AF_UNIX AF_NETLINK' LockPersonality=yes \
    MemoryDenyWriteExecute=yes SystemCallArchitectures=native KillMode=process; do
    grep -qx "$want" "$unit" || lacking+=" '$want'"
done
caps=$(sed -n '/^CapabilityBoundingSet=/,/[^\\]$/p' "$unit" | tr -d '\\\n' | sed 's/^CapabilityBoundingSet=//' |
    tr -s ' ' '\n' | sed '/^$/d' | sort | paste -sd' ')
# CAP_KILL and CAP_SETPCAP: loopd stops the sandboxed processes that run as its callers, and the sandbox
# drops its bounding set.
[ "$caps" = "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_KILL CAP_MKNOD CAP_SETGID CAP_SETPCAP CAP_SETUID CAP_SYS_ADMIN" ] ||
    lacking+=" 'CapabilityBoundingSet= exactly the ten capabilities loopd uses (has: $caps)'"
grep -qx 'RestrictNamespaces=mnt pid net ipc uts' "$unit" ||
    lacking+=" 'RestrictNamespaces= exactly the sandbox'\''s namespaces'"
[ -z "$lacking" ] &&
    pass "the unit's hardening: NoNewPrivileges, CapabilityBoundingSet, RestrictAddressFamilies," \
        "LockPersonality, MemoryDenyWriteExecute, SystemCallArchitectures; KillMode=process" ||
    fail "the unit lacks$lacking"

mkdir -p "$work/tmpfiles-root"
if systemd-tmpfiles --root="$work/tmpfiles-root" --create "$tmpfiles" >"$work/tmpfiles.log" 2>&1 &&
    [ "$(stat -c '%a %U' "$work/tmpfiles-root/run/media" 2>/dev/null)" = "755 root" ]; then
    pass "the tmpfiles.d entry creates /run/media, 0755 root"
else
    fail "systemd-tmpfiles --create with the installed entry did not make /run/media 0755 root:"
    show "$work/tmpfiles.log"
fi

# --------------------------------------------------------------------------------------------------------
say "the D-Bus activation file and bus policy, the polkit policy"
act_exec=$(sed -n 's/^Exec=//p' "$activation")
if grep -qx 'Name=org.loopd1' "$activation" && grep -qx 'User=root' "$activation" &&
    grep -qx 'SystemdService=loopd.service' "$activation" && [ -f "$unit" ] &&
    [ "${act_exec%% *}" = "$libexecdir/loopd" ] && [ -x "$dest${act_exec%% *}" ]; then
    pass "activation file: Name=org.loopd1, User=root, SystemdService= the installed loopd.service," \
        "Exec= the installed loopd"
else
    fail "the activation file is not Name=org.loopd1, User=root, SystemdService=loopd.service," \
        "Exec=$libexecdir/loopd:"
    show "$activation"
fi

if xmllint --noout --nonet "$bus_policy" 2>"$work/xml.log"; then
    pass "xmllint: the bus policy is well-formed (no busconfig DTD offline; dbus-daemon parses it below)"
else
    fail "xmllint: the bus policy is not well-formed:"
    show "$work/xml.log"
fi
# The DTD comes from polkitd's XML catalog (/etc/xml/catalog), not the network.
if xmllint --noout --nonet --valid "$polkit_policy" 2>"$work/xml.log"; then
    pass "xmllint --valid: the polkit policy is valid against polkit's DTD"
else
    fail "xmllint --valid: the polkit policy is not valid against polkit's DTD:"
    show "$work/xml.log"
fi

# --------------------------------------------------------------------------------------------------------
say "the desktop entry"
if desktop-file-validate "$desktop" >"$work/desktop.log" 2>&1 && [ ! -s "$work/desktop.log" ]; then
    pass "desktop-file-validate: no errors, warnings or hints"
else
    fail "desktop-file-validate complained:"
    show "$work/desktop.log"
fi
grep -qx 'Exec=loopctl open --show %f' "$desktop" && pass "the entry runs 'loopctl open --show %f'" ||
    fail "the entry's Exec= is not 'loopctl open --show %f': $(grep '^Exec=' "$desktop")"
unclaimed=""
for type in application/x-raw-disk-image application/x-cd-image application/x-iso9660-image \
    application/vnd.efi.img application/vnd.efi.iso; do
    grep -qE "^MimeType=(.*;)?$type;" "$desktop" || unclaimed+=" $type"
done
[ -z "$unclaimed" ] &&
    pass "the entry claims raw disk images and ISOs (x-raw-disk-image, x-cd-image, x-iso9660-image," \
        "vnd.efi.img, vnd.efi.iso)" ||
    fail "the entry does not claim$unclaimed"

# --------------------------------------------------------------------------------------------------------
say "the man pages"
loopd_help=$("$installed_loopd" --help) || fail "the installed loopd --help failed"
loopctl_help=$("$installed_loopctl" --help) || fail "the installed loopctl --help failed"
for page in "$man8" "$man1" "$man8_umount" "$man5_dbus"; do
    name=$(basename "$page" .gz)
    if MANWIDTH=80 MANPAGER=cat PAGER=cat man -l --warnings "$page" >"$work/$name.txt" 2>"$work/$name.err" &&
        [ ! -s "$work/$name.err" ] && grep -q '^NAME' "$work/$name.txt"; then
        pass "man -l --warnings renders $name without warnings"
    else
        fail "man -l --warnings on $name:"
        show "$work/$name.err"
    fi
done
# Every option and command the programs know has an entry of its own: a tagged paragraph that starts with
# it, not a mere mention in the synopsis.
documented() { grep -qE -- "^ +(-[a-zA-Z], )?$2( |,|\$)" "$1"; }
missing=""
for opt in $(grep -oE -- '--[a-z][a-z-]*' <<<"$loopd_help" | sort -u); do
    documented "$work/loopd.8.txt" "$opt" || missing+=" loopd $opt"
done
for opt in $(grep -oE -- '--[a-z][a-z-]*' <<<"$loopctl_help" | sort -u); do
    documented "$work/loopctl.1.txt" "$opt" || missing+=" loopctl $opt"
done
commands=$(sed -n '/^Commands:/,/^$/p' <<<"$loopctl_help" | awk '/^  [a-z]/ { print $1 }')
[ -n "$commands" ] || fail "cannot find the commands in loopctl --help"
for cmd in $commands; do
    grep -qE "^       $cmd( |$)" "$work/loopctl.1.txt" || missing+=" loopctl-command:$cmd"
done
[ -z "$missing" ] &&
    pass "every option of loopd --help and every option and command of loopctl --help is in the man pages" ||
    fail "undocumented in the man pages:$missing"

# --------------------------------------------------------------------------------------------------------
say "the D-Bus interface files and loopd.dbus(5)"
# (The introspect suite checks the files against what loopd exports; here: they are installed as they are
# in the source tree, and the man page has an entry for each of their members and for nothing else.)
source_root=${LOOPD_SOURCE_ROOT:-$(dirname "$0")/..}
xml_ok=true
for xml in "$manager_xml" "$device_xml"; do
    if ! xmllint --noout --nonet "$xml" 2>"$work/xmllint.log"; then
        xml_ok=false
        show "$work/xmllint.log"
    fi
    cmp -s "$xml" "$source_root/dbus/$(basename "$xml")" || {
        xml_ok=false
        echo "#    $xml differs from dbus/$(basename "$xml")"
    }
done
$xml_ok && pass "the interface files are well-formed XML, installed as they are in dbus/" ||
    fail "the installed interface files are not what dbus/ holds"
# "method Attach", "property Device", "signal Mounted": the members of the installed files, sorted.
xml_members=$(python3 -c '
import sys, xml.etree.ElementTree as ET
for path in sys.argv[1:]:
    for iface in ET.parse(path).getroot().iter("interface"):
        for kind in ("method", "property", "signal"):
            for m in iface.iter(kind):
                print(kind, m.get("name"))' "$manager_xml" "$device_xml" | sort)
# The entries of loopd.dbus(5)'s member sections: tagged paragraphs "Name(args)..." (methods, signals) or
# "Name type" (properties) at the tag indent.
man_members=$(awk '
    /^METHODS OF/ { kind = "method"; next }
    /^SIGNALS OF/ { kind = "signal"; next }
    /^PROPERTIES OF/ { kind = "property"; next }
    /^[A-Z]/ { kind = "" }
    kind == "property" && /^       [A-Z][A-Za-z]* [a-z({][a-z(){}]*$/ { print kind, $1 }
    (kind == "method" || kind == "signal") && /^       [A-Z][A-Za-z]*\(/ { sub(/\(.*/, "", $1); print kind, $1 }
' "$work/loopd.dbus.5.txt" | sort)
if [ -n "$xml_members" ] && [ "$xml_members" = "$man_members" ]; then
    pass "loopd.dbus(5) has an entry for each of the $(wc -l <<<"$xml_members") methods, properties and" \
        "signals of the interface files, and for nothing else"
else
    fail "loopd.dbus(5) and the interface files differ (-only in the XML +only in the man page):"
    diff <(echo "$xml_members") <(echo "$man_members") | grep '^[<>]' | sed 's/^</#    -/; s/^>/#    +/'
fi
grep -q 'loopd\.dbus(5)' "$work/loopd.8.txt" && pass "loopd(8) refers to loopd.dbus(5)" ||
    fail "loopd(8) does not refer to loopd.dbus(5)"

# --------------------------------------------------------------------------------------------------------
say "umount.loopd, the umount(8) helper"
# libmount runs /sbin/umount.<uhelper> (FS_SEARCH_PATH "/sbin:/sbin/fs.d:/sbin/fs"); /usr/sbin is /sbin on a
# merged /usr. Only a build for /usr puts it there.
if [ "$prefix" = /usr ]; then
    case $sbindir in
    /sbin | /usr/sbin) pass "umount.loopd is installed to $sbindir, where libmount looks for umount helpers" ;;
    *) fail "umount.loopd is installed to $sbindir, where libmount does not look (want /sbin or /usr/sbin)" ;;
    esac
else
    say "prefix $prefix: umount.loopd goes to $sbindir, which libmount does not search (a build for /usr does)"
fi
umount_out=$("$installed_umount" 2>&1)
umount_status=$?
[ "$umount_status" -eq 1 ] && grep -q '^umount.loopd: no target given' <<<"$umount_out" &&
    pass "the installed umount.loopd without a target says so and exits 1, as umount(8) does for bad usage" ||
    fail "umount.loopd without a target: exit $umount_status, '$umount_out'"
umount_out=$(DBUS_SYSTEM_BUS_ADDRESS="unix:path=$work/no-such-bus" "$installed_umount" /run/media/x/y 2>&1)
umount_status=$?
[ "$umount_status" -eq 2 ] && grep -q '^umount.loopd: /run/media/x/y: cannot connect to the system bus' <<<"$umount_out" &&
    pass "umount.loopd without a bus fails in one line, exit 2" ||
    fail "umount.loopd without a bus: exit $umount_status, '$umount_out'"

# --------------------------------------------------------------------------------------------------------
say "bash completion"
# A loop device with a partition, set up here, so that there is something to complete.
truncate -s 8M "$work/completion.img"
printf 'label: gpt\n,,L\n' | sfdisk -q "$work/completion.img" >/dev/null 2>&1
completion_dev=$(losetup --find --show "$work/completion.img" 2>"$work/losetup.log")
if [ -z "$completion_dev" ]; then
    fail "cannot set up a loop device for the completion check:"
    show "$work/losetup.log"
else
    partx -a "$completion_dev" 2>/dev/null
    [ -b "${completion_dev}p1" ] || fail "partx -a made no ${completion_dev}p1 for the completion check"
fi
# complete LINE: what completing the last word of LINE offers, one a line, in a bash with bash-completion
# loaded as an interactive shell would. The words are split as readline splits them (at blanks and '=').
complete_line() { bash_complete "$bash_completion" "$completion" "$1"; }
check_completion() { # LINE, the words expected (all of them), the words that must not be offered
    local line=$1 want=$2 unwanted=${3:-} got w bad=""
    got=$(complete_line "$line" | sort -u)
    for w in $want; do grep -qxF -- "$w" <<<"$got" || bad+=" missing $w;"; done
    for w in $unwanted; do grep -qxF -- "$w" <<<"$got" && bad+=" offered $w;"; done
    if [ -z "$bad" ]; then
        pass "completion of '$line' offers $want"
    else
        fail "completion of '$line':$bad got: $(echo $got)"
    fi
}
# bash-completion loads it on demand from the installed place ($datadir/bash-completion/completions of a
# directory in XDG_DATA_DIRS), as it does for a command it has no completion for yet.
if XDG_DATA_DIRS="$dest$datadir" bash --norc --noprofile -c '
    source "$0" && __load_completion loopctl && complete -p loopctl' "$bash_completion" \
    >"$work/load.log" 2>&1 && grep -q -- '-F _loopctl loopctl' "$work/load.log"; then
    pass "bash-completion loads the installed completion for loopctl on demand"
else
    fail "bash-completion does not find the installed completion for loopctl:"
    show "$work/load.log"
fi
check_completion "loopctl " "attach detach list partitions mount unmount open close monitor"
check_completion "loopctl --json l" "list" "attach"
check_completion "loopctl list --j" "--json"
check_completion "loopctl attach --" \
    "--read-only --offset --size --sector-size --no-partscan --autoclear --json --no-ask-password" \
    "--writable --unmount"
check_completion "loopctl open --" "--writable --sector-size" "--read-only --autoclear"
check_completion "loopctl attach --sector-size=" "0 512 1024 2048 4096"
check_completion "loopctl detach --u" "--unmount"
# --fstype: what loopd mounts, not every type the kernel knows.
check_completion "loopctl mount --fstype " "ext4 vfat iso9660 squashfs" "sysfs proc cgroup tmpfs"
# IMAGE: image files (and directories), not every file, when there are images.
mkdir -p "$work/images/sub" && touch "$work/images/disk.img" "$work/images/cd.iso" "$work/images/notes.txt"
pushd "$work/images" >/dev/null
check_completion "loopctl attach " "disk.img cd.iso sub" "notes.txt"
check_completion "loopctl open --writable " "disk.img cd.iso" "notes.txt"
popd >/dev/null
if [ -n "$completion_dev" ]; then
    check_completion "loopctl detach " "$completion_dev"
    check_completion "loopctl --json partitions /dev/lo" "$completion_dev"
    check_completion "loopctl mount " "$completion_dev ${completion_dev}p1"
    # Only bound loop devices: every device offered is one.
    stray=""
    for d in $(complete_line "loopctl partitions "); do
        [ -e "/sys/block/${d#/dev/}/loop/backing_file" ] || stray+=" $d"
    done
    [ -z "$stray" ] && pass "completion offers only bound loop devices" ||
        fail "completion offers unbound devices:$stray"
    partx -d "$completion_dev" 2>/dev/null
    [ "$(losetup -nO BACK-FILE "$completion_dev")" = "$work/completion.img" ] && losetup -d "$completion_dev"
fi

# --------------------------------------------------------------------------------------------------------
say "a private system-like bus with the installed bus policy and activation file"
mkdir -p "$work/services"
act_path=${act_exec%% *}
act_args=${act_exec#"$act_path"}
printf '%s\n' "[D-BUS Service]" >"$work/services/org.loopd1.service"
sed -n '/^\[D-BUS Service\]/d; /^Exec=/!p' "$activation" >>"$work/services/org.loopd1.service"
echo "Exec=$dest$act_path$act_args --state-dir $state_dir --media-dir $media_dir" \
    >>"$work/services/org.loopd1.service"
bus_socket="$work/bus"
cat >"$work/bus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$bus_socket</listen>
  <auth>EXTERNAL</auth>
  <servicedir>$work/services</servicedir>
  <!-- Debian's system.conf defaults: deny owning and calling, allow replies, signals and the bus. -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <!-- polkitd runs as root here, not as the polkitd user its own policy names -->
  <policy user="root">
    <allow own="org.freedesktop.PolicyKit1"/>
  </policy>
  <!-- <include>, not <includedir>: a file that does not parse stops the bus instead of being skipped -->
  <include>$bus_policy</include>
  <include ignore_missing="yes">/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
</busconfig>
EOF
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$bus_socket"
coproc BUS {
    exec dbus-daemon --config-file="$work/bus.conf" --nofork --nopidfile --print-address=1 2>"$work/dbus.log"
}
pids+=("$BUS_PID")
bus_address=""
read -r -t 30 bus_address <&"${BUS[0]}"
if [ -z "$bus_address" ]; then
    show "$work/dbus.log"
    die "dbus-daemon did not start with the installed bus policy"
fi
pass "dbus-daemon runs with the installed bus policy included"
address="unix:path=$bus_socket"
bus() { busctl --address="$address" "$@"; }
as_nobody() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }

if as_nobody busctl --address="$address" call org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus RequestName su org.loopd1 0 >"$work/own.log" 2>&1; then
    fail "the bus policy lets an unprivileged user own org.loopd1"
else
    grep -qiE 'AccessDenied|access denied|not allowed to own' "$work/own.log" &&
        pass "the bus policy refuses org.loopd1 to an unprivileged user" ||
        { fail "owning org.loopd1 as nobody failed, but not with AccessDenied:"; show "$work/own.log"; }
fi

# --------------------------------------------------------------------------------------------------------
say "pkaction after a real install of the polkit policy"
actions_dir=/usr/share/polkit-1/actions
system_policy="$actions_dir/org.loopd1.policy"
if [ -e "$system_policy" ]; then
    if cmp -s "$system_policy" "$polkit_policy"; then
        say "$system_policy is already installed (the same file): using it, leaving it"
    else
        fail "$system_policy is already installed and differs from this build's; not touching it"
    fi
else
    install -m 0644 "$polkit_policy" "$system_policy" && policy_installed="$system_policy"
fi
DBUS_SYSTEM_BUS_ADDRESS="$address" "$polkitd" --no-debug >"$work/polkitd.log" 2>&1 &
polkitd_pid=$!
pids+=("$polkitd_pid")
if ! DBUS_SYSTEM_BUS_ADDRESS="$address" timeout 40 \
    gdbus wait --system --timeout 30 org.freedesktop.PolicyKit1; then
    fail "polkitd did not appear on the bus:"
    show "$work/polkitd.log"
else
    for action in "org.loopd1.attach auth_admin auth_admin yes" \
        "org.loopd1.mount auth_admin auth_admin yes" \
        "org.loopd1.modify auth_admin auth_admin yes" \
        "org.loopd1.open-image auth_admin auth_admin auth_admin" \
        "org.loopd1.manage-others auth_admin_keep auth_admin_keep auth_admin_keep"; do
        read -r id any inactive active <<<"$action"
        if DBUS_SYSTEM_BUS_ADDRESS="$address" pkaction --action-id "$id" --verbose \
            >"$work/pkaction.log" 2>&1 &&
            grep -qE "^ *implicit any: *$any\$" "$work/pkaction.log" &&
            grep -qE "^ *implicit inactive: *$inactive\$" "$work/pkaction.log" &&
            grep -qE "^ *implicit active: *$active\$" "$work/pkaction.log" &&
            grep -qE '^ *description: *[^ ]' "$work/pkaction.log"; then
            pass "pkaction --action-id $id --verbose: implicit $any / $inactive / $active"
        else
            fail "pkaction --action-id $id --verbose did not show implicit $any / $inactive / $active:"
            show "$work/pkaction.log"
        fi
    done
fi
stop_pid "$polkitd_pid"
wait "$polkitd_pid" 2>/dev/null
if [ -n "$policy_installed" ]; then
    rm -f "$policy_installed"
    policy_installed=""
fi

# --------------------------------------------------------------------------------------------------------
say "D-Bus activation of loopd from the installed activation file"
name_has_owner() {
    bus call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus NameHasOwner s org.loopd1
}
loopd_pid() {
    bus call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus \
        GetConnectionUnixProcessID s org.loopd1 2>/dev/null | awk '$1 == "u" { print $2 }'
}
if [ "$(name_has_owner)" != "b false" ]; then
    fail "org.loopd1 has an owner before anyone called it"
elif as_nobody busctl --address="$address" call org.loopd1 /org/loopd1 org.loopd1.Manager ListDevices \
    >"$work/activation.log" 2>&1 && grep -q '^a(sosttubbbu) ' "$work/activation.log"; then
    pid=$(loopd_pid)
    loopd_pids+=($pid)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe")" = "$installed_loopd" ]; then
        pass "busctl call ListDevices (as nobody) activated the installed loopd (pid $pid) and got an answer"
    else
        fail "ListDevices was answered, but not by the installed loopd" \
            "(pid '${pid:-}', $(readlink "/proc/${pid:-0}/exe"))"
    fi
    stop_pid "$pid"
    [ "$(name_has_owner)" = "b false" ] && pass "loopd (pid $pid) was stopped by its PID and left the bus" ||
        fail "org.loopd1 still has an owner after loopd (pid $pid) was stopped"
else
    fail "busctl call ListDevices did not activate loopd:"
    show "$work/activation.log" "$work/dbus.log"
fi

# --------------------------------------------------------------------------------------------------------
say "gio launch of the installed desktop entry with an ISO, in an isolated XDG environment"
mkdir -p "$work/iso-root" && echo "loopd install test" >"$work/iso-root/README.TXT"
iso="$work/test.iso"
xorriso -as mkisofs -quiet -V LOOPD_INSTALL -o "$iso" "$work/iso-root" >"$work/xorriso.log" 2>&1 ||
    { show "$work/xorriso.log"; die "cannot make the test ISO"; }
xdg="$work/xdg"
mkdir -p "$xdg"/{home,config,cache,data,runtime,share/applications}
chmod 0700 "$xdg/runtime"
# The entry is found for a MIME type through mimeinfo.cache, which a distribution's trigger builds after
# a package install: the same, on a copy, here.
cp "$desktop" "$xdg/share/applications/"
update-desktop-database "$xdg/share/applications"
in_xdg() {
    env -i PATH="$dest$bindir:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" LANG=C.UTF-8 \
        HOME="$xdg/home" XDG_CONFIG_HOME="$xdg/config" XDG_CACHE_HOME="$xdg/cache" \
        XDG_DATA_HOME="$xdg/data" XDG_RUNTIME_DIR="$xdg/runtime" XDG_DATA_DIRS="$xdg/share:/usr/share" \
        XDG_CONFIG_DIRS=/etc/xdg DBUS_SYSTEM_BUS_ADDRESS="$address" \
        ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" "$@"
}
type=$(in_xdg gio info -a standard::content-type "$iso" | sed -n 's/^ *standard::content-type: //p')
[ "$type" = application/x-cd-image ] && pass "the ISO is $type" ||
    fail "gio sees the ISO as '$type', not application/x-cd-image"
in_xdg gio mime "$type" >"$work/mime.log" 2>&1
grep -qP '^\tloopd-open.desktop$' "$work/mime.log" && pass "loopd-open.desktop is registered for $type" ||
    { fail "loopd-open.desktop is not registered for $type:"; show "$work/mime.log"; }

if ! in_xdg gio launch "$desktop" "$iso" >"$work/launch.log" 2>&1; then
    fail "gio launch failed:"
    show "$work/launch.log"
fi
# gio launch returns once loopctl runs; loopctl returns once loopd answered MountImage.
device="" target=""
deadline=$((SECONDS + 120))
while [ $SECONDS -lt $deadline ]; do
    device=$(losetup -nO NAME -j "$iso" 2>/dev/null | head -n1)
    [ -n "$device" ] && target=$(findmnt -rn -S "$device" -o TARGET 2>/dev/null | head -n1)
    [ -n "$target" ] && break
    grep -q '^loopctl: ' "$work/launch.log" && break # it failed: no point waiting
    sleep 0.2
done
if [ -n "$target" ]; then
    target=$(printf '%b' "$target")
    options=$(findmnt -rn -S "$device" -o OPTIONS | head -n1)
    case "$target" in
    "$media_dir"/root/*) pass "the ISO was attached as $device and mounted at $target" ;;
    *) fail "the ISO was mounted at $target, not under $media_dir/root/" ;;
    esac
    [[ ",$options," == *,nosuid,* && ",$options," == *,nodev,* ]] && pass "the mount is nosuid,nodev" ||
        fail "the mount's options are $options, without nosuid,nodev"
    [ "$(cat "$target/README.TXT" 2>/dev/null)" = "loopd install test" ] &&
        pass "the ISO's file reads back through the mount" || fail "$target/README.TXT does not read back"
    check_completion "loopctl unmount " "$device $target"
    sed 's/^/#    loopctl: /' "$work/launch.log"
else
    fail "gio launch did not get the ISO mounted (device '${device:-none}'); loopctl said:"
    show "$work/launch.log"
    tail -n 20 "$work/dbus.log" | show
fi

if [ -n "$device" ]; then
    if in_xdg loopctl close "$iso" >"$work/close.log" 2>&1; then
        pass "loopctl close $iso"
    else
        fail "loopctl close $iso failed:"
        show "$work/close.log"
    fi
    [ -z "$(findmnt -rn -S "$device" 2>/dev/null)" ] && [ ! -e "${target:-/nonexistent}" ] &&
        pass "nothing of $device is mounted and the mount point is gone" ||
        fail "after close, $device is still mounted or ${target:-its mount point} remains"
    [ -z "$(losetup -nO NAME -j "$iso" 2>/dev/null)" ] && pass "the ISO is no longer attached" ||
        fail "after close, the ISO is still attached: $(losetup -nO NAME -j "$iso")"
fi
pid=$(loopd_pid)
if [ -n "$pid" ]; then
    loopd_pids+=($pid)
    stop_pid "$pid"
fi

# --------------------------------------------------------------------------------------------------------
tap_finish
