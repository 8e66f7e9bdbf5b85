/* test-loopctl-cli.h: what the loopctl-cli suite's files share: running loopctl, the mock loopd, and the
 * tests (test-loopctl-cli.c registers them). */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "images.h"

typedef struct Run {
        int status; /* exit status, or 128 + signal */
        char *out;
        char *err;
} Run;

typedef struct RunOptions {
        const char *bus; /* DBUS_SYSTEM_BUS_ADDRESS; NULL: a socket that does not exist */
        const char *cwd; /* NULL: the test's */
        int stdin_fd; /* taken; 0 means a pipe that is closed at once (not a terminal) */
        const char *stdout_path; /* instead of a pipe (e.g. /dev/full) */
        const char *path_prepend;
        const char *agent_log;
        gboolean as_nobody; /* when the test runs as root */
        const char *binary; /* NULL: loopctl */
} RunOptions;

typedef struct MockCall {
        char *method;
        GVariant *params;
        gboolean interactive;
        int fd_accmode; /* of an 'h' argument, -1 without one */
        struct stat fd_stat;
} MockCall;

typedef struct Mock {
        char *dir;
        char *address;
        GSubprocess *daemon;
        GDBusConnection *conn;
        GDBusNodeInfo *info;
        guint object_id;
        guint device_object_id; /* /org/loopd1/device/loop3, the device Attach names */
        GPtrArray *calls;
        GVariant *devices; /* a(sosttubbbu) */
        GVariant *partitions; /* a(suttssssss): ListPartitions' and loop3's Partitions */
        const char *fail_method;
        const char *also_fail_method; /* with the same error */
        const char *interrupt_method; /* sends the caller SIGINT before it answers */
        const char *vanish_method; /* closes the mock's connection instead of answering */
        const char *fail_name;
        const char *fail_message;
} Mock;

typedef struct Agent {
        char *bin;
        char *log;
} Agent;

/* test-loopctl-cli.c */
void run_free(Run *r);
const char *loopctl_binary(void);
gboolean nobody_can_reach(const char *target);
gboolean iterate_until(const gboolean *flag, guint timeout_ms);
G_GNUC_NULL_TERMINATED Run *run_loopctl(const RunOptions *o, ...);
extern const RunOptions no_bus;
void assert_error_line(const Run *r, int status, const char *what);
char *json_error_message(const char *err, char **ret_kind);
char *make_file(const char *dir, const char *name, gsize size);
void mock_set_devices(Mock *m, const char *text);
void mock_set_partitions(Mock *m, const char *text);
void mock_stop_bus(Mock *m);
RunOptions mock_bus(const Mock *m);
MockCall *mock_call(Mock *m, const char *method);
guint mock_count(Mock *m, const char *method);
void assert_options(const MockCall *c, gsize i, const char *expected);
const char *call_string(const MockCall *c, gsize i);
void assert_same_file(const MockCall *c, const char *path);
void assert_usage_error(const char *what, ...);

/* loopctl-cli-usage.c */
void test_usage_no_command(void);
void test_usage_unknown_command(void);
void test_usage_unknown_option(void);
void test_usage_missing_value(void);
void test_usage_flag_with_value(void);
void test_usage_missing_argument(void);
void test_usage_too_many_arguments(void);
void test_usage_option_of_another_command(void);
void test_help_prints_usage(void);
void test_version(void);
void test_size_bad_values(void);
void test_size_overflow(void);
void test_size_sector_size_values(void);
void test_attach_nonexistent_image_fails_before_bus(void);
void test_attach_refuses_non_regular_files(void);
void test_attach_unwritable_image_suggests_read_only(void);
void test_bus_unreachable_is_one_line(void);
void test_options_before_and_after_command_reach_the_same_parser(void);

