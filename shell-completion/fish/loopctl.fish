# fish completion for loopctl(1): commands, their options and values, loop devices and partitions (from
# sysfs: pressing TAB must not start loopd or wait for polkit), mount points and image files.

set -g __loopctl_commands attach detach list partitions mount unmount open close monitor format partition create

function __loopctl_devices
    for d in /sys/block/loop*/loop
        set -l name (string replace -r '^/sys/block/(loop[0-9]+)/loop$' '$1' -- $d)
        echo /dev/$name
    end
end

function __loopctl_nodes
    for dev in (__loopctl_devices)
        echo $dev
        set -l name (string replace /dev/ '' -- $dev)
        for p in /sys/block/$name/$name"p"*
            test -e $p/partition; and echo /dev/(basename $p)
        end
    end
end

function __loopctl_partitions
    __loopctl_nodes | string match -r '^/dev/loop[0-9]+p[0-9]+$'
end

function __loopctl_mounts
    while read -l line
        set -l after (string split -m1 ' - ' -- $line)[2]
        set -l src (string split ' ' -- $after)[2]
        string match -q '/dev/loop*' -- $src; or continue
        echo $src
        printf '%b\n' (string replace -a '\\' '\\0' -- (string split ' ' -- $line)[5])
    end </proc/self/mountinfo
end

# Image files and directories; any file when no image file matches what is typed (directories do not
# count), since an image may have any name.
function __loopctl_images
    set -l token (commandline -ct)
    set -l found
    for f in $token*
        if test -d $f
            echo $f/
        else if string match -qr '\.(img|raw|iso|qcow2|vmdk|vdi|vhd|vhdx|squashfs|sqfs|erofs|bin|dd|ext[234]|xfs|btrfs|fat|vfat|exfat|ntfs|udf)$' -i -- $f
            echo $f
            set found 1
        end
    end
    if test -z "$found"
        for f in $token*
            test -f $f; and echo $f
        end
    end
end

# --options takes a comma-separated list: the items typed so far, then each option loopd takes.
function __loopctl_mount_options
    set -l token (commandline -ct | string replace -r -- '^--options=' '')
    # Quoted: string with no argument would read its stdin.
    set -l done (string match -r -- '^.*,' "$token")
    for o in ro rw noexec exec noatime relatime nodiratime lazytime sync dirsync nosymfollow
        echo "$done$o"
    end
end

# The options that take a value: their value is not an argument.
set -g __loopctl_with_value offset size sector-size options fstype start type name label uuid table fs

# The command and its arguments typed so far, one a line: the words that are neither options nor option
# values (options may stand before and after the command).
function __loopctl_words
    set -l value
    for w in (commandline -opc)[2..-1]
        if test -n "$value"
            set value
            continue
        end
        switch $w
            case '--*=*' '-' '--'
            case '--*'
                contains -- (string sub -s 3 -- $w) $__loopctl_with_value; and set value 1
            case '-*'
            case '*'
                echo $w
        end
    end
end

# Whether the command is one of ARGV and N arguments follow it so far: __loopctl_using N COMMAND...
# (N is '*' for any number).
function __loopctl_using
    set -l words (__loopctl_words)
    test (count $words) -gt 0; or return 1
    contains -- $words[1] $argv[2..-1]; or return 1
    test "$argv[1]" = '*'; or test (count $words) -eq (math $argv[1] + 1)
end

# Whether partition's sub-command is SUB and N arguments follow it: __loopctl_partition N SUB.
function __loopctl_partition
    set -l words (__loopctl_words)
    test (count $words) -ge 2; and test "$words[1]" = partition; and test "$words[2]" = $argv[2]; or return 1
    test "$argv[1]" = '*'; or test (count $words) -eq (math $argv[1] + 2)
end

function __loopctl_no_command
    test (count (__loopctl_words)) -eq 0
end

complete -c loopctl -f
complete -c loopctl -l json -d 'Print JSON for scripts'
complete -c loopctl -s q -l quiet -d 'Do not say what was done'
complete -c loopctl -l no-ask-password -d 'Do not ask for a password'
complete -c loopctl -s h -l help -d 'Show help'
# --version stands alone: a command's --help does not list it.
complete -c loopctl -n __loopctl_no_command -l version -d 'Show the version'

