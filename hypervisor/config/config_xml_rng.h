/* The libvirt <rng> element to the VM's PV entropy device and back (config_xml.c calls these). */
#ifndef KAPSEL_CONFIG_XML_RNG_H
#define KAPSEL_CONFIG_XML_RNG_H

#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"

/*
 * Parse one /domain/devices/rng element into config->rng.  Supported:
 * model='virtio' (also virtio-transitional / virtio-non-transitional),
 * <backend model='random'>PATH</backend> where PATH, if given, must be
 * /dev/urandom or /dev/random and is never opened (the bytes always come
 * from getrandom(2)), and <rate bytes='N' [period='MS']/> (N bytes per
 * period, default 1000 ms: bps = N * 1000 / period, burst N).  Anything
 * else, and a second <rng>, is refused naming the element.  Returns 0,
 * or -EINVAL with a message in error.
 */
int config_xml_parse_rng(const xmlNode *node, struct vm_config *config, const char *xml_path,
			 char *error, size_t error_len);

/* Write config->rng as an <rng> element (nothing when it is disabled).
 * A requests-per-second limit has no libvirt form: <kapsel:rng> carries
 * it.  Returns 0 or -EIO. */
int config_xml_write_rng(xmlTextWriterPtr w, const struct vm_rng_config *rng);

/* True when rng needs a <kapsel:rng> (enabled, with a limit). */
bool config_xml_kapsel_rng_needed(const struct vm_rng_config *rng);

/* Write <kapsel:rng iops= iops_burst= bps= bps_burst=/>: the exact limits
 * (<rate> rounds a rate to bytes per period).  Returns 0 or -EIO. */
int config_xml_write_kapsel_rng(xmlTextWriterPtr w, const struct vm_rng_config *rng);

/* Parse <kapsel:rng> (after /domain/devices): the limits of the <rng>,
 * which must be there; they replace what <rate> said.  Returns 0, or
 * -EINVAL with a message in error. */
int config_xml_parse_kapsel_rng(const xmlNode *node, struct vm_config *config, const char *xml_path,
				char *error, size_t error_len);

#endif
