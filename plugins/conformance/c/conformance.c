/* The C module of qrun's ABI conformance suite: the scripted behaviour of
 * plugins/conformance/README.md, written with the C SDK. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qrun.h"

/* Lives as long as the instance: the "count" command proves it. */
static unsigned count;

static qrun_verdict out(const char *s) {
	return qrun_publish("out", s, strlen(s), NULL, 0) == 0 ? QRUN_ACK : QRUN_NACK;
}

/* out(v) or out("<absent>"), freeing v. */
static qrun_verdict out_or_absent(char *v) {
	qrun_verdict r = out(v != NULL ? v : "<absent>");
	free(v);
	return r;
}

/* parse_int reads a whole optionally signed decimal; false if s is not one. */
static bool parse_int(const char *s, long long *v) {
	char *end;
	if (*s == '\0') return false;
	*v = strtoll(s, &end, 10);
	return *end == '\0';
}

static qrun_verdict echo(const char *arg, size_t len) {
	/* Copy every attribute of the message onto the published one. */
	size_t n;
	qrun_attr *attrs = qrun_attrs_get_all(&n);
	if (attrs == NULL && n > 0) return QRUN_NACK;
	int32_t r = qrun_publish("out", arg, len, attrs, n);
	qrun_attrs_free(attrs, n);
	return r == 0 ? QRUN_ACK : QRUN_NACK;
}

/* err_word names a failed request's error as the script does. */
static const char *err_word(int32_t r) {
	switch (r) {
	case QRUN_ERR_DENIED: return "denied";
	case QRUN_ERR_TOO_LARGE: return "toolarge";
	case QRUN_ERR_TIMEOUT: return "timeout";
	case QRUN_ERR_CONNECT: return "connect";
	case QRUN_ERR_LIMIT: return "limit";
	}
	return "error";
}

static qrun_verdict http(const char *url) {
	qrun_attr h = {"X-Guest", "yes"};
	qrun_http_response resp;
	int32_t r = qrun_http("POST", url, &h, 1, "ping", 4, &resp);
	if (r < 0) return out(err_word(r));
	char num[16];
	snprintf(num, sizeof num, "%d", (int)resp.status);
	qrun_verdict v = out(num);
	if (v == QRUN_ACK) v = qrun_publish("out", resp.body, resp.len, NULL, 0) == 0 ? QRUN_ACK : QRUN_NACK;
	qrun_http_response_free(&resp);
	return v;
}

static qrun_verdict httpmany(const char *url) {
	qrun_http_response resp;
	int32_t r;
	unsigned n = 0;
	while ((r = qrun_http(NULL, url, NULL, 0, NULL, 0, &resp)) >= 0) {
		qrun_http_response_free(&resp);
		n++;
	}
	char num[16];
	snprintf(num, sizeof num, "%u", n);
	qrun_verdict v = out(num);
	return v == QRUN_ACK ? out(err_word(r)) : v;
}

/* kv_word names a failed store or state call's error as the script does. */
static const char *kv_word(int32_t r) {
	switch (r) {
	case QRUN_ERR_DENIED: return "denied";
	case QRUN_ERR_INVALID: return "invalid";
	case QRUN_ERR_TOO_LARGE: return "toolarge";
	case QRUN_ERR_CONFLICT: return "conflict";
	case QRUN_ERR_UNSUPPORTED: return "unsupported";
	}
	return "error";
}

/* out_kv publishes "ok" for r == 0, else r's word. */
static qrun_verdict out_kv(int32_t r) { return out(r == 0 ? "ok" : kv_word(r)); }

/* out_read publishes a value qrun_kv_get or qrun_state_get returned (r its
 * length or error), "<absent>" or the error's word, freeing it. */
static qrun_verdict out_read(int32_t r, char *v) {
	qrun_verdict res;
	if (r >= 0) {
		res = qrun_publish("out", v, (size_t)r, NULL, 0) == 0 ? QRUN_ACK : QRUN_NACK;
	} else {
		res = out(r == QRUN_ERR_NOT_FOUND ? "<absent>" : kv_word(r));
	}
	free(v);
	return res;
}

static qrun_verdict out_num(long long n) {
	char num[24];
	snprintf(num, sizeof num, "%lld", n);
	return out(num);
}

/* kv runs the store and state commands; QRUN_DEAD_LETTER for any other
 * command. Not inlined, so that handle's trivial path (BenchmarkHandle)
 * stays as it was. */
