// SPDX-License-Identifier: Apache-2.0
/*
 * refconsumer: the reference consumer of the burst program, over plain libbpf, as a C tool
 * would read it. It only counts records and tracks their sequence numbers, so what it costs
 * is the floor any consumer pays for the same events.
 *
 *   refconsumer OBJECT.bpf.o --pid P --per-trigger N [--cpu C] [--ring-bytes B] [--pages P]
 *               [--wakeup-events W]
 *
 * Prints "ready" once attached, consumes until SIGINT or SIGTERM, drains what is left, and
 * prints one JSON line of what it received. It polls as igrun's reader does: a 100 ms epoll
 * wait that the BPF side's watermark wakeup ends early, then a drain of whatever is there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#define MAX_LINKS 8

struct stats {
	unsigned long long received;
	unsigned long long max_seq;
	unsigned long long perf_lost;
};

/* A perf sample as perf_buffer hands it over: the header, then the BPF program's bytes. */
struct perf_sample {
	struct perf_event_header header;
	__u32 size;
	char data[];
};

struct perf_lost {
	struct perf_event_header header;
	__u64 id;
	__u64 lost;
};

static volatile sig_atomic_t stopping;

static void fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "refconsumer: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: refconsumer OBJECT.bpf.o --pid P --per-trigger N [--cpu C] "
			"[--ring-bytes B] [--pages P] [--wakeup-events W]\n");
	exit(2);
}

static unsigned long parse_ulong(const char *arg, const char *name)
{
	char *end;
	unsigned long value;

	errno = 0;
	value = strtoul(arg, &end, 0);
	if (errno || end == arg || *end) {
		fprintf(stderr, "refconsumer: invalid %s: %s\n", name, arg);
		exit(2);
	}
	return value;
}

static void on_signal(int sig)
{
	stopping = 1;
}

/* The sequence number is the first member of struct burst_event (burst.h). */
static void count_record(struct stats *stats, const void *data, size_t size)
{
	__u64 seq;

	if (size < sizeof(seq))
		return;
	memcpy(&seq, data, sizeof(seq));
	stats->received++;
	if (seq > stats->max_seq)
		stats->max_seq = seq;
}

static int on_ring_record(void *ctx, void *data, size_t size)
{
	count_record(ctx, data, size);
	return 0;
}

static enum bpf_perf_event_ret on_perf_record(void *ctx, int cpu, struct perf_event_header *event)
{
	struct stats *stats = ctx;

	if (event->type == PERF_RECORD_SAMPLE) {
		struct perf_sample *sample = (struct perf_sample *)event;

		count_record(stats, sample->data, sample->size);
	} else if (event->type == PERF_RECORD_LOST) {
		stats->perf_lost += ((struct perf_lost *)event)->lost;
	}
	return LIBBPF_PERF_EVENT_CONT;
}

/* Write a `const volatile` global's value before load: find its offset in .rodata through the
 * object's BTF and patch the map's initial value. */
static void set_rodata(struct bpf_object *obj, const char *name, __u32 value)
{
	struct bpf_map *rodata = bpf_object__find_map_by_name(obj, ".rodata");
	struct btf *btf = bpf_object__btf(obj);
	const struct btf_var_secinfo *vsi;
	const struct btf_type *sec;
	size_t size;
	char *initial;
	int id, i;

	if (!rodata || !btf)
		fail("%s: no .rodata map or no BTF", bpf_object__name(obj));
	id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
	if (id < 0)
		fail("%s: no .rodata section in BTF", bpf_object__name(obj));
	sec = btf__type_by_id(btf, id);
	/* libbpf 1.1 declares the value const, but it is the map's writable image until load. */
	initial = (char *)bpf_map__initial_value(rodata, &size);
	vsi = btf_var_secinfos(sec);
	for (i = 0; i < btf_vlen(sec); i++, vsi++) {
		const struct btf_type *var = btf__type_by_id(btf, vsi->type);

		if (strcmp(btf__name_by_offset(btf, var->name_off), name) != 0)
			continue;
		if (vsi->size != sizeof(value) || vsi->offset + sizeof(value) > size)
			fail("%s: %s is not a __u32", bpf_object__name(obj), name);
		memcpy(initial + vsi->offset, &value, sizeof(value));
		return;
	}
	fail("%s: no global %s", bpf_object__name(obj), name);
}

/* Events the BPF side could not write, summed over CPUs. */
static unsigned long long lost_in_kernel(struct bpf_object *obj)
{
	struct bpf_map *map = bpf_object__find_map_by_name(obj, "gadget_lost_events");
	int ncpus = libbpf_num_possible_cpus();
	unsigned long long total = 0;
	__u32 zero = 0;
	__u64 *values;
	int i;

	if (!map)
		fail("%s: no gadget_lost_events map", bpf_object__name(obj));
	values = calloc(ncpus, sizeof(*values));
	if (!values)
		fail("out of memory");
	if (bpf_map__lookup_elem(map, &zero, sizeof(zero), values, ncpus * sizeof(*values), 0))
		fail("reading gadget_lost_events: %s", strerror(errno));
	for (i = 0; i < ncpus; i++)
		total += values[i];
	free(values);
	return total;
}

