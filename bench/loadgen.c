// SPDX-License-Identifier: Apache-2.0
/*
 * loadgen: drive the burst BPF program at a steady event rate.
 *
 *   loadgen --rate EVENTS_PER_SECOND --per-trigger N --duration SECONDS [--cpu C]
 *
 * Prints {"pid": P} so the consumer can target this process, waits for a line on stdin (the
 * consumer is attached), then calls getppid() so that triggers * N follows rate * elapsed time.
 * Each call makes the burst program emit N events. Ends with one JSON line of what it did.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Longest sleep when ahead of schedule: short enough to keep the rate smooth. */
#define MAX_SLEEP_NS 200000L
#define NSEC_PER_SEC 1000000000L

static void usage(void)
{
	fprintf(stderr,
		"usage: loadgen --rate EVENTS_PER_SECOND --per-trigger N --duration SECONDS [--cpu C]\n");
	exit(2);
}

static double parse_positive(const char *arg, const char *name)
{
	char *end;
	double value;

	errno = 0;
	value = strtod(arg, &end);
	if (errno || end == arg || *end || !(value > 0)) {
		fprintf(stderr, "loadgen: invalid %s: %s\n", name, arg);
		exit(2);
	}
	return value;
}

static unsigned int parse_uint(const char *arg, const char *name)
{
	char *end;
	unsigned long value;

	errno = 0;
	value = strtoul(arg, &end, 10);
	if (errno || end == arg || *end || value > 0xffffffffUL) {
		fprintf(stderr, "loadgen: invalid %s: %s\n", name, arg);
		exit(2);
	}
	return value;
}

static double seconds_since(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) + (now.tv_nsec - start->tv_nsec) / 1e9;
}

static void pin_to_cpu(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		fprintf(stderr, "loadgen: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "rate", required_argument, NULL, 'r' },
		{ "per-trigger", required_argument, NULL, 'n' },
		{ "duration", required_argument, NULL, 'd' },
		{ "cpu", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	double rate = 0, duration = 0, elapsed, ahead;
	unsigned int per_trigger = 0;
	unsigned long long triggers = 0;
	struct timespec start, pause;
	char *line = NULL;
	size_t line_size = 0;
	int cpu = -1;
	int opt;

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'r':
			rate = parse_positive(optarg, "rate");
			break;
		case 'n':
			per_trigger = parse_uint(optarg, "per-trigger");
			break;
		case 'd':
			duration = parse_positive(optarg, "duration");
			break;
		case 'c':
			cpu = parse_uint(optarg, "cpu");
			break;
		default:
			usage();
		}
	}
	if (optind != argc || rate == 0 || per_trigger == 0 || duration == 0)
		usage();
	if (cpu >= 0)
		pin_to_cpu(cpu);

	printf("{\"pid\": %d}\n", getpid());
	fflush(stdout);
	if (getline(&line, &line_size, stdin) < 0) {
		fprintf(stderr, "loadgen: stdin closed before the start line\n");
		return 1;
	}
	free(line);

	clock_gettime(CLOCK_MONOTONIC, &start);
	while ((elapsed = seconds_since(&start)) < duration) {
		/* How long until the next trigger is due; <= 0 means behind: go at once. */
		ahead = (triggers + 1) * per_trigger / rate - elapsed;
		if (ahead <= 0) {
			syscall(SYS_getppid);
			triggers++;
			continue;
		}
		pause.tv_sec = 0;
		pause.tv_nsec = ahead * NSEC_PER_SEC < MAX_SLEEP_NS ? ahead * NSEC_PER_SEC : MAX_SLEEP_NS;
		clock_nanosleep(CLOCK_MONOTONIC, 0, &pause, NULL);
	}
	elapsed = seconds_since(&start);

	printf("{\"triggers\": %llu, \"events\": %llu, \"seconds\": %.6f, "
	       "\"offered_rate\": %.1f, \"achieved_rate\": %.1f}\n",
	       triggers, triggers * per_trigger, elapsed, rate, triggers * per_trigger / elapsed);
	return 0;
}
