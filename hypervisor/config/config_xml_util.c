/* Small libxml2 helpers the domain XML parsers of devices share. */
#include "config/config_xml_util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_options.h"

int config_xml_fail(char *error, size_t error_len, const char *xml_path, const char *fmt, ...)
{
	char detail[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	snprintf(error, error_len, "domain XML '%s': %s", xml_path, detail);
	return -EINVAL;
}

char *config_xml_attr(const xmlNode *node, const char *name)
{
	xmlChar *raw = xmlGetProp(node, (const xmlChar *)name);
	if (!raw)
		return NULL;
	char *text = strdup((const char *)raw);
	xmlFree(raw);
	return text;
}

bool config_xml_named(const xmlNode *node, const char *name)
{
	return node->type == XML_ELEMENT_NODE && strcmp((const char *)node->name, name) == 0;
}

int config_xml_attr_u64(const xmlNode *node, const char *name, uint64_t *value, const char *where,
			const char *xml_path, char *error, size_t error_len)
{
	char *text = config_xml_attr(node, name);
	int err = 0;
	if (text && config_parse_u64(text, value) < 0)
		err = config_xml_fail(error, error_len, xml_path,
				      "%s %s='%s' must be a whole number", where, name, text);
	free(text);
	return err;
}