static double cpu_seconds(void)
{
	struct rusage usage;

	getrusage(RUSAGE_SELF, &usage);
	return usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 + usage.ru_stime.tv_sec +
	       usage.ru_stime.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "pid", required_argument, NULL, 'p' },
		{ "per-trigger", required_argument, NULL, 'n' },
		{ "cpu", required_argument, NULL, 'c' },
		{ "ring-bytes", required_argument, NULL, 'b' },
		{ "pages", required_argument, NULL, 'g' },
		{ "wakeup-events", required_argument, NULL, 'w' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long pid = 0, per_trigger = 0, ring_bytes = 16 << 20, pages = 64, wakeup = 1;
	struct perf_event_attr attr = {};
	struct bpf_link *links[MAX_LINKS];
	struct ring_buffer *ring = NULL;
	struct perf_buffer *perf = NULL;
	struct stats stats = {};
	struct bpf_program *prog;
	struct bpf_object *obj;
	struct bpf_map *events;
	struct sigaction sa = {};
	const char *path;
	double start_cpu;
	int nlinks = 0, cpu = -1;
	int opt, err, i;

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (opt) {
		case 'p':
			pid = parse_ulong(optarg, "pid");
			break;
		case 'n':
			per_trigger = parse_ulong(optarg, "per-trigger");
			break;
		case 'c':
			cpu = parse_ulong(optarg, "cpu");
			break;
		case 'b':
			ring_bytes = parse_ulong(optarg, "ring-bytes");
			break;
		case 'g':
			pages = parse_ulong(optarg, "pages");
			break;
		case 'w':
			wakeup = parse_ulong(optarg, "wakeup-events");
			break;
		default:
			usage();
		}
	}
	if (optind != argc - 1 || pid == 0 || per_trigger == 0)
		usage();
	path = argv[optind];

	/* Errors are reported in one line below; libbpf's own messages would add more. */
	libbpf_set_print(NULL);
	obj = bpf_object__open_file(path, NULL);
	if (!obj)
		fail("opening %s: %s", path, strerror(errno));
	set_rodata(obj, "target_tgid", pid);
	set_rodata(obj, "events_per_trigger", per_trigger);
	events = bpf_object__find_map_by_name(obj, "events");
	if (!events)
		fail("%s: no events map", path);
	if (bpf_map__type(events) == BPF_MAP_TYPE_RINGBUF &&
	    (err = bpf_map__set_max_entries(events, ring_bytes)))
		fail("setting the ring buffer size: %s", strerror(-err));
	err = bpf_object__load(obj);
	if (err)
		fail("loading %s: %s", path, strerror(-err));
	bpf_object__for_each_program(prog, obj) {
		if (nlinks == MAX_LINKS)
			fail("%s: more than %d programs", path, MAX_LINKS);
		links[nlinks] = bpf_program__attach(prog);
		if (!links[nlinks])
			fail("attaching %s: %s", bpf_program__name(prog), strerror(errno));
		nlinks++;
	}

	if (bpf_map__type(events) == BPF_MAP_TYPE_RINGBUF) {
		ring = ring_buffer__new(bpf_map__fd(events), on_ring_record, &stats, NULL);
		if (!ring)
			fail("creating the ring buffer reader: %s", strerror(errno));
	} else {
		attr.type = PERF_TYPE_SOFTWARE;
		attr.config = PERF_COUNT_SW_BPF_OUTPUT;
		attr.sample_type = PERF_SAMPLE_RAW;
		attr.sample_period = 1;
		attr.wakeup_events = wakeup;
		perf = perf_buffer__new_raw(bpf_map__fd(events), pages, &attr, on_perf_record,
					    &stats, NULL);
		if (!perf)
			fail("creating the perf buffer reader: %s", strerror(errno));
	}

	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set))
			fail("pinning to CPU %d: %s", cpu, strerror(errno));
	}
	/* No SA_RESTART: a signal must end the poll at once. */
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	printf("ready\n");
	fflush(stdout);
	start_cpu = cpu_seconds();

	/* The burst program wakes a ring buffer's reader only past an eighth of the ring
	 * (gadget_submit_buf in igrun/buffer.h): the poll sleeps until then or for 100 ms, and
	 * what is below the watermark is consumed after it. */
	while (!stopping) {
		err = ring ? ring_buffer__poll(ring, 100) : perf_buffer__poll(perf, 100);
		if (err >= 0 || err == -EINTR)
			err = ring ? ring_buffer__consume(ring) : perf_buffer__consume(perf);
		if (err < 0 && err != -EINTR)
			fail("polling: %s", strerror(-err));
	}
	/* Whatever arrived since the last wakeup (with wakeup_events > 1, the tail). */
	err = ring ? ring_buffer__consume(ring) : perf_buffer__consume(perf);
	if (err < 0)
		fail("draining: %s", strerror(-err));

	printf("{\"received\": %llu, \"max_seq\": %llu, \"gaps\": %llu, \"dropped\": %llu, "
	       "\"perf_lost\": %llu, \"cpu_seconds\": %.6f}\n",
	       stats.received, stats.max_seq,
	       stats.received ? stats.max_seq + 1 - stats.received : 0, lost_in_kernel(obj),
	       stats.perf_lost, cpu_seconds() - start_cpu);

	ring_buffer__free(ring);
	perf_buffer__free(perf);
	for (i = 0; i < nlinks; i++)
		bpf_link__destroy(links[i]);
	bpf_object__close(obj);
	return 0;
}
