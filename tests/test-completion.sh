#!/bin/bash
# test-completion.sh: the shell completions of loopctl in the source tree (shell-completion/), in bash (with
# bash-completion and without), zsh and fish, checked against what the built loopctl says it takes: its
# commands (loopctl --help), each command's options (loopctl COMMAND --help), the filesystem types loopd
# mounts (daemon/mount.c) and the values the help lists; image files from a scratch directory.
# A TAP stream; a shell that is missing is a skip, which under CI=true is a failure instead. Needs no root:
# loop devices and their mounts are made up in a private user and mount namespace (see in_world).
#
# How each shell is asked, as its interactive completion would be:
# - bash: bash-completion's bash_completion and the file sourced, COMP_WORDS/COMP_CWORD split as readline
#   splits them (at blanks and '='), _loopctl called, COMPREPLY printed.
# - zsh: the completion system only runs inside the line editor, so a zsh runs interactively on a pty
#   (zsh/zpty), with compinit and the source tree first in $fpath; a compadd wrapper writes every match the
#   completion functions add to a file, the line is typed with a TAB, and a comppostfuncs hook ends it.
# - fish: `complete -C LINE` after sourcing the file.
set -uo pipefail
export LC_ALL=C # one sort order for sort and comm

source_root=${LOOPD_SOURCE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
loopctl=${LOOPCTL_BINARY:-}
# shellcheck source=tests/tap.sh
source "$(dirname "$0")/tap.sh"
# shellcheck source=tests/bash-complete.sh
source "$(dirname "$0")/bash-complete.sh"

# Checks that cannot run here (a shell that is missing): a skipped test point, or under CI=true the end of the run.
skip_checks() {
    [ "${CI:-}" = true ] && die "cannot check $1, and CI=true must not skip: $2"
    checks=$((checks + 1))
    echo "ok $checks # SKIP $1: $2"
}

[ -n "$loopctl" ] && [ -x "$loopctl" ] || die "LOOPCTL_BINARY is not set or not a program (run this through meson test)"
bash_file="$source_root/shell-completion/bash/loopctl"
zsh_dir="$source_root/shell-completion/zsh"
fish_file="$source_root/shell-completion/fish/loopctl.fish"
for f in "$bash_file" "$zsh_dir/_loopctl" "$fish_file" "$source_root/daemon/mount.c"; do
    [ -r "$f" ] || die "$f is missing"
done
bash_completion=/usr/share/bash-completion/bash_completion

work=$(mktemp -d "${TMPDIR:-/tmp}/loopd-test-completion.XXXXXX") || die "cannot make a temporary directory"
trap 'rm -rf --one-file-system "$work"' EXIT
trap 'exit 1' INT TERM

# --------------------------------------------------------------------------------------------------------
# What the completions must offer, from loopctl's help and loopd's source.

words() { tr ' ' '\n' | sed '/^$/d' | sort -u; }
# The text of a help, its lines joined and blanks squeezed.
joined() { tr '\n' ' ' | tr -s ' '; }

help=$("$loopctl" --help) || die "$loopctl --help failed"
commands_section=$(sed -n '/^Commands:/,/^$/p' <<<"$help" | grep -E '^  [a-z]')
commands=$(sed -E 's/^  ([a-z]+).*/\1/' <<<"$commands_section" | sort -u)
# What has options of its own: a command, or a command and its sub-command ("partition add").
specs=$(sed -E 's/^  ([a-z]+( [a-z]+)?)( .*|$)/\1/' <<<"$commands_section" | sort -u)
grep -qx attach <<<"$commands" || die "no commands in loopctl --help: $help"
# The long options `loopctl SPEC --help` lists.
help_options() { "$loopctl" $1 --help | grep -oE '^ +(-[a-z] )?--[a-z-]+' | grep -oE -- '--[a-z-]+' | sort -u; }

format_types=$("$loopctl" format --help | sed '/^Options:/,$d' | joined | grep -oE '\([a-z0-9, ]+\)' | tr -d '(),' | words)
create_fs=$("$loopctl" create --help | joined |
    sed -nE 's/.*--fs TYPE Make a filesystem: ([a-z0-9, ]+ or [a-z0-9]+).*/\1/p' | sed 's/,/ /g; s/ or / /' | words)
create_tables=$("$loopctl" create --help | grep -oE -- '--table [a-z|]+' | sed 's/^--table //' | tr '|' '\n' | words)
partition_types=$("$loopctl" partition add --help | joined |
    sed -nE 's/.*--type T (.*), a GPT type GUID.*/\1/p' | sed 's/(the default)//; s/,/ /g' | words)
sector_sizes=$("$loopctl" attach --help | grep -- '--sector-size' | grep -oE '\b[0-9]+\b' | words)
for list in format_types create_fs create_tables partition_types sector_sizes; do
    [ "$(wc -l <<<"${!list}")" -ge 2 ] || die "cannot read $list from loopctl's help (got '${!list}')"
done
# The filesystems loopd mounts: the drivers[] table of daemon/mount.c.
mountable=$(sed -n '/^static const FsDriver drivers\[\] = {/,/^};/p' "$source_root/daemon/mount.c" |
    sed -nE 's/^ +\{ "([a-z0-9]+)",.*/\1/p' | words)
grep -qx ext4 <<<"$mountable" || die "cannot read the drivers of daemon/mount.c (got '$mountable')"
# The mount options any filesystem takes: generic_options[] of daemon/mount-options.c.
mount_options=$(sed -n '/^static const GenericOption generic_options\[\] = {/,/^};/p' \
    "$source_root/daemon/mount-options.c" | sed -nE 's/^ +\{ \{ "([a-z]+)",.*/\1/p' | words)
grep -qx noexec <<<"$mount_options" || die "cannot read generic_options of daemon/mount-options.c"
# nosuid and nodev, which loopd adds anyway, need not be offered.
mount_options=$(grep -vxE 'nosuid|nodev' <<<"$mount_options")

# A scratch directory of images, a directory and an unrelated file; one with no image at all.
images="$work/images"
mkdir -p "$images/sub" "$work/no-images/sub"
touch "$images/disk.img" "$images/a.iso" "$images/b.qcow2" "$images/notes.txt" "$work/no-images/notes.txt"

# Loop devices, partitions and their mounts, made up: every completion runs in a private user and mount
# namespace (unshare -rm, no root needed) whose /sys/block is a directory made here and which has two tmpfs
# mounts named after loop nodes. Bound: loop7 (partitions 1 and 2) and loop12; not bound: loop9 and loop3,
# whose stale loop3p1 must not show; sda is no loop device. Without such namespaces (a kernel that forbids
# them) the checks of devices are left out, and completions see this machine's sysfs.
fake_sys="$work/sys-block"
mkdir -p "$fake_sys"/loop7/loop "$fake_sys"/loop7/loop7p1 "$fake_sys"/loop7/loop7p2 "$fake_sys"/loop12/loop \
    "$fake_sys"/loop9 "$fake_sys"/loop3/loop3p1 "$fake_sys"/sda/sda1
touch "$fake_sys"/loop7/loop7p1/partition "$fake_sys"/loop7/loop7p2/partition "$fake_sys"/loop3/loop3p1/partition \
    "$fake_sys"/sda/sda1/partition
mount_blank="$work/media/my disk" # a blank: /proc/self/mountinfo writes it as \040
mount_plain="$work/media/plain"
mkdir -p "$mount_blank" "$mount_plain"
fake_devices="/dev/loop7 /dev/loop12"
fake_partitions="/dev/loop7p1 /dev/loop7p2"
fake_mounts=$(printf '%s\n' /dev/loop7p1 "$mount_blank" /dev/loop12 "$mount_plain")
in_world() {
    unshare --user --map-root-user --mount --propagation private sh -c '
        mount --bind "$0" /sys/block && mount -t tmpfs -o size=64k /dev/loop7p1 "$1" &&
            mount -t tmpfs -o size=64k /dev/loop12 "$2" || exit 99
        shift 2
        exec "$@"' "$fake_sys" "$mount_blank" "$mount_plain" "$@"
}
if in_world true 2>/dev/null; then
    world=in_world
else
    world=
fi

# --------------------------------------------------------------------------------------------------------
# complete_SHELL LINE: what completing the end of LINE offers, one a line, in the current directory.

# In bash with bash-completion loaded as an interactive shell would have it (BASH_COMPLETION_FILE; empty:
# without it, the file's own fallbacks).
complete_in_bash() { # BASH_COMPLETION_FILE LINE
    # shellcheck disable=SC2086 # $world: a command and its arguments, or nothing
    bash_complete "$1" "$bash_file" "$2" $world 2>/dev/null
}
complete_bash() { complete_in_bash "$bash_completion" "$1"; }
complete_bash-plain() { complete_in_bash "" "$1"; }

complete_fish() {
    LOOPCTL_LINE=$1 $world fish --no-config -c '
        set -g fish_complete_path # only this file, not a loopctl.fish installed elsewhere
        source $argv[1]; or exit 1
        complete -C "$LOOPCTL_LINE"' "$fish_file" 2>/dev/null | cut -f1
}

# The zsh started on the pty sources this; the driver (run by zsh -f) types the line.
cat >"$work/zsh-setup.zsh" <<'EOF'
PROMPT='' RPROMPT='' PS2=''
fpath=($LOOPCTL_ZSH_DIR $fpath)
autoload -Uz compinit
compinit -u -d $LOOPCTL_ZSH_DUMP
zstyle ':completion:*' insert-tab false
bindkey '^I' complete-word
# Every match a completion function adds is also written to $LOOPCTL_ZSH_OUT. A call that only asks
# for matches (-O, -A) or filters descriptions (-D) adds none: it is passed on as it is.
compadd() {
    local __arg
    for __arg in "$@"; do
        [[ $__arg == (-|--) ]] && break
        if [[ $__arg == -[OAD]* ]]; then
            builtin compadd "$@"
            return
        fi
    done
    local -a __matches
    builtin compadd -O __matches "$@"
    (( $#__matches )) && print -rl -- $__matches >>$LOOPCTL_ZSH_OUT
    builtin compadd "$@"
}
__loopctl_test_done() {
    print >$LOOPCTL_ZSH_OUT.done
    exit
}
comppostfuncs=(__loopctl_test_done)
print >$LOOPCTL_ZSH_OUT.ready
EOF
cat >"$work/zsh-drive.zsh" <<'EOF'
zmodload zsh/zpty || exit 3
zmodload zsh/zselect || exit 3
rm -f $LOOPCTL_ZSH_OUT $LOOPCTL_ZSH_OUT.ready $LOOPCTL_ZSH_OUT.done
: >$LOOPCTL_ZSH_OUT
wait_for() { # FILE: up to 20 s
    integer i
    for (( i = 0; i < 1000; i++ )); do
        [[ -e $1 ]] && return 0
        zselect -t 2
    done
    return 1
}
zpty capture zsh -f -i
zpty -w capture "source ${(q)1}"
wait_for $LOOPCTL_ZSH_OUT.ready || { zpty -d capture; exit 4; }
zpty -w -n capture "$2"$'\t'
wait_for $LOOPCTL_ZSH_OUT.done
integer done=$?
zpty -d capture
(( done == 0 )) || exit 5
cat $LOOPCTL_ZSH_OUT
EOF
complete_zsh() {
    LOOPCTL_ZSH_DIR=$zsh_dir LOOPCTL_ZSH_OUT="$work/zsh-out" LOOPCTL_ZSH_DUMP="$work/zcompdump" \
        $world zsh -f "$work/zsh-drive.zsh" "$work/zsh-setup.zsh" "$1" 2>/dev/null
}

# What SHELL offers for LINE, sorted, one a line: a directory without its '/', a value of "--opt=" without
# the "--opt=" (fish repeats it), the items before a comma-separated list's last one left off.
offered() {
    local shell=$1 line=$2 cur
    cur=${line##* }
    complete_"$shell" "$line" | sed '/^$/d' | {
        if [[ $cur == --*=* ]]; then
            local prefix=${cur%%=*}=
            sed "s|^${prefix}||"
        else
            cat
        fi
    } | sed -E 's|^[^/]*,||; s|(.)/$|\1|' | sort -u
}
# The same, without loop devices and partitions (whatever this machine has bound just now).
offered_files() { offered "$@" | grep -v '^/dev/loop'; }

# Compares what SHELL offers for LINE (from FUNCTION, offered_files by default) with the words expected.
expect_exactly() { # SHELL LINE WORDS [FUNCTION]
    local shell=$1 line=$2 want got missing extra
    want=$(words <<<"$3")
    got=$(${4:-offered_files} "$shell" "$line")
    missing=$(comm -23 <(echo "$want") <(echo "$got") | head -n10 | paste -sd' ')
    extra=$(comm -13 <(echo "$want") <(echo "$got") | head -n10 | paste -sd' ')
    if [ -z "$missing$extra" ]; then
        want=$(paste -sd' ' <<<"$want")
        pass "$shell: '$line' offers ${want:-nothing}"
    else
        fail "$shell: '$line' offers${missing:+ without $missing}${extra:+ also $extra}"
    fi
}
# The same with lines (words with blanks) expected, and others that match OTHERS allowed.
expect_lines() { # SHELL LINE LINES [OTHERS]
    local shell=$1 line=$2 want got missing extra
    want=$(sort -u <<<"$3")
    got=$(offered "$shell" "$line")
    missing=$(comm -23 <(echo "$want") <(echo "$got") | head -n10 | paste -sd'|')
    extra=$(comm -13 <(echo "$want") <(echo "$got") | grep -vE "${4:-^$}" | head -n10 | paste -sd'|')
    if [ -z "$missing$extra" ]; then
        pass "$shell: '$line' offers $(paste -sd'|' <<<"$want")"
    else
        fail "$shell: '$line' offers${missing:+ without $missing}${extra:+ also $extra}"
    fi
}
# Every word SHELL offers for LINE matches REGEX.
expect_only() { # SHELL LINE REGEX WHAT
    local stray
    stray=$(offered "$1" "$2" | grep -vE "$3" | head -n5 | paste -sd' ')
    [ -z "$stray" ] && pass "$1: '$2' offers only $4" || fail "$1: '$2' offers more than $4: $stray"
}

# --------------------------------------------------------------------------------------------------------
check_shell() {
    local shell=$1 spec

    cd "$work" || die "cannot enter $work"
    # Commands: exactly the ones loopctl has, also after a global option.
    expect_exactly "$shell" "loopctl " "$commands"
    expect_exactly "$shell" "loopctl --json " "$commands"
    expect_exactly "$shell" "loopctl --json l" "list"

    # Each command's options: exactly what its --help lists.
    while read -r spec; do
        [ "$spec" = partition ] && continue # its sub-commands have the options
        expect_exactly "$shell" "loopctl $spec --" "$(help_options "$spec")"
    done <<<"$specs"

    # Option values.
    expect_exactly "$shell" "loopctl mount --fstype " "$mountable"
    expect_exactly "$shell" "loopctl mount --fstype=" "$mountable"
    expect_exactly "$shell" "loopctl mount --fstype e" "$(grep '^e' <<<"$mountable")"
    expect_exactly "$shell" "loopctl mount --options " "$mount_options"
    expect_exactly "$shell" "loopctl mount --options noexec,noa" "noatime"
    expect_exactly "$shell" "loopctl attach --sector-size " "$sector_sizes"
    expect_exactly "$shell" "loopctl open --sector-size=" "$sector_sizes"
    expect_exactly "$shell" "loopctl create --fs " "$create_fs"
    expect_exactly "$shell" "loopctl create --table " "$create_tables"
    expect_exactly "$shell" "loopctl partition add --type " "$partition_types"

    # Arguments: format's NODE, then its TYPE; partition's sub-commands and theirs.
    expect_only "$shell" "loopctl format " '^/dev/loop[0-9]+(p[0-9]+)?$' "loop devices and partitions"
    expect_exactly "$shell" "loopctl format /dev/loop0 " "$format_types"
    expect_exactly "$shell" "loopctl format --erase /dev/loop0 g" "gpt"
    expect_exactly "$shell" "loopctl partition " "add delete"
    expect_only "$shell" "loopctl partition delete " '^/dev/loop[0-9]+p[0-9]+$' "partitions"
    expect_only "$shell" "loopctl partitions " '^/dev/loop[0-9]+$' "loop devices"
    expect_only "$shell" "loopctl mount " '^/dev/loop[0-9]+(p[0-9]+)?$' "loop devices and partitions"
    expect_only "$shell" "loopctl unmount " '^/' "loop devices and mount points"
    if [ -n "$world" ]; then
        # Bound loop devices and their partitions, from (the made-up) sysfs; mounts of loop nodes.
        expect_exactly "$shell" "loopctl partitions " "$fake_devices" offered
        expect_exactly "$shell" "loopctl mount " "$fake_devices $fake_partitions" offered
        expect_exactly "$shell" "loopctl mount --read-only /dev/loop7p" "$fake_partitions" offered
        expect_exactly "$shell" "loopctl format " "$fake_devices $fake_partitions" offered
        expect_exactly "$shell" "loopctl partition delete " "$fake_partitions" offered
        expect_exactly "$shell" "loopctl partitions /dev/loop1" "/dev/loop12" offered
        # The namespace's mount table is a copy of this machine's: others' loop mounts may be in it.
        expect_lines "$shell" "loopctl unmount " "$fake_mounts" '^/'
        expect_lines "$shell" "loopctl unmount $work/media/" "$mount_blank"$'\n'"$mount_plain"
    else
        skip_checks "$shell: loop devices" "no private user and mount namespace (unshare -rm) for a made-up sysfs"
    fi
    expect_only "$shell" "loopctl list " '^-' "options (list takes no argument)"

    # IMAGE: image files and directories, not other files; any file when there is no image.
    cd "$images" || die "cannot enter $images"
    expect_exactly "$shell" "loopctl attach " "disk.img a.iso b.qcow2 sub"
    expect_exactly "$shell" "loopctl attach --read-only " "disk.img a.iso b.qcow2 sub"
    expect_exactly "$shell" "loopctl attach d" "disk.img"
    expect_exactly "$shell" "loopctl open --writable " "disk.img a.iso b.qcow2 sub"
    expect_exactly "$shell" "loopctl detach " "disk.img a.iso b.qcow2 sub"
    expect_exactly "$shell" "loopctl close " "disk.img a.iso b.qcow2 sub"
    expect_exactly "$shell" "loopctl partition add " "disk.img a.iso b.qcow2 sub"
    if [ -n "$world" ]; then
        expect_exactly "$shell" "loopctl detach " "disk.img a.iso b.qcow2 sub $fake_devices" offered
        expect_exactly "$shell" "loopctl close " "disk.img a.iso b.qcow2 sub $fake_devices" offered
        expect_exactly "$shell" "loopctl partition add " "disk.img a.iso b.qcow2 sub $fake_devices" offered
    fi
    expect_only "$shell" "loopctl attach disk.img " '^-' "options (IMAGE is attach's only argument)"
    # create's IMAGE is a new file: any directory to put it in.
    local got
    got=$(offered_files "$shell" "loopctl create --size 1G ")
    grep -qx sub <<<"$got" && pass "$shell: 'loopctl create --size 1G ' offers the directory sub" ||
        fail "$shell: 'loopctl create --size 1G ' does not offer the directory sub: $(paste -sd' ' <<<"$got")"
    cd "$work/no-images" || die "cannot enter $work/no-images"
    expect_exactly "$shell" "loopctl attach " "notes.txt sub"
    cd "$work" || die "cannot enter $work"
}

# LOOPCTL_TEST_SHELLS picks some of them, to try a change to one file quickly.
for shell in ${LOOPCTL_TEST_SHELLS:-bash bash-plain zsh fish}; do
    case $shell in
    bash)
        if [ -r "$bash_completion" ]; then
            check_shell bash
        else
            skip_checks "the bash completion" "$bash_completion is missing (tools/install-deps installs bash-completion)"
        fi
        ;;
    bash-plain) check_shell bash-plain ;;
    zsh)
        if ! command -v zsh >/dev/null; then
            skip_checks "the zsh completion" "zsh is not installed (tools/install-deps installs it)"
        elif ! zsh -f -c 'zmodload zsh/zpty && zmodload zsh/zselect' 2>/dev/null; then
            skip_checks "the zsh completion" "zsh has no zsh/zpty or zsh/zselect module"
        else
            check_shell zsh
        fi
        ;;
    fish)
        if command -v fish >/dev/null; then
            check_shell fish
        else
            skip_checks "the fish completion" "fish is not installed (tools/install-deps installs it)"
        fi
        ;;
    *) die "LOOPCTL_TEST_SHELLS: no shell '$shell' (bash, bash-plain, zsh, fish)" ;;
    esac
done

tap_finish
