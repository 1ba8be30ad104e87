// SPDX-License-Identifier: Apache-2.0
/*
 * openstorm: opens at a steady rate, to measure what an open tracer keeps up with.
 *
 *   openstorm --count N --rate OPENS_PER_SECOND --path FILE
 *
 * Opens FILE (read-only, then closes it) exactly N times, paced so that the opens made follow
 * rate * elapsed time; a trace is matched to the storm by FILE, which the caller makes unique.
 * Prints {"opens": N, "seconds": elapsed, "rate": N/elapsed} on stdout; exits 1 (and prints
 * nothing on stdout) if an open fails, since the count would then be wrong.
 *
 * Build: cc -O2 -Wall -o openstorm openstorm.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest sleep when ahead of schedule: short enough to keep the rate smooth. */
#define MAX_SLEEP_NS 200000L

static void usage(void)
{
	fprintf(stderr, "usage: openstorm --count N --rate OPENS_PER_SECOND --path FILE\n");
	exit(2);
}

static double parse_positive(const char *text)
{
	char *end;
	double value;

	errno = 0;
	value = strtod(text, &end);
	if (errno || end == text || *end || !(value > 0))
		usage();
	return value;
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
		{"rate", required_argument, NULL, 'r'},
		{"path", required_argument, NULL, 'p'},
		{NULL, 0, NULL, 0},
	};
	const char *path = NULL;
	double rate = 0, start, ahead, seconds;
	long count = 0, done = 0;
	struct timespec pause;
	int opt, fd;

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'c':
			count = (long)parse_positive(optarg);
			break;
		case 'r':
			rate = parse_positive(optarg);
			break;
		case 'p':
			path = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || !count || !rate || !path)
		usage();

	start = now();
	while (done < count) {
		ahead = (done + 1) / rate - (now() - start);
		if (ahead > 0) {
			pause.tv_sec = 0;
			pause.tv_nsec = ahead * 1e9 < MAX_SLEEP_NS ? ahead * 1e9 : MAX_SLEEP_NS;
			clock_nanosleep(CLOCK_MONOTONIC, 0, &pause, NULL);
			continue;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			fprintf(stderr, "openstorm: open %s: %s\n", path, strerror(errno));
			return 1;
		}
		close(fd);
		done++;
	}
	seconds = now() - start;
	printf("{\"opens\": %ld, \"seconds\": %.6f, \"rate\": %.1f}\n", count, seconds,
	       count / seconds);
	return 0;
}
