/* bus-context.h: the D-Bus face's context, shared by its files (manager-dbus.c, mount-dbus.c,
 * device-dbus.c). The engine's Manager is below it; nothing below includes this. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "manager.h"

typedef struct Auth Auth;
typedef struct BusCalls BusCalls;
typedef struct ImageCall ImageCall;
typedef struct FormatCall FormatCall;

typedef struct Bus {
        Manager *manager;
        sd_bus *bus;
        Auth *auth;
        BusCalls *calls; /* method calls waiting for polkit, an image or udev, bounded per uid */
        ImageCall *image_calls; /* Attach and MountImage calls whose image is being read */
        FormatCall *format_calls; /* Format calls whose mkfs runs (format-dbus.c) */
        unsigned max_pending_per_user;
        uint64_t exit_on_idle_usec; /* 0: never */
        uint64_t last_activity_usec;
        sd_event_source *idle_timer;
        sd_bus_slot *release_slot; /* the ReleaseName of an exit on idle, until its reply */
        bool name_released; /* exits once the calls that came before the release are answered */
        bool exit_deferred; /* a SIGTERM came while leaving (bus_defer_exit()) */
} Bus;

/* The Manager's ListDevices and ListPartitions (list-dbus.c), in manager-dbus.c's vtable. */
int method_list_devices(sd_bus_message *message, void *userdata, sd_bus_error *error);
int method_list_partitions(sd_bus_message *message, void *userdata, sd_bus_error *error);
/* The Manager's Mount and Unmount (mount-dbus.c), in manager-dbus.c's vtable. */
int method_mount(sd_bus_message *message, void *userdata, sd_bus_error *error);
int method_unmount(sd_bus_message *message, void *userdata, sd_bus_error *error);
/* The Manager's CreatePartition and DeletePartition (partition-dbus.c), in manager-dbus.c's vtable. */
int method_create_partition(sd_bus_message *message, void *userdata, sd_bus_error *error);
int method_delete_partition(sd_bus_message *message, void *userdata, sd_bus_error *error);
/* The Manager's Format (format-dbus.c), in manager-dbus.c's vtable; its calls still waiting for their mkfs
 * are answered and their mkfs killed by format_cancel_calls() (loopd exits). */
int method_format(sd_bus_message *message, void *userdata, sd_bus_error *error);
void format_cancel_calls(Bus *b);
