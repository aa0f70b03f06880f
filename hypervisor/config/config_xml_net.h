/* libvirt <interface> elements to a VM's network interfaces and back (config_xml.c calls these). */
#ifndef KAPSEL_CONFIG_XML_NET_H
#define KAPSEL_CONFIG_XML_NET_H

#include <libxml/tree.h>
#include <libxml/xmlwriter.h>
#include <stdbool.h>
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
 * form: it is written as <kapsel:interface> instead (nothing here; returns
 * 0).  Returns 0 or -EIO.
 */
int config_xml_write_interface(xmlTextWriterPtr w, const struct vm_net_config *net, unsigned index);

/* True when net needs a <kapsel:interface> (a socket backend, or limits). */
bool config_xml_kapsel_interface_needed(const struct vm_net_config *net);

/*
 * Write <kapsel:interface index='INDEX'>, inside <kapsel:domain>: for a
 * socket backend socket=, peer=, model=pv|ne2000 and mac= (the whole
 * interface); for any backend its limits pps=, pps_burst=, bps=,
 * bps_burst= (libvirt's <bandwidth> counts KiB, not frames).  Returns 0 or
 * -EIO.
 */
int config_xml_write_kapsel_interface(xmlTextWriterPtr w, const struct vm_net_config *net,
				      unsigned index);

/*
 * Parse one <kapsel:interface> (after /domain/devices).  With socket= it
 * is a whole interface inserted at position index among the VM's
 * interfaces (the <interface> elements fill the other positions, in
 * order): call these first (sockets true), in document order, with
 * indices rising.  Without socket= it gives the limits of the interface
 * at index (sockets false, after every insertion).  An element the pass
 * does not handle is skipped (returns 0).  Returns 0, or -EINVAL with a
 * message in error.
 */
int config_xml_parse_kapsel_interface(const xmlNode *node, bool sockets, struct vm_config *config,
				      const char *xml_path, char *error, size_t error_len);

#endif
