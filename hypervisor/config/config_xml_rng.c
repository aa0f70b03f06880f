/* The libvirt <rng> element to the VM's PV entropy device and back (config_xml.c calls these). */
#define _GNU_SOURCE
#include "config/config_xml_rng.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_options.h"
#include "config/config_xml_util.h"
#include "core/log.h"

static int parse_backend(const xmlNode *n, const char *xml_path, char *error, size_t error_len)
{
	char *model = config_xml_attr(n, "model");
	xmlChar *content = xmlNodeGetContent(n);
	int err = 0;
	if (!model || strcmp(model, "random") != 0)
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng/backend model='%s' is not supported; use model='random' (Kapsel draws from the host kernel with getrandom)",
			model ? model : "");
	else if (content && content[0] && strcmp((const char *)content, "/dev/urandom") != 0 &&
		 strcmp((const char *)content, "/dev/random") != 0)
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng/backend '%s' is not supported; use /dev/urandom (Kapsel never opens it: the bytes come from getrandom)",
			(const char *)content);
	free(model);
	xmlFree(content);
	return err;
}

static int parse_rate(const xmlNode *n, struct vm_rng_config *rng, const char *xml_path,
		      char *error, size_t error_len)
{
	char *bytes_text = config_xml_attr(n, "bytes"), *period_text = config_xml_attr(n, "period");
	uint64_t bytes = 0, period_ms = 1000;
	int err = 0;
	if (config_parse_u64(bytes_text, &bytes) < 0 || bytes == 0 || bytes > UINT64_MAX / 1000)
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng/rate bytes='%s' must be a whole number of bytes above 0",
			bytes_text ? bytes_text : "");
	else if (period_text && (config_parse_u64(period_text, &period_ms) < 0 || period_ms == 0))
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng/rate period='%s' must be a whole number of milliseconds above 0",
			period_text);
	if (!err) {
		uint64_t per_second = bytes * 1000 / period_ms;
		rng->bytes_limit.rate_per_second = per_second ? per_second : 1;
		rng->bytes_limit.burst = bytes;
	}
	free(bytes_text);
	free(period_text);
	return err;
}

int config_xml_parse_rng(const xmlNode *node, struct vm_config *config, const char *xml_path,
			 char *error, size_t error_len)
{
	if (config->rng.enabled)
		return config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng: a second <rng>; Kapsel offers one entropy device");
	char *model = config_xml_attr(node, "model");
	int err = 0;
	if (!model || (strcmp(model, "virtio") != 0 && strcmp(model, "virtio-transitional") != 0 &&
		       strcmp(model, "virtio-non-transitional") != 0))
		err = config_xml_fail(
			error, error_len, xml_path,
			"/domain/devices/rng model='%s' is not supported; use model='virtio' (the PV entropy device)",
			model ? model : "");
	free(model);
	struct vm_rng_config rng = { .enabled = true };
	for (const xmlNode *n = node->children; n && !err; n = n->next) {
		if (n->type != XML_ELEMENT_NODE)
			continue;
		if (config_xml_named(n, "backend"))
			err = parse_backend(n, xml_path, error, error_len);
		else if (config_xml_named(n, "rate"))
			err = parse_rate(n, &rng, xml_path, error, error_len);
		else if (config_xml_named(n, "alias") || config_xml_named(n, "address"))
			kapsel_warn("domain XML '%s': ignoring /domain/devices/rng/%s (Kapsel places the entropy device after the network interfaces)",
				    xml_path, n->name);
		else
			err = config_xml_fail(error, error_len, xml_path,
					      "/domain/devices/rng/%s is not supported by Kapsel",
					      n->name);
	}
	if (err)
		return err;
	config->rng = rng;
	return 0;
}

#define W(call)                      \
	do {                         \
		if ((call) < 0)      \
			return -EIO; \
	} while (0)

int config_xml_write_rng(xmlTextWriterPtr w, const struct vm_rng_config *rng)
{
	if (!rng->enabled)
		return 0;
	W(xmlTextWriterStartElement(w, BAD_CAST "rng"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "model", BAD_CAST "virtio"));
	if (rng->bytes_limit.rate_per_second) {
		/* N bytes per period: the burst over the time it takes to earn. */
		uint64_t bytes = rng->bytes_limit.burst ? rng->bytes_limit.burst
							: rng->bytes_limit.rate_per_second;
		uint64_t period_ms = bytes * 1000 / rng->bytes_limit.rate_per_second;
		if (bytes > UINT64_MAX / 1000 || period_ms == 0 || period_ms > UINT32_MAX) {
			bytes = rng->bytes_limit.rate_per_second;
			period_ms = 1000;
		}
		W(xmlTextWriterStartElement(w, BAD_CAST "rate"));
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "bytes", "%llu",
						    (unsigned long long)bytes));
		W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "period", "%llu",
						    (unsigned long long)period_ms));
		W(xmlTextWriterEndElement(w));
	}
	W(xmlTextWriterStartElement(w, BAD_CAST "backend"));
	W(xmlTextWriterWriteAttribute(w, BAD_CAST "model", BAD_CAST "random"));
	W(xmlTextWriterWriteString(w, BAD_CAST "/dev/urandom"));
	W(xmlTextWriterEndElement(w));
	W(xmlTextWriterEndElement(w));
	return 0;
}

bool config_xml_kapsel_rng_needed(const struct vm_rng_config *rng)
{
	return rng->enabled && (rng->requests_limit.rate_per_second || rng->requests_limit.burst ||
				rng->bytes_limit.rate_per_second || rng->bytes_limit.burst);
}

int config_xml_write_kapsel_rng(xmlTextWriterPtr w, const struct vm_rng_config *rng)
{
	W(xmlTextWriterStartElementNS(w, BAD_CAST "kapsel", BAD_CAST "rng", NULL));
	W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "iops", "%llu",
					    (unsigned long long)
						    rng->requests_limit.rate_per_second));
	W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "iops_burst", "%llu",
					    (unsigned long long)rng->requests_limit.burst));
	W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "bps", "%llu",
					    (unsigned long long)rng->bytes_limit.rate_per_second));
	W(xmlTextWriterWriteFormatAttribute(w, BAD_CAST "bps_burst", "%llu",
					    (unsigned long long)rng->bytes_limit.burst));
	W(xmlTextWriterEndElement(w));
	return 0;
}

#define KAPSEL_RNG "/domain/metadata/kapsel:domain/rng"

int config_xml_parse_kapsel_rng(const xmlNode *node, struct vm_config *config, const char *xml_path,
				char *error, size_t error_len)
{
	if (!config->rng.enabled)
		return config_xml_fail(error, error_len, xml_path,
				       KAPSEL_RNG
				       " gives limits, but /domain/devices has no <rng>");
	struct vm_rng_config rng = { .enabled = true };
	int err = config_xml_attr_u64(node, "iops", &rng.requests_limit.rate_per_second, KAPSEL_RNG,
				      xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "iops_burst", &rng.requests_limit.burst, KAPSEL_RNG,
					  xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "bps", &rng.bytes_limit.rate_per_second, KAPSEL_RNG,
					  xml_path, error, error_len);
	if (!err)
		err = config_xml_attr_u64(node, "bps_burst", &rng.bytes_limit.burst, KAPSEL_RNG,
					  xml_path, error, error_len);
	if (!err)
		config->rng = rng;
	return err;
}