complete -c loopctl -n __loopctl_no_command -a attach -d 'Attach an image to a free loop device'
complete -c loopctl -n __loopctl_no_command -a detach -d 'Detach a loop device'
complete -c loopctl -n __loopctl_no_command -a list -d 'List the loop devices'
complete -c loopctl -n __loopctl_no_command -a partitions -d 'List the partitions of a device'
complete -c loopctl -n __loopctl_no_command -a mount -d 'Mount a loop device or partition'
complete -c loopctl -n __loopctl_no_command -a unmount -d 'Unmount it again'
complete -c loopctl -n __loopctl_no_command -a open -d 'Attach an image and mount everything'
complete -c loopctl -n __loopctl_no_command -a close -d 'Unmount everything and detach'
complete -c loopctl -n __loopctl_no_command -a monitor -d "Print loopd's events"
complete -c loopctl -n __loopctl_no_command -a format -d 'Make a filesystem or partition table'
complete -c loopctl -n __loopctl_no_command -a partition -d 'Add or delete a partition'
complete -c loopctl -n __loopctl_no_command -a create -d 'Make a new image'

# attach, open, create: an image file
complete -c loopctl -n '__loopctl_using 0 attach open create' -a '(__loopctl_images)'
complete -c loopctl -n '__loopctl_using "*" attach' -l read-only -d 'Attach read-only'
complete -c loopctl -n '__loopctl_using "*" attach' -l offset -x -d 'Start N bytes in'
complete -c loopctl -n '__loopctl_using "*" attach create' -l size -x -d 'Size in bytes (K, M, G, T)'
complete -c loopctl -n '__loopctl_using "*" attach open create' -l sector-size -x -a '0 512 1024 2048 4096' -d 'Logical sector size'
complete -c loopctl -n '__loopctl_using "*" attach' -l no-partscan -d 'No partition devices'
complete -c loopctl -n '__loopctl_using "*" attach' -l autoclear -d 'Detach after last use'
complete -c loopctl -n '__loopctl_using "*" attach' -l shared -d 'Allow a second writer'
complete -c loopctl -n '__loopctl_using "*" open' -l writable -d 'Attach and mount writable'
complete -c loopctl -n '__loopctl_using "*" open' -l show -d 'Show it in the file manager'
complete -c loopctl -n '__loopctl_using "*" create' -l table -x -a 'gpt dos' -d 'Partition table'
complete -c loopctl -n '__loopctl_using "*" create' -l fs -x -a 'ext2 ext3 ext4 xfs btrfs vfat exfat ntfs swap' -d 'Filesystem'
complete -c loopctl -n '__loopctl_using "*" create format' -l label -x -d 'Filesystem label'

# detach, close: a device or an image
complete -c loopctl -n '__loopctl_using 0 detach close' -a '(__loopctl_devices; __loopctl_images)'
complete -c loopctl -n '__loopctl_using "*" detach' -l unmount -d 'Unmount first'
complete -c loopctl -n '__loopctl_using 0 partitions' -a '(__loopctl_devices)'

# mount: a node; --fstype: what loopd mounts
complete -c loopctl -n '__loopctl_using 0 mount' -a '(__loopctl_nodes)'
complete -c loopctl -n '__loopctl_using "*" mount' -l read-only -d 'Mount read-only'
complete -c loopctl -n '__loopctl_using "*" mount' -l options -x -a '(__loopctl_mount_options)' -d 'Mount options'
complete -c loopctl -n '__loopctl_using "*" mount' -l fstype -x -a 'ext2 ext3 ext4 xfs btrfs squashfs erofs vfat exfat ntfs iso9660 udf' -d 'Filesystem type'
complete -c loopctl -n '__loopctl_using 0 unmount' -a '(__loopctl_mounts)'

# format: a node, then what to make
complete -c loopctl -n '__loopctl_using 0 format' -a '(__loopctl_nodes)'
complete -c loopctl -n '__loopctl_using 1 format' -a 'ext2 ext3 ext4 xfs btrfs vfat exfat ntfs swap gpt dos empty'
complete -c loopctl -n '__loopctl_using "*" format' -l uuid -x -d 'Filesystem UUID'
complete -c loopctl -n '__loopctl_using "*" format' -l erase -d 'Zero it first'

# partition add DEVICE|IMAGE, partition delete NODE
complete -c loopctl -n '__loopctl_using 0 partition' -a 'add delete'
complete -c loopctl -n '__loopctl_partition 0 add' -a '(__loopctl_devices; __loopctl_images)'
complete -c loopctl -n '__loopctl_partition 0 delete' -a '(__loopctl_partitions)'
complete -c loopctl -n '__loopctl_using 0 partition; or __loopctl_partition "*" add' -l start -x -d 'Start in bytes'
complete -c loopctl -n '__loopctl_using 0 partition; or __loopctl_partition "*" add' -l size -x -d 'Size in bytes (K, M, G, T)'
complete -c loopctl -n '__loopctl_using 0 partition; or __loopctl_partition "*" add' -l type -x -a 'linux esp swap fat ntfs' -d 'Partition type'
complete -c loopctl -n '__loopctl_using 0 partition; or __loopctl_partition "*" add' -l name -x -d 'Partition name'
complete -c loopctl -n '__loopctl_using 0 partition; or __loopctl_partition "*" add' -l bootable -d 'Mark it bootable'
