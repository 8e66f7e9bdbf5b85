/* polkit-agent.h: a text polkit agent (pkttyagent) that lives while loopctl waits for an interactive call.
 */
#pragma once

#include <sys/types.h>

/* Starts "pkttyagent --notify-fd N --fallback" (found in $PATH) registered for this process and waits
 * until it says it is registered, as systemd's tools do. Only useful when stdin is a terminal; the
 * caller decides. Returns the agent's pid (> 0), 0 when no agent could be started (not fatal: polkit
 * then answers without asking), never an error. */
pid_t polkit_agent_open(void);
/* Stops and reaps the agent; accepts 0. Returns 0 so that "pid = polkit_agent_close(pid);" reads well. */
pid_t polkit_agent_close(pid_t pid);
