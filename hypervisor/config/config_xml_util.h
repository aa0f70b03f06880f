/* Small libxml2 helpers the domain XML parsers of devices share (config_xml_net.c, config_xml_rng.c). */
#ifndef KAPSEL_CONFIG_XML_UTIL_H
#define KAPSEL_CONFIG_XML_UTIL_H

#include <libxml/tree.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Write "domain XML 'xml_path': <message>" into error; returns -EINVAL. */
int config_xml_fail(char *error, size_t error_len, const char *xml_path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Attribute name of node as a malloc'ed string (caller frees), or NULL when absent. */
char *config_xml_attr(const xmlNode *node, const char *name);

/*
 * Attribute name of node as a number (config_parse_u64) into *value; an
 * absent attribute leaves *value unchanged.  Returns 0, or -EINVAL with
 * "WHERE name='TEXT' must be a whole number" in error.
 */
int config_xml_attr_u64(const xmlNode *node, const char *name, uint64_t *value, const char *where,
			const char *xml_path, char *error, size_t error_len);

/* True when node is an element called name. */
bool config_xml_named(const xmlNode *node, const char *name);

#endif
