/* changes.h: what the watcher and the engine report about loop devices, partitions and mounts, one change at
 * a time, to whoever listens (the D-Bus face turns them into signals and PropertiesChanged). Changes flow
 * one way: the reporter never calls the listener's code by name. */
#pragma once

typedef enum ChangeKind {
        CHANGE_DEVICE_ADDED, /* number: now bound (and in the watcher's table) */
        CHANGE_DEVICE_REMOVED, /* number: no longer bound (still in the table while this is reported) */
        CHANGE_PARTITION_ADDED, /* number, partition */
        CHANGE_PARTITION_REMOVED,
        CHANGE_MOUNTED, /* node, mount_point */
        CHANGE_UNMOUNTED,
        CHANGE_PROPERTY, /* number, property: a Device property's value changed */
} ChangeKind;

typedef struct Change {
        ChangeKind kind;
        unsigned number;
        unsigned partition;
        const char *node;
        const char *mount_point;
        const char *property;
} Change;

typedef void (*ChangeHandler)(const Change *change, void *userdata);
