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

function __loopctl_mounts
    while read -l line
        set -l after (string split -m1 ' - ' -- $line)[2]
        set -l src (string split ' ' -- $after)[2]
        string match -q '/dev/loop*' -- $src; or continue
        echo $src
        printf '%b\n' (string replace -a '\\' '\\0' -- (string split ' ' -- $line)[5])
    end </proc/self/mountinfo
end

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
    # An image may have any name.
    if test -z "$found"
        for f in $token*
            test -f $f; and echo $f
        end
    end
end

function __loopctl_using
    set -l words (commandline -opc)
    for w in $words[2..-1]
        if contains -- $w $__loopctl_commands
            contains -- $w $argv; and return 0
            return 1
        end
    end
    return 1
end

complete -c loopctl -f
complete -c loopctl -l json -d 'Print JSON for scripts'
complete -c loopctl -s q -l quiet -d 'Do not say what was done'
complete -c loopctl -l no-ask-password -d 'Do not ask for a password'
complete -c loopctl -s h -l help -d 'Show help'
complete -c loopctl -l version -d 'Show the version'

complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a attach -d 'Attach an image to a free loop device'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a detach -d 'Detach a loop device'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a list -d 'List the loop devices'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a partitions -d 'List the partitions of a device'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a mount -d 'Mount a loop device or partition'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a unmount -d 'Unmount it again'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a open -d 'Attach an image and mount everything'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a close -d 'Unmount everything and detach'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a monitor -d "Print loopd's events"
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a format -d 'Make a filesystem or partition table'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a partition -d 'Add or delete a partition'
complete -c loopctl -n "not __fish_seen_subcommand_from $__loopctl_commands" -a create -d 'Make a new image'

# attach, open, create: image files
complete -c loopctl -n '__loopctl_using attach open create' -a '(__loopctl_images)'
complete -c loopctl -n '__loopctl_using attach' -l read-only -d 'Attach read-only'
complete -c loopctl -n '__loopctl_using attach' -l offset -x -d 'Start N bytes in'
complete -c loopctl -n '__loopctl_using attach create partition' -l size -x -d 'Size in bytes (K, M, G, T)'
complete -c loopctl -n '__loopctl_using attach open create' -l sector-size -x -a '0 512 1024 2048 4096' -d 'Logical sector size'
complete -c loopctl -n '__loopctl_using attach' -l no-partscan -d 'No partition devices'
complete -c loopctl -n '__loopctl_using attach' -l autoclear -d 'Detach after last use'
complete -c loopctl -n '__loopctl_using attach' -l shared -d 'Allow a second writer'
complete -c loopctl -n '__loopctl_using open' -l writable -d 'Attach and mount writable'
complete -c loopctl -n '__loopctl_using open' -l show -d 'Show it in the file manager'
complete -c loopctl -n '__loopctl_using create' -l table -x -a 'gpt dos' -d 'Partition table'
complete -c loopctl -n '__loopctl_using create' -l fs -x -a 'ext2 ext3 ext4 xfs btrfs vfat exfat ntfs swap' -d 'Filesystem'
complete -c loopctl -n '__loopctl_using create format' -l label -x -d 'Filesystem label'

# detach, close: devices or images
complete -c loopctl -n '__loopctl_using detach close' -a '(__loopctl_devices; __loopctl_images)'
complete -c loopctl -n '__loopctl_using detach' -l unmount -d 'Unmount first'
complete -c loopctl -n '__loopctl_using partitions' -a '(__loopctl_devices)'

# mount, format: nodes; --fstype: what loopd mounts
complete -c loopctl -n '__loopctl_using mount format' -a '(__loopctl_nodes)'
complete -c loopctl -n '__loopctl_using mount' -l read-only -d 'Mount read-only'
complete -c loopctl -n '__loopctl_using mount' -l options -x -a 'ro rw noexec exec noatime relatime nodiratime lazytime sync dirsync nosymfollow' -d 'Mount options'
complete -c loopctl -n '__loopctl_using mount' -l fstype -x -a 'ext2 ext3 ext4 xfs btrfs squashfs erofs vfat exfat ntfs iso9660 udf' -d 'Filesystem type'
complete -c loopctl -n '__loopctl_using unmount' -a '(__loopctl_mounts)'

complete -c loopctl -n '__loopctl_using format' -a 'ext2 ext3 ext4 xfs btrfs vfat exfat ntfs swap gpt dos empty'
complete -c loopctl -n '__loopctl_using format' -l uuid -x -d 'Filesystem UUID'
complete -c loopctl -n '__loopctl_using format' -l erase -d 'Zero it first'

complete -c loopctl -n '__loopctl_using partition; and not __fish_seen_subcommand_from add delete' -a 'add delete'
complete -c loopctl -n '__loopctl_using partition; and __fish_seen_subcommand_from add' -a '(__loopctl_devices; __loopctl_images)'
complete -c loopctl -n '__loopctl_using partition; and __fish_seen_subcommand_from delete' -a '(__loopctl_nodes)'
complete -c loopctl -n '__loopctl_using partition' -l start -x -d 'Start in bytes'
complete -c loopctl -n '__loopctl_using partition' -l type -x -a 'linux esp swap fat ntfs' -d 'Partition type'
complete -c loopctl -n '__loopctl_using partition' -l name -x -d 'Partition name'
complete -c loopctl -n '__loopctl_using partition' -l bootable -d 'Mark it bootable'
