/* router: a qrun handler that publishes each message to one of several
 * queues chosen by an attribute (C SDK, plugins/sdk/c/qrun.h).
 *
 * The attribute is config "route_by" (default "region"); its value v picks
 * the queue in config "route.<v>", else config "default_route". A message
 * with no route is dead-lettered: retrying cannot give it one. The body and
 * every attribute are forwarded unchanged; a failed publish nacks, so the
 * message is retried rather than lost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qrun.h"

/* Read once per instance: config does not change during its life. */
static char *route_by;
static char *default_route; /* NULL: no default */

static int init(void) {
	route_by = qrun_config_get("route_by");
	if (route_by == NULL) route_by = strdup("region");
	default_route = qrun_config_get("default_route");
	return route_by == NULL; /* out of memory refuses the instance */
}

/* route returns the queue for value (malloc'd), or NULL if there is none. */
static char *route(const char *value) {
	char key[256];
	if (value != NULL && snprintf(key, sizeof key, "route.%s", value) < (int)sizeof key) {
		char *q = qrun_config_get(key);
		if (q != NULL) return q;
	}
	return default_route != NULL ? strdup(default_route) : NULL;
}

static qrun_verdict handle(const qrun_msg *m) {
	char *value = qrun_attr_get(route_by);
	char *queue = route(value);
	if (queue == NULL) {
		qrun_logf(QRUN_ERROR, "dead-letter: no route for %s=%s", route_by, value ? value : "(absent)");
		free(value);
		return QRUN_DEAD_LETTER;
	}

	/* Forward every attribute. */
	size_t n;
	qrun_attr *attrs = qrun_attrs_get_all(&n);
	if (attrs == NULL && n > 0) { /* out of memory: maybe not next time */
		free(queue);
		free(value);
		return QRUN_NACK;
	}

	int32_t err = qrun_publish(queue, m->body, m->len, attrs, n);
	qrun_verdict verdict = QRUN_ACK;
	if (err != 0) {
		qrun_logf(QRUN_WARN, "publish to %s failed (%d): will retry", queue, (int)err);
		verdict = QRUN_NACK;
	} else {
		qrun_logf(QRUN_DEBUG, "routed %s=%s to %s", route_by, value ? value : "(absent)", queue);
	}
	qrun_attrs_free(attrs, n);
	free(queue);
	free(value);
	return verdict;
}

QRUN_HANDLER(handle)
QRUN_INIT(init)
