/* The JSON form of the control protocol (docs/control.md, "JSON requests"): request parser, reply framing, stats conversion. */
#ifndef KAPSEL_CONTROL_JSON_H
#define KAPSEL_CONTROL_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "control/control.h"
#include "core/json_writer.h"

/* The JSON protocol's version: "version" of every request and reply.
 * Bump it when a member changes meaning or goes away; added members and
 * added verbs do not bump it (clients ignore members they do not know). */
#define CONTROL_JSON_VERSION 1
/* An "id" is echoed back; its JSON text is at most this long. */
#define CONTROL_JSON_ID_MAX 64u

/*
 * Parse one JSON request line:
 *   {"version":1, "verb":"NAME", "args":{"KEY":VALUE, ...}, "id":ID}
 * "version" and "verb" are required, "args" and "id" optional; nothing else
 * is allowed.  verb and keys follow the text form's rules (docs/control.md);
 * a VALUE is a string (no control characters), a non-negative integer
 * (becomes its decimal text) or a boolean (becomes "yes"/"no"), so that
 * verb handlers see the same strings as from a text request.  ID is an
 * integer or a string.
 *
 * The request's strings are packed into storage (storage_len bytes; as
 * many as the line's length plus one always suffice) and stay valid as
 * long as it does.  id receives the id's JSON text, or "null" (at least
 * CONTROL_JSON_ID_MAX + 1 bytes), also when parsing fails after the id
 * was read, so that the error reply can carry it.
 *
 * Returns 0, or -EINVAL (malformed JSON, a missing or wrong member), or
 * -EPROTO (a version this Kapsel does not speak), with a message naming
 * the problem in error.  Pure function: unit-tested.
 */
int control_json_request_parse(const char *line, char *storage, size_t storage_len,
			       struct control_request *request, char *id, size_t id_len,
			       char *error, size_t error_len);

/*
 * Write one reply line ('\n'-terminated) to out:
 *   ok:    {"version":1,"id":ID,"ok":true,"verb":V,"result":PAYLOAD}
 *          when payload_is_json (PAYLOAD: the handler's JSON value), else
 *          {"version":1,"id":ID,"ok":true,"verb":V,"lines":["...",...]}
 *          (one string per payload line, without its '\n')
 *   error: {"version":1,"id":ID,"ok":false,"error":{"errno":"ENAME",
 *          "code":N,"message":"..."}}   (verb NULL: not known)
 * id is JSON text from control_json_request_parse (NULL or "": null).
 */
void control_json_reply_ok(FILE *out, const char *id, const char *verb, const char *payload,
			   size_t payload_len, bool payload_is_json);
void control_json_reply_error(FILE *out, const char *id, int errnum, const char *message);

/*
 * Convert the text of vm_print_stats (a "vm NAME: uptime_ns N" line,
 * "  key: value" lines, then "device I NAME:" blocks of "  key: value"
 * lines) into members of the object w is in: "name", "uptime_ns",
 * "counters" {key: value} and "devices" [{"index","name","counters"}].
 * A value that is a decimal integer becomes a JSON number, anything else
 * a string.  Lines of another shape are skipped.  Pure function.
 */
void control_json_stats_from_text(struct json_writer *w, const char *text);

#endif
