/* __NAME__: a qrun message handler written with the C SDK (qrun.h).
 *
 * It greets each message in the log and, when config "forward_to" names a
 * queue, publishes the body there with attribute greeted_by=__NAME__. An
 * empty body is dead-lettered: no retry can give it content. */
#include <stdlib.h>

#include "qrun.h"

/* Read once per instance: config does not change during its life. */
static char *forward_to;

static int init(void) {
	forward_to = qrun_config_get("forward_to"); /* NULL when not set */
	return 0;
}

static qrun_verdict handle(const qrun_msg *m) {
	if (m->len == 0) {
		qrun_log(QRUN_WARN, "empty body: nothing to greet");
		return QRUN_DEAD_LETTER;
	}
	qrun_logf(QRUN_INFO, "hello, %.*s", (int)m->len, (const char *)m->body);
	if (forward_to != NULL) {
		qrun_attr attrs[] = {{"greeted_by", "__NAME__"}};
		int32_t err = qrun_publish(forward_to, m->body, m->len, attrs, 1);
		if (err != 0) {
			qrun_logf(QRUN_WARN, "forward: error %d", (int)err);
			return QRUN_NACK; /* retried with backoff */
		}
	}
	return QRUN_ACK;
}

QRUN_HANDLER(handle)
QRUN_INIT(init)