/* loopctl-cli-commands.c */
void test_bus_daemon_not_running(Mock *m, gconstpointer data);
void test_attach_passes_writable_fd_and_no_options(Mock *m, gconstpointer data);
void test_attach_read_only_passes_read_only_fd(Mock *m, gconstpointer data);
void test_attach_option_keys_are_the_contracts(Mock *m, gconstpointer data);
void test_attach_sizes_in_every_notation(Mock *m, gconstpointer data);
void test_attach_json_lists_partitions(Mock *m, gconstpointer data);
void test_attach_human_output(Mock *m, gconstpointer data);
void test_attach_daemon_error_is_one_line(Mock *m, gconstpointer data);
void test_attach_partition_listing_failure_says_device_stays(Mock *m, gconstpointer data);
void test_attach_double_dash_ends_options(Mock *m, gconstpointer data);
extern const char devices_text[];
void test_list_json_shape(Mock *m, gconstpointer data);
void test_list_empty(Mock *m, gconstpointer data);
void test_list_table_aligned_and_escaped(Mock *m, gconstpointer data);
void test_partitions_json_and_device_name(Mock *m, gconstpointer data);
void test_partitions_empty(Mock *m, gconstpointer data);
void test_partitions_error(Mock *m, gconstpointer data);
void test_detach_device_names(Mock *m, gconstpointer data);
void test_detach_image_resolved_to_its_device(Mock *m, gconstpointer data);
void test_detach_image_on_several_devices_refused(Mock *m, gconstpointer data);
void test_detach_image_not_attached(Mock *m, gconstpointer data);
void test_detach_image_prefers_own_device(Mock *m, gconstpointer data);
void test_detach_image_not_utf8(Mock *m, gconstpointer data);
void test_detach_name_of_device_and_file(Mock *m, gconstpointer data);
void test_umount_helper_exit_status(Mock *m, gconstpointer data);
void test_detach_busy_error(Mock *m, gconstpointer data);
void test_mount_option_keys_and_json(Mock *m, gconstpointer data);
void test_unmount_targets(Mock *m, gconstpointer data);
void test_open_read_only_by_default_and_json(Mock *m, gconstpointer data);
void test_open_writable_and_sector_size(Mock *m, gconstpointer data);
void test_open_nothing_to_mount(Mock *m, gconstpointer data);
void test_close_device_unmounts(Mock *m, gconstpointer data);
void test_auth_interactive_flag(Mock *m, gconstpointer data);
void test_auth_error_passed_through(Mock *m, gconstpointer data);

/* loopctl-cli-agent.c */
char *agent_log(const Agent *a);
void test_auth_agent_on_terminal(Mock *m, gconstpointer data);
void test_auth_no_agent_when_not_asked(Mock *m, gconstpointer data);
void test_output_write_error_fails(Mock *m, gconstpointer data);
void test_monitor_json_lines(Mock *m, gconstpointer data);
void test_monitor_human_lines(Mock *m, gconstpointer data);
void test_monitor_ignores_other_senders(Mock *m, gconstpointer data);
void test_monitor_bus_gone_is_an_error(Mock *m, gconstpointer data);

/* loopctl-cli-modify.c */
void test_modify_usage_format(void);
void test_modify_usage_partition(void);
void test_modify_usage_create(void);
void test_modify_create_refused_makes_no_file(void);
void test_modify_create_never_overwrites(void);
void test_modify_nodes_fail_before_the_bus(void);
void test_modify_help_lists_commands(void);
void test_modify_format_sends_node_type_and_options(Mock *m, gconstpointer data);
void test_modify_format_error_is_one_line(Mock *m, gconstpointer data);
void test_modify_partition_add_defaults_and_output(Mock *m, gconstpointer data);
void test_modify_partition_add_options(Mock *m, gconstpointer data);
void test_modify_partition_add_to_image(Mock *m, gconstpointer data);
void test_modify_partition_add_errors(Mock *m, gconstpointer data);
void test_modify_partition_delete(Mock *m, gconstpointer data);
void test_modify_create_table_partition_filesystem(Mock *m, gconstpointer data);
void test_modify_create_json_is_attachs(Mock *m, gconstpointer data);
void test_modify_create_filesystem_on_the_whole_device(Mock *m, gconstpointer data);
void test_modify_create_partition_type_fits_filesystem(Mock *m, gconstpointer data);
void test_modify_create_failure_leaves_nothing(Mock *m, gconstpointer data);
void test_modify_create_attach_refused_removes_file(Mock *m, gconstpointer data);
void test_modify_create_undo_failure_is_said(Mock *m, gconstpointer data);
void test_modify_create_interrupted_leaves_nothing(Mock *m, gconstpointer data);

/* loopctl-cli-speak.c */
void test_speak_help_per_command(void);
void test_speak_global_help_points_to_commands(void);
void test_speak_json_usage_errors(void);
void test_speak_json_local_errors(void);
void test_speak_json_bus_errors(Mock *m, gconstpointer data);
void test_speak_error_wordings(Mock *m, gconstpointer data);
void test_speak_polkit_denial_says_what_to_do(Mock *m, gconstpointer data);
void test_speak_list_empty_has_a_header(Mock *m, gconstpointer data);
void test_speak_commands_say_what_they_did(Mock *m, gconstpointer data);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(Run, run_free)
