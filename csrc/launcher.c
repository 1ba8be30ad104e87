/*
 * The igrun command: it blocks the stop signals (SIGINT, SIGTERM, SIGHUP), then runs igrun's
 * launcher in Python (`python3 -P -m igrun.core.cli ARGS`). A stop signal that comes while
 * the interpreter starts, before any of igrun's code has run, then waits, pending, instead of
 * killing the process (143 for SIGTERM): igrun.core.cli takes the signals, unblocks those
 * this program blocked (named in IGRUN_BLOCKED_SIGNALS), and a pending one stops the run as
 * one that comes later does (exit 0). Blocked and ignored dispositions are kept across exec,
 * so a SIGHUP that `nohup` ignores stays ignored.
 *
 * The interpreter is the `python3` next to this program when there is one (a virtual
 * environment's bin folder), else the one that built it (IGRUN_PYTHON), else the system's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef IGRUN_PYTHON
#define IGRUN_PYTHON "/usr/bin/python3"
#endif

static const int stop_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define NSTOP (sizeof(stop_signals) / sizeof(stop_signals[0]))

/* The python3 next to this program, in `out` (PATH_MAX bytes), or 0. */
static int sibling_python(char *out)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    char *slash;

    if (n <= 0)
        return 0;
    self[n] = '\0';
    slash = strrchr(self, '/');
    if (!slash)
        return 0;
    slash[1] = '\0';
    if (snprintf(out, PATH_MAX, "%spython3", self) >= PATH_MAX)
        return 0;
    return access(out, X_OK) == 0;
}

int main(int argc, char **argv)
{
    char python[PATH_MAX];
    char blocked[64] = "";
    sigset_t stop, before;
    char **args;
    size_t i, used = 0;

    if (argc < 1)
        return 127;
    sigemptyset(&stop);
    for (i = 0; i < NSTOP; i++)
        sigaddset(&stop, stop_signals[i]);
    if (sigprocmask(SIG_BLOCK, &stop, &before) != 0) {
        perror("igrun: sigprocmask");
        return 127;
    }
    /* Only what this program blocked is unblocked later: a mask set by the caller stays. */
    for (i = 0; i < NSTOP; i++) {
        if (sigismember(&before, stop_signals[i]))
            continue;
        used += (size_t)snprintf(blocked + used, sizeof(blocked) - used, "%s%d",
                                 used ? "," : "", stop_signals[i]);
    }
    if (setenv("IGRUN_BLOCKED_SIGNALS", blocked, 1) != 0) {
        perror("igrun: setenv");
        return 127;
    }
    if (!sibling_python(python)) {
        const char *known[] = {IGRUN_PYTHON, "/usr/bin/python3", "/usr/local/bin/python3"};

        snprintf(python, sizeof(python), "%s", known[0]);
        for (i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
            if (access(known[i], X_OK) == 0) {
                snprintf(python, sizeof(python), "%s", known[i]);
                break;
            }
        }
    }
    args = calloc((size_t)argc + 4, sizeof(*args));
    if (!args) {
        perror("igrun");
        return 127;
    }
    args[0] = python;
    args[1] = "-P"; /* not the working folder first in sys.path: igrun runs as root */
    args[2] = "-m";
    args[3] = "igrun.core.cli";
    for (i = 1; i < (size_t)argc; i++)
        args[i + 3] = argv[i];
    execv(python, args);
    fprintf(stderr, "igrun: cannot run %s: %s\n", python, strerror(errno));
    return 127;
}
