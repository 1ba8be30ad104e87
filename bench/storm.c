// SPDX-License-Identifier: Apache-2.0
/*
 * storm: an exec storm, to measure what an exec tracer keeps up with.
 *
 *   storm --count N --workers W --tag T [--path /bin/true]
 *
 * W worker processes together run PATH exactly N times (N/W each, the first N%W workers one
 * more), one child at a time per worker, as fast as posix_spawn allows. Every child gets argv
 * [PATH, "igrun-storm-T"] so that a trace can be matched to this run and no other exec.
 * Prints {"execs": N, "seconds": elapsed, "rate": N/elapsed} on stdout; exits 1 (and prints
 * nothing on stdout) if any spawn or child failed, since the count would then be wrong.
 *
 * Build: cc -O2 -Wall -o storm storm.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void usage(void)
{
	fprintf(stderr, "usage: storm --count N --workers W --tag T [--path /bin/true]\n");
	exit(2);
}

static long parse_positive(const char *text)
{
	char *end;
	long value;

	errno = 0;
	value = strtol(text, &end, 10);
	if (errno || *end || value <= 0)
		usage();
	return value;
}

/* One worker: spawn and reap `runs` children in a row. Returns 0, or 1 at the first failure. */
static int worker(const char *path, char *marker, long runs)
{
	char *argv[] = {(char *)path, marker, NULL};
	int status, err;
	pid_t child;
	long i;

	for (i = 0; i < runs; i++) {
		/* glibc's posix_spawn uses clone(CLONE_VM|CLONE_VFORK): no page-table copy. */
		err = posix_spawn(&child, path, NULL, NULL, argv, environ);
		if (err) {
			fprintf(stderr, "storm: spawn %s: %s\n", path, strerror(err));
			return 1;
		}
		if (waitpid(child, &status, 0) < 0) {
			perror("storm: waitpid");
			return 1;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status)) {
			fprintf(stderr, "storm: %s failed (status %#x)\n", path, status);
			return 1;
		}
	}
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{"count", required_argument, NULL, 'c'},
		{"workers", required_argument, NULL, 'w'},
		{"path", required_argument, NULL, 'p'},
		{"tag", required_argument, NULL, 't'},
		{NULL, 0, NULL, 0},
	};
	const char *path = "/bin/true", *tag = NULL;
	long count = 0, workers = 0, w;
	char marker[256];
	int opt, status, failed = 0;
	double start, seconds;
	pid_t pid, parent = getpid();

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			count = parse_positive(optarg);
			break;
		case 'w':
			workers = parse_positive(optarg);
			break;
		case 'p':
			path = optarg;
			break;
		case 't':
			tag = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || !count || !workers || !tag)
		usage();
	if (workers > count)
		workers = count;
	if (snprintf(marker, sizeof(marker), "igrun-storm-%s", tag) >= (int)sizeof(marker)) {
		fprintf(stderr, "storm: tag too long\n");
		return 2;
	}

	start = now();
	for (w = 0; w < workers; w++) {
		pid = fork();
		if (pid < 0) {
			perror("storm: fork");
			failed = 1;
			break;
		}
		if (pid == 0) {
			/* Workers die with the storm: whoever kills it leaves no exec loop behind. */
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
				_exit(1);
			_exit(worker(path, marker, count / workers + (w < count % workers)));
		}
	}
	/* Reap every worker that was started, even after a failed fork. */
	while ((pid = wait(&status)) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			failed = 1;
	seconds = now() - start;
	if (failed)
		return 1;
	printf("{\"execs\": %ld, \"seconds\": %.6f, \"rate\": %.1f}\n", count, seconds,
	       count / seconds);
	return 0;
}
