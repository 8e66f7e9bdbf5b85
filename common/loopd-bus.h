/* loopd-bus.h: the D-Bus names of loopd's public contract, shared by daemon, client and tests. */
#pragma once

#define LOOPD_BUS_NAME "org.loopd1"
#define LOOPD_MANAGER_PATH "/org/loopd1"
#define LOOPD_MANAGER_INTERFACE "org.loopd1.Manager"
#define LOOPD_DEVICE_PATH_PREFIX "/org/loopd1/device"
#define LOOPD_DEVICE_INTERFACE "org.loopd1.Device"

#define LOOPD_ERROR_PREFIX "org.loopd1.Error."
#define LOOPD_ERROR_NOT_AUTHORIZED LOOPD_ERROR_PREFIX "NotAuthorized"
#define LOOPD_ERROR_INVALID_ARGUMENT LOOPD_ERROR_PREFIX "InvalidArgument"
#define LOOPD_ERROR_NOT_FOUND LOOPD_ERROR_PREFIX "NotFound"
#define LOOPD_ERROR_NOT_MANAGED LOOPD_ERROR_PREFIX "NotManaged"
#define LOOPD_ERROR_BUSY LOOPD_ERROR_PREFIX "Busy"
#define LOOPD_ERROR_LIMIT_EXCEEDED LOOPD_ERROR_PREFIX "LimitExceeded"
#define LOOPD_ERROR_NO_FREE_DEVICE LOOPD_ERROR_PREFIX "NoFreeDevice"
#define LOOPD_ERROR_UNSUPPORTED_FORMAT LOOPD_ERROR_PREFIX "UnsupportedFormat"
#define LOOPD_ERROR_UNSUPPORTED_FILESYSTEM LOOPD_ERROR_PREFIX "UnsupportedFilesystem"
#define LOOPD_ERROR_ALREADY_MOUNTED LOOPD_ERROR_PREFIX "AlreadyMounted"
#define LOOPD_ERROR_NOT_MOUNTED LOOPD_ERROR_PREFIX "NotMounted"
#define LOOPD_ERROR_NOTHING_TO_MOUNT LOOPD_ERROR_PREFIX "NothingToMount"
#define LOOPD_ERROR_TIMEOUT LOOPD_ERROR_PREFIX "Timeout"
#define LOOPD_ERROR_UNSAFE_IMAGE LOOPD_ERROR_PREFIX "UnsafeImage"
#define LOOPD_ERROR_READ_ONLY LOOPD_ERROR_PREFIX "ReadOnly"
#define LOOPD_ERROR_FAILED LOOPD_ERROR_PREFIX "Failed"

#define LOOPD_ACTION_ATTACH "org.loopd1.attach"
#define LOOPD_ACTION_MOUNT "org.loopd1.mount"
#define LOOPD_ACTION_MANAGE_OTHERS "org.loopd1.manage-others"
/* Format, CreatePartition and DeletePartition on the caller's own device. */
#define LOOPD_ACTION_MODIFY "org.loopd1.modify"
/* MountImage's one password prompt when both attach and mount would ask for one. */
#define LOOPD_ACTION_OPEN_IMAGE "org.loopd1.open-image"

/* D-Bus signatures of the contract's structs. */
#define LOOPD_DEVICE_STRUCT "(sosttubbbu)"
#define LOOPD_PARTITION_STRUCT "(suttssssss)"
