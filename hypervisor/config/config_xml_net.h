/* libvirt <interface> elements to a VM's network interfaces and back (config_xml.c calls these). */
#ifndef KAPSEL_CONFIG_XML_NET_H
#define KAPSEL_CONFIG_XML_NET_H

#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stddef.h>

#include "config/config.h"

/*
 * Parse one /domain/devices/interface element into the next free
 * config->nets slot.  Supported: type='ethernet' with <target dev='TAP'/>
 * (the TAP backend), <model type='xen|netfront|virtio'/> (PV, the
 * default) or <model type='ne2k_isa|ne2000'/>, <mac address='...'/>.
 * Anything else is refused naming the element.  xml_path names the file
 * in messages.  Returns 0, or -EINVAL with a message in error.
 */
int config_xml_parse_interface(const xmlNode *node, struct vm_config *config, const char *xml_path,
			       char *error, size_t error_len);

/*
 * Write net as an <interface> element.  A socket backend has no libvirt
 * form: it is left out with a warning (returns 0).  Returns 0 or -EIO.
 */
int config_xml_write_interface(xmlTextWriterPtr w, const struct vm_net_config *net, unsigned index);

#endif
