// SPDX-License-Identifier: Apache-2.0
/*
 * DNS load for the trace dns benchmark: a responder and a query generator over UDP on the
 * loopback, batched with sendmmsg/recvmmsg so that one core sends as many queries as it can.
 *
 *   dnsload serve PORT                   answer every query (one A record), until killed;
 *                                        on SIGTERM print {"replies": N}
 *   dnsload query PORT RATE SECONDS      send RATE queries/s (0: as fast as possible) for
 *                                        SECONDS, reading the replies; print
 *                                        {"sent": N, "received": M, "seconds": S}
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define QNAME "\x04load\x05igrun\x04test"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t make_query(unsigned char *buf, uint16_t id)
{
	static const unsigned char flags_counts[] = { 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
	size_t n = 0;

	buf[n++] = id >> 8;
	buf[n++] = id & 0xff;
	memcpy(buf + n, flags_counts, sizeof(flags_counts));
	n += sizeof(flags_counts);
	memcpy(buf + n, QNAME, sizeof(QNAME)); /* with its root label */
	n += sizeof(QNAME);
	buf[n++] = 0;
	buf[n++] = 1; /* A */
	buf[n++] = 0;
	buf[n++] = 1; /* IN */
	return n;
}

static int serve(int port)
{
	static unsigned char bufs[BATCH][512];
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct sockaddr_in peers[BATCH];
	struct mmsghdr msgs[BATCH];
	struct iovec iovs[BATCH];
	unsigned long long replies = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int size = 8 << 20;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		perror("dnsload serve");
		return 1;
	}
	printf("serving\n");
	fflush(stdout);
	while (!stop) {
		int n;

		for (int i = 0; i < BATCH; i++) {
			iovs[i] = (struct iovec){ bufs[i], sizeof(bufs[i]) - 16 };
			msgs[i] = (struct mmsghdr){ .msg_hdr = { .msg_name = &peers[i],
								 .msg_namelen = sizeof(peers[i]),
								 .msg_iov = &iovs[i],
								 .msg_iovlen = 1 } };
		}
		n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			unsigned char *b = bufs[i];
			unsigned int len = msgs[i].msg_len;
			static const unsigned char answer[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60,
								0, 4, 10, 53, 0, 1 };

			b[2] = 0x81; /* response, recursion desired */
			b[3] = 0x80;
			b[7] = 1; /* one answer */
			memcpy(b + len, answer, sizeof(answer));
			iovs[i].iov_len = len + sizeof(answer);
		}
		n = sendmmsg(fd, msgs, n, 0);
		if (n > 0)
			replies += n;
	}
	printf("{\"replies\": %llu}\n", replies);
	return 0;
}

static int query(int port, double rate, double seconds)
{
	static unsigned char out[BATCH][64], in[BATCH][512];
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(port) };
	struct mmsghdr sends[BATCH], recvs[BATCH];
	struct iovec siov[BATCH], riov[BATCH];
	unsigned long long sent = 0, received = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int size = 8 << 20;
	double start, end, t;
	uint16_t id = 0;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
		perror("dnsload query");
		return 1;
	}
	for (int i = 0; i < BATCH; i++) {
		riov[i] = (struct iovec){ in[i], sizeof(in[i]) };
		recvs[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &riov[i], .msg_iovlen = 1 } };
	}
	start = now();
	end = start + seconds;
	while ((t = now()) < end) {
		int n;

		if (rate > 0 && sent >= (t - start) * rate) {
			n = recvmmsg(fd, recvs, BATCH, MSG_DONTWAIT, NULL);
			if (n > 0)
				received += n;
			else
				usleep(100);
			continue;
		}
		for (int i = 0; i < BATCH; i++) {
			siov[i] = (struct iovec){ out[i], make_query(out[i], id++) };
			sends[i] = (struct mmsghdr){ .msg_hdr = { .msg_iov = &siov[i], .msg_iovlen = 1 } };
		}
		n = sendmmsg(fd, sends, BATCH, 0);
		if (n > 0)
			sent += n;
		while ((n = recvmmsg(fd, recvs, BATCH, MSG_DONTWAIT, NULL)) > 0)
			received += n;
	}
	end = now();
	usleep(200000); /* the last replies */
	for (int n; (n = recvmmsg(fd, recvs, BATCH, MSG_DONTWAIT, NULL)) > 0;)
		received += n;
	printf("{\"sent\": %llu, \"received\": %llu, \"seconds\": %.3f}\n", sent, received,
	       end - start);
	return 0;
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: end a blocked read */

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(atoi(argv[2]));
	if (argc == 5 && !strcmp(argv[1], "query"))
		return query(atoi(argv[2]), atof(argv[3]), atof(argv[4]));
	fprintf(stderr, "usage: dnsload serve PORT | dnsload query PORT RATE SECONDS\n");
	return 2;
}
