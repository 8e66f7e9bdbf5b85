/* desktop.h: loopctl in the user's graphical session: whether anyone can read its error line, desktop
 * notifications, the file manager. Nothing here fails a command: what cannot be shown is at most logged. */
#pragma once

#include <stdbool.h>

/* True in a graphical session (DISPLAY or WAYLAND_DISPLAY set) when none of stdin, stdout and stderr is a
 * terminal: loopctl was started from a desktop entry or a file manager, and nobody reads its stderr. */
bool desktop_unattended(void);
/* Sends one notification, summary over body (both plain text), on the session bus, and waits a few seconds
 * at most. Failing to is silent: the error line is on stderr already. */
void desktop_notify_error(const char *summary, const char *body);
/* Opens the folder path in the user's file manager: org.freedesktop.FileManager1 on the session bus, else
 * xdg-open in a graphical session. Logs a warning when neither could. */
void desktop_show_folder(const char *path);
