/*
 * mqclient: a plain libc POSIX message queue program, for qrun's interop
 * tests. It knows nothing of qrun.
 *
 *   mqclient send NAME PRIO:HEX...   mq_send each message (HEX is its bytes)
 *   mqclient recv NAME COUNT         mq_timedreceive COUNT messages (10 s
 *                                    each at most), printing PRIO:HEX lines
 */
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int hexval(char c) {
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

static int do_send(const char *name, int n, char **msgs) {
	mqd_t q = mq_open(name, O_WRONLY);
	if (q == (mqd_t)-1) { perror("mq_open"); return 1; }
	for (int i = 0; i < n; i++) {
		char *colon = strchr(msgs[i], ':');
		if (!colon) { fprintf(stderr, "want PRIO:HEX, got %s\n", msgs[i]); return 2; }
		unsigned prio = (unsigned)strtoul(msgs[i], NULL, 10);
		const char *hex = colon + 1;
		size_t len = strlen(hex) / 2;
		char *buf = malloc(len + 1);
		for (size_t j = 0; j < len; j++) {
			int hi = hexval(hex[2 * j]), lo = hexval(hex[2 * j + 1]);
			if (hi < 0 || lo < 0) { fprintf(stderr, "bad hex %s\n", hex); return 2; }
			buf[j] = (char)(hi << 4 | lo);
		}
		if (mq_send(q, buf, len, prio) != 0) { perror("mq_send"); return 1; }
		free(buf);
	}
	return mq_close(q) == 0 ? 0 : 1;
}

static int do_recv(const char *name, int count) {
	mqd_t q = mq_open(name, O_RDONLY);
	if (q == (mqd_t)-1) { perror("mq_open"); return 1; }
	struct mq_attr a;
	if (mq_getattr(q, &a) != 0) { perror("mq_getattr"); return 1; }
	char *buf = malloc(a.mq_msgsize);
	for (int i = 0; i < count; i++) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 10;
		unsigned prio;
		ssize_t n = mq_timedreceive(q, buf, a.mq_msgsize, &prio, &ts);
		if (n < 0) { perror("mq_timedreceive"); return 1; }
		printf("%u:", prio);
		for (ssize_t j = 0; j < n; j++) printf("%02x", (unsigned char)buf[j]);
		printf("\n");
	}
	fflush(stdout);
	return mq_close(q) == 0 ? 0 : 1;
}

int main(int argc, char **argv) {
	if (argc >= 3 && strcmp(argv[1], "send") == 0) return do_send(argv[2], argc - 3, argv + 3);
	if (argc == 4 && strcmp(argv[1], "recv") == 0) return do_recv(argv[2], atoi(argv[3]));
	fprintf(stderr, "usage: mqclient send NAME PRIO:HEX... | mqclient recv NAME COUNT\n");
	return 2;
}