__attribute__((noinline)) static qrun_verdict kv(const char *cmd, const char *arg, size_t arg_len) {
	char *val;
	long long n;
	int32_t r;
	if (strcmp(cmd, "kvget") == 0) {
		r = qrun_kv_get("kv", arg, &val);
		return out_read(r, val);
	} else if (strcmp(cmd, "kvset") == 0) {
		return out_kv(qrun_kv_set("kv", "k", arg, arg_len, 0));
	} else if (strcmp(cmd, "kvttl") == 0) {
		if (parse_int(arg, &n)) return out_kv(qrun_kv_set("kv", "k", "t", 1, n));
	} else if (strcmp(cmd, "kvver") == 0) {
		int64_t ver = qrun_kv_version("kv", "k");
		return ver < 0 ? out(kv_word((int32_t)ver)) : out_num(ver);
	} else if (strcmp(cmd, "kvcas") == 0) {
		if (parse_int(arg, &n)) return out_kv(qrun_kv_cas("kv", "k", n, "cas", 3, 0));
	} else if (strcmp(cmd, "kvdel") == 0) {
		return out_kv(qrun_kv_delete("kv", "k"));
	} else if (strcmp(cmd, "kvincr") == 0) {
		int64_t sum;
		if (parse_int(arg, &n)) {
			r = qrun_kv_incr("kv", "k", n, &sum);
			return r < 0 ? out(kv_word(r)) : out_num(sum);
		}
	} else if (strcmp(cmd, "kvadd") == 0) {
		if (parse_int(arg, &n)) return out_kv(qrun_kv_add("kv", "k", n));
	} else if (strcmp(cmd, "kvaddget") == 0) {
		if (parse_int(arg, &n)) {
			if (out_kv(qrun_kv_add("kv", "k", n)) != QRUN_ACK) return QRUN_NACK;
			r = qrun_kv_get("kv", "k", &val);
			return out_read(r, val);
		}
	} else if (strcmp(cmd, "kvrw") == 0) {
		r = qrun_kv_set("kv", "k", arg, arg_len, 0);
		if (r < 0) return out(kv_word(r));
		r = qrun_kv_get("kv", "k", &val);
		return out_read(r, val);
	} else if (strcmp(cmd, "kvother") == 0) {
		r = qrun_kv_get("other", "k", &val);
		return out_read(r, val);
	} else if (strcmp(cmd, "state") == 0) {
		r = qrun_state_get(&val);
		if (out_read(r, val) != QRUN_ACK) return QRUN_NACK;
		out_kv(qrun_state_set(arg, arg_len));
		return QRUN_NACK;
	}
	return QRUN_DEAD_LETTER;
}

static qrun_verdict handle(const qrun_msg *m) {
	/* The command and its argument as NUL-terminated strings. */
	char *body = malloc(m->len + 1);
	if (body == NULL) return QRUN_NACK;
	memcpy(body, m->body, m->len);
	body[m->len] = '\0';
	if (strlen(body) != m->len) { /* a NUL inside: not a command */
		free(body);
		return QRUN_DEAD_LETTER;
	}
	char *arg = strchr(body, ':');
	size_t arg_len = 0;
	if (arg != NULL) {
		*arg++ = '\0';
		arg_len = m->len - (size_t)(arg - body);
	} else {
		arg = body + m->len;
	}
	long long n;
	char num[24];
	qrun_verdict v = QRUN_DEAD_LETTER;
	if (strcmp(body, "verdict") == 0) {
		/* Any number, bad verdicts included: they are part of the script. */
		if (parse_int(arg, &n)) v = (qrun_verdict)(int32_t)n;
	} else if (strcmp(body, "trap") == 0) {
		__builtin_trap();
	} else if (strcmp(body, "echo") == 0) {
		v = echo(arg, arg_len);
	} else if (strcmp(body, "attr") == 0) {
		v = out_or_absent(qrun_attr_get(arg));
	} else if (strcmp(body, "config") == 0) {
		v = out_or_absent(qrun_config_get(arg));
	} else if (strcmp(body, "id") == 0) {
		v = out_or_absent(qrun_msg_id());
	} else if (strcmp(body, "attempt") == 0) {
		snprintf(num, sizeof num, "%d", (int)qrun_msg_attempt());
		v = out(num);
	} else if (strcmp(body, "delay") == 0) {
		if (parse_int(arg, &n)) {
			qrun_set_delay_ms(n);
			v = QRUN_NACK;
		}
	} else if (strcmp(body, "deadreason") == 0) {
		v = qrun_dead_letter_with(arg);
	} else if (strcmp(body, "nackreason") == 0) {
		v = qrun_nack_with(arg);
	} else if (strcmp(body, "pub") == 0) {
		int32_t r = qrun_publish(arg, "x", 1, NULL, 0);
		v = out(r == 0 ? "ok" : r == QRUN_ERR_DENIED ? "denied" : "error");
	} else if (strcmp(body, "extend") == 0) {
		if (parse_int(arg, &n)) v = out(qrun_extend_lease_ms(n) == 0 ? "ok" : "error");
	} else if (strcmp(body, "log") == 0) {
		qrun_log(QRUN_INFO, arg);
		v = QRUN_ACK;
	} else if (strcmp(body, "count") == 0) {
		snprintf(num, sizeof num, "%u", ++count);
		v = out(num);
	} else if (strcmp(body, "http") == 0) {
		v = http(arg);
	} else if (strcmp(body, "retry") == 0) {
		qrun_http_response resp;
		int32_t r = qrun_http(NULL, arg, NULL, 0, NULL, 0, &resp);
		if (r < 0) {
			v = QRUN_NACK;
		} else {
			v = r >= 200 && r < 300 ? QRUN_ACK : qrun_http_retry_later(r);
			qrun_http_response_free(&resp);
		}
	} else if (strcmp(body, "httpmany") == 0) {
		v = httpmany(arg);
	} else if (strncmp(body, "kv", 2) == 0 || strcmp(body, "state") == 0) {
		v = kv(body, arg, arg_len);
	}
	free(body);
	return v;
}

static int init(void) {
	char *refuse = qrun_config_get("refuse");
	if (refuse == NULL) return 0;
	qrun_logf(QRUN_ERROR, "init failed: refused by config: %s", refuse);
	free(refuse);
	return 1;
}

QRUN_HANDLER(handle)
QRUN_INIT(init)
